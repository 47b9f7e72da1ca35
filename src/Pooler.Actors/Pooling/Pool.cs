using Akka.Actor;
using Akka.Event;
using Pooler.Actors.Config;
using Pooler.Actors.Protocol;
using Pooler.Actors.Server;

namespace Pooler.Actors.Pooling;

/// <summary>How the pooler logs in to the backend for one pool.</summary>
public sealed record ServerCredentials(string User, string? Password, byte[]? ScramClientKey, byte[]? ScramServerKey);

/// <summary>
/// One pool per (database, user): hands idle servers to clients, queues clients FIFO when none is
/// free, opens servers within pool-size (+ reserve after reserve-pool-timeout) and the node's
/// per-database/per-user budget, and closes servers that idled or lived too long. It is consulted
/// only at transaction boundaries; the bytes of a query never pass through it.
/// </summary>
public sealed class Pool : ReceiveActor, IWithTimers
{
    // ---- messages ----
    /// <summary>A logged-in client asks for the pool's server parameters (the first server is opened if needed).</summary>
    public sealed record Login(IActorRef Client);
    public sealed record Welcome(IReadOnlyList<KeyValuePair<string, string>> ServerParams, IdleServers Idle);
    /// <summary>A client needs a server for its next transaction.</summary>
    public sealed record Acquire(IActorRef Client, IActorRef ClientConn, ClientParams Params);
    /// <summary>A waiting client left.</summary>
    public sealed record CancelWait(IActorRef Client);
    /// <summary>To a client: no server could be had; it should send this error and close.</summary>
    public sealed record Failure(string SqlState, string Message);
    public sealed record ServerReady(ServerHandle Handle, IReadOnlyList<KeyValuePair<string, string>> Params);
    public sealed record ServerIdle(IActorRef Server);
    public sealed record ServerConnectFailed(IActorRef Server, string SqlState, string Message);
    /// <summary>A server could not take an assignment (its check query failed): give the client another.</summary>
    public sealed record Requeue(Acquire Request);
    public sealed record UpdateSettings(DatabaseSettings Database, ServerCredentials Credentials);
    public sealed record Reconnect;
    public sealed record GetStats;
    public sealed record Stats(int Idle, int Active, int Connecting, int Waiting, int Total);
    private sealed record Tick;

    public static Props Props(PoolerRuntime runtime, DatabaseSettings db, ServerCredentials creds, IdleServers idle)
        => Akka.Actor.Props.Create(() => new Pool(runtime, db, creds, idle));

    private readonly PoolerRuntime _rt;
    private DatabaseSettings _db;
    private ServerCredentials _creds;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly string _name;

    private sealed class ServerInfo
    {
        public ServerHandle? Handle;
        public bool Ready => Handle != null;
    }

    private readonly Dictionary<IActorRef, ServerInfo> _servers = new();
    private readonly IdleServers _idle;
    private readonly LinkedList<(Acquire Req, DateTime Since)> _waiting = new();
    private readonly List<IActorRef> _loginWaiters = new();
    private IReadOnlyList<KeyValuePair<string, string>>? _template;
    private int _connecting;
    private long _serverSeq;
    private DateTime _retryAfter = DateTime.MinValue;
    private (string SqlState, string Message)? _lastFailure;

    public ITimerScheduler Timers { get; set; } = null!;

    public Pool(PoolerRuntime runtime, DatabaseSettings db, ServerCredentials creds, IdleServers idle)
    {
        _rt = runtime;
        _idle = idle;
        _db = db;
        _creds = creds;
        _name = $"{db.Name}/{creds.User}";

        Receive<Acquire>(OnAcquire);
        Receive<Login>(OnLogin);
        Receive<CancelWait>(c => RemoveWaiter(c.Client));
        Receive<ServerReady>(OnServerReady);
        Receive<ServerIdle>(OnServerIdle);
        Receive<ServerConnectFailed>(OnConnectFailed);
        Receive<Requeue>(r =>
        {
            var h = _idle.TakeOrWait();
            if (h != null) { h.Server.Tell(new ServerSession.Assign(r.Request.Client, r.Request.ClientConn, r.Request.Params, h.IdleSince)); return; }
            _waiting.AddFirst((r.Request, DateTime.UtcNow));
            Fill();
        });
        Receive<Terminated>(t => OnServerGone(t.ActorRef));
        Receive<Tick>(_ => OnTick());
        Receive<UpdateSettings>(OnUpdate);
        Receive<Reconnect>(_ => Retire());
        Receive<GetStats>(_ => Sender.Tell(CurrentStats()));
    }

    protected override void PreStart()
    {
        Timers.StartPeriodicTimer("tick", new Tick(), TimeSpan.FromMilliseconds(200));
        Fill();
    }

    private PoolerSettings S => _rt.Settings;
    private Stats CurrentStats()
    {
        var idle = _idle.Count;
        return new(idle, _servers.Count - idle - _connecting, _connecting, _waiting.Count, _servers.Count);
    }

    private void OnLogin(Login m)
    {
        if (_template != null) { m.Client.Tell(new Welcome(_template, _idle)); return; }
        if (_lastFailure is { } f && _servers.Count == 0 && DateTime.UtcNow < _retryAfter)
        {
            m.Client.Tell(new Failure(f.SqlState, f.Message));
            return;
        }
        _loginWaiters.Add(m.Client);
        Context.Watch(m.Client);
        if (_servers.Count == 0) OpenServer(force: true);
    }

    private void OnAcquire(Acquire req)
    {
        if (_servers.Count == 0 && _lastFailure is { } f && DateTime.UtcNow < _retryAfter)
        {
            req.Client.Tell(new Failure(f.SqlState, f.Message));
            return;
        }
        var h = _idle.TakeOrWait();
        if (h != null)
        {
            h.Server.Tell(new ServerSession.Assign(req.Client, req.ClientConn, req.Params, h.IdleSince));
            return;
        }
        _waiting.AddLast((req, DateTime.UtcNow));
        Context.Watch(req.Client);
        Fill();
    }

    private void RemoveWaiter(IActorRef client)
    {
        for (var n = _waiting.First; n != null; n = n.Next)
            if (n.Value.Req.Client.Equals(client)) { _waiting.Remove(n); _idle.WaiterLeft(); return; }
    }

    /// <summary>Opens servers while clients wait for them and the limits allow.</summary>
    private void Fill()
    {
        var min = S.MinPoolSizeFor(_db);
        while (_waiting.Count > _connecting || _servers.Count < min)
            if (!OpenServer(force: false)) break;
    }

    private bool OpenServer(bool force)
    {
        if (DateTime.UtcNow < _retryAfter && !force) return false;
        var size = S.PoolSizeFor(_db);
        var reserveOk = _waiting.First is { } first
            && DateTime.UtcNow - first.Value.Since >= S.ReservePoolTimeout
            && S.ReservePoolSizeFor(_db) > 0;
        var limit = size + (reserveOk ? S.ReservePoolSizeFor(_db) : 0);
        if (_servers.Count >= limit) return false;
        if (!_rt.Budget.TryTake(_db.Name, _creds.User, S.MaxDbConnectionsFor(_db), S.MaxUserConnections)) return false;

        var name = $"server-{++_serverSeq}";
        var spec = new ServerSession.Spec(_db, _creds, _name);
        var server = Context.ActorOf(ServerSession.Props(_rt, Self, spec, _idle), name);
        Context.Watch(server);
        _servers[server] = new ServerInfo();
        _connecting++;
        if (reserveOk && _servers.Count > size)
            _log.Info("pool {0} node {1}: using reserve pool ({2} servers)", _name, _rt.NodeName, _servers.Count);
        return true;
    }

    private void OnServerReady(ServerReady m)
    {
        if (!_servers.TryGetValue(m.Handle.Server, out var info)) return;
        _connecting--;
        info.Handle = m.Handle;
        _lastFailure = null;
        if (_template == null)
        {
            _template = m.Params;
            foreach (var c in _loginWaiters) { c.Tell(new Welcome(_template, _idle)); UnwatchIfDone(c); }
            _loginWaiters.Clear();
        }
        GiveOrPark(m.Handle);
    }

    /// <summary>A released server found clients waiting (or is due to close): the pool decides.</summary>
    private void OnServerIdle(ServerIdle m)
    {
        if (!_servers.TryGetValue(m.Server, out var info) || info.Handle == null) return;
        if (IsRetired(info.Handle))
        {
            m.Server.Tell(new ServerSession.Close("server lifetime over or configuration changed"));
            return;
        }
        GiveOrPark(info.Handle);
    }

    /// <summary>A server past its lifetime or from before a reconnect/reload is closed instead of reused.</summary>
    private bool IsRetired(ServerHandle h)
        => h.Generation != _idle.Generation || (S.ServerLifetime > TimeSpan.Zero && DateTime.UtcNow - h.OpenedAt > S.ServerLifetime);

    private void GiveOrPark(ServerHandle h)
    {
        if (_waiting.First is { } n)
        {
            _waiting.RemoveFirst();
            _idle.WaiterLeft();
            UnwatchIfDone(n.Value.Req.Client);
            h.Server.Tell(new ServerSession.Assign(n.Value.Req.Client, n.Value.Req.ClientConn, n.Value.Req.Params, DateTime.UtcNow));
            return;
        }
        h.IdleSince = DateTime.UtcNow;
        _idle.Park(h);
    }

    private void OnConnectFailed(ServerConnectFailed m)
    {
        _lastFailure = (m.SqlState, m.Message);
        _retryAfter = DateTime.UtcNow + S.ServerLoginRetry;
        _log.Warning("pool {0} node {1}: server login failed: {2}; next try in {3}", _name, _rt.NodeName, m.Message, S.ServerLoginRetry);
        // The server actor stops itself; clients are failed only when the pool has nothing else to give.
        if (!_servers.Values.Any(s => s.Ready)) FailWaiters(m.SqlState, m.Message);
    }

    private void FailWaiters(string sqlState, string message)
    {
        foreach (var c in _loginWaiters) { c.Tell(new Failure(sqlState, message)); Context.Unwatch(c); }
        _loginWaiters.Clear();
        foreach (var (req, _) in _waiting) { req.Client.Tell(new Failure(sqlState, message)); Context.Unwatch(req.Client); _idle.WaiterLeft(); }
        _waiting.Clear();
    }

    private void OnServerGone(IActorRef actor)
    {
        if (_servers.Remove(actor, out var info))
        {
            if (!info.Ready) _connecting--;
            _rt.Budget.Return(_db.Name, _creds.User);
            Fill();
            return;
        }
        // a watched client died while waiting
        _loginWaiters.Remove(actor);
        RemoveWaiter(actor);
    }

    private void UnwatchIfDone(IActorRef client)
    {
        if (!_loginWaiters.Contains(client) && !_waiting.Any(w => w.Req.Client.Equals(client))) Context.Unwatch(client);
    }

    private void OnTick()
    {
        var now = DateTime.UtcNow;
        // query-wait-timeout: clients that waited too long for a server are told so and closed
        if (S.QueryWaitTimeout > TimeSpan.Zero)
        {
            while (_waiting.First is { } n && now - n.Value.Since > S.QueryWaitTimeout)
            {
                _waiting.RemoveFirst();
                _idle.WaiterLeft();
                UnwatchIfDone(n.Value.Req.Client);
                n.Value.Req.Client.Tell(new Failure(SqlState.ProtocolViolation, "query_wait_timeout"));
            }
        }
        // idle servers: server-idle-timeout and server-lifetime, keeping min-pool-size open
        var min = S.MinPoolSizeFor(_db);
        var extra = _servers.Count - min;
        if (extra > 0)
        {
            var expired = _idle.TakeWhere(h =>
                (S.ServerIdleTimeout > TimeSpan.Zero && now - h.IdleSince > S.ServerIdleTimeout) || IsRetired(h), keep: 0);
            foreach (var h in expired)
            {
                if (extra-- > 0 || IsRetired(h)) h.Server.Tell(new ServerSession.Close(IsRetired(h) ? "server lifetime or reconnect" : "server idle timeout"));
                else _idle.Park(h);
            }
        }
        Fill();
    }

    private void OnUpdate(UpdateSettings m)
    {
        var changed = m.Database.Host != _db.Host || m.Database.Port != _db.Port || m.Database.DbName != _db.DbName
                      || m.Credentials.Password != _creds.Password;
        _db = m.Database;
        _creds = m.Credentials with { ScramClientKey = m.Credentials.ScramClientKey ?? _creds.ScramClientKey, ScramServerKey = m.Credentials.ScramServerKey ?? _creds.ScramServerKey };
        if (changed) Retire();
        Fill();
    }

    /// <summary>Closes idle servers now and busy ones when they are released (RECONNECT, reload).</summary>
    private void Retire()
    {
        _idle.NewGeneration();
        foreach (var h in _idle.TakeWhere(_ => true, keep: 0)) h.Server.Tell(new ServerSession.Close("reconnect"));
    }

    protected override void PostStop()
    {
        FailWaiters(SqlState.AdminShutdown, "pooler is shutting down");
    }
}
