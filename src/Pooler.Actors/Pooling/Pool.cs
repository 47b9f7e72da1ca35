using Akka.Actor;
using Akka.Event;
using Pooler.Actors.Config;
using Pooler.Actors.Protocol;
using Pooler.Actors.Server;

namespace Pooler.Actors.Pooling;

/// <summary>How the pooler logs in to the backend for one pool.</summary>
public sealed record ServerCredentials(string User, string? Password, byte[]? ScramClientKey, byte[]? ScramServerKey);

/// <summary>
/// One pool per (database, user). Clients and servers meet in the pool's <see cref="PoolExchange"/>
/// without messages; this actor opens servers for queued clients within pool-size (+ reserve after
/// reserve-pool-timeout) and the node's per-database/per-user budget, retries logins after
/// server-login-retry, fails queued clients when the backend is unreachable or they waited
/// query-wait-timeout, and closes servers that idled or lived too long.
/// </summary>
public sealed class Pool : ReceiveActor, IWithTimers
{
    // ---- messages ----
    /// <summary>A logged-in client asks for the pool's server parameters (the first server is opened if needed).</summary>
    public sealed record Login(IActorRef Client);
    public sealed record Welcome(IReadOnlyList<KeyValuePair<string, string>> ServerParams, PoolExchange Exchange);
    /// <summary>A client queued itself in the exchange: open a server if the limits allow.</summary>
    public sealed record Wakeup;
    /// <summary>To a client: no server could be had; it should send this error and close.</summary>
    public sealed record Failure(string SqlState, string Message);
    public sealed record ServerReady(ServerHandle Handle, IReadOnlyList<KeyValuePair<string, string>> Params);
    public sealed record ServerConnectFailed(IActorRef Server, string SqlState, string Message);
    /// <summary>A server could not serve a waiter it took (its check query failed, it died): queue it again.</summary>
    public sealed record Requeue(Waiter Waiter);
    public sealed record UpdateSettings(DatabaseSettings Database, ServerCredentials Credentials);
    public sealed record Reconnect;
    /// <summary>PAUSE (or KILL when <paramref name="Kill"/>: servers closed at once): the sender gets Done once no server is left.</summary>
    public sealed record Pause(bool Kill);
    public sealed record Resume;
    /// <summary>WAIT_CLOSE: the sender gets Done once no server from before the last RECONNECT/reload is left.</summary>
    public sealed record WaitClose;
    public sealed record Done(string Pool);
    public sealed record GetInfo;
    public sealed record GetStats;
    public sealed record Stats(int Idle, int Active, int Connecting, int Waiting, int Total);
    private sealed record Tick;

    public static Props Props(PoolerRuntime runtime, DatabaseSettings db, ServerCredentials creds, PoolExchange exchange)
        => Akka.Actor.Props.Create(() => new Pool(runtime, db, creds, exchange));

    private readonly PoolerRuntime _rt;
    private readonly PoolExchange _exchange;
    private DatabaseSettings _db;
    private ServerCredentials _creds;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly string _name;

    private readonly Dictionary<IActorRef, ServerHandle?> _servers = new(); // null while logging in
    private readonly List<IActorRef> _loginWaiters = new();
    private IReadOnlyList<KeyValuePair<string, string>>? _template;
    private int _connecting;
    private long _serverSeq;
    private DateTime _retryAfter = DateTime.MinValue;
    private (string SqlState, string Message)? _lastFailure;
    private readonly List<IActorRef> _pauseReplies = new();
    private readonly List<IActorRef> _waitCloseReplies = new();

    public ITimerScheduler Timers { get; set; } = null!;

    public Pool(PoolerRuntime runtime, DatabaseSettings db, ServerCredentials creds, PoolExchange exchange)
    {
        _rt = runtime;
        _exchange = exchange;
        _db = db;
        _creds = creds;
        _name = $"{db.Name}/{creds.User}";
        exchange.Counters.WaitHistogram = Ops.PoolerMetrics.WaitSeconds.WithLabels(db.Name, creds.User);

        Receive<Login>(OnLogin);
        Receive<Wakeup>(_ => OnWakeup());
        Receive<ServerReady>(OnServerReady);
        Receive<ServerConnectFailed>(OnConnectFailed);
        Receive<Requeue>(r =>
        {
            if (_exchange.RequeueFront(r.Waiter) is { } h)
            {
                r.Waiter.TakenBy = h.Server;
                h.Server.Tell(new ServerSession.Assign(r.Waiter, h.IdleSince));
            }
            else Fill();
        });
        Receive<Terminated>(t => OnTerminated(t.ActorRef));
        Receive<Tick>(_ => OnTick());
        Receive<UpdateSettings>(OnUpdate);
        Receive<Reconnect>(_ => Retire());
        Receive<GetStats>(_ => Sender.Tell(CurrentStats()));
        Receive<GetInfo>(_ => Sender.Tell(Info()));
        Receive<Pause>(OnPause);
        Receive<Resume>(_ => OnResume());
        Receive<WaitClose>(_ =>
        {
            _waitCloseReplies.Add(Sender);
            CheckDone();
        });
    }

    private Ops.PoolInfo Info()
    {
        var oldest = _exchange.OldestWaiterSince();
        return new Ops.PoolInfo(_db.Name, _creds.User, S.ModeFor(_db).ToString().ToLowerInvariant(), S.PoolSizeFor(_db), S.MinPoolSizeFor(_db),
            S.ReservePoolSizeFor(_db), S.MaxDbConnectionsFor(_db), _db.Host, _db.Port, _db.DbName, _exchange.Paused,
            oldest is { } o ? (long)Math.Max(0, (DateTime.UtcNow - o).TotalMicroseconds) : 0, _exchange.Counters.Snapshot());
    }

    /// <summary>
    /// PAUSE as PgBouncer: new transactions queue, open ones run to their end, then every server is closed
    /// (so the database can restart); done once none is left. KILL closes them at once.
    /// </summary>
    private void OnPause(Pause m)
    {
        if (!_exchange.Paused) _log.Info("pool {0} node {1}: {2}", _name, _rt.NodeName, m.Kill ? "killed" : "paused");
        _exchange.Paused = true;
        _pauseReplies.Add(Sender);
        // idle servers leave the exchange first: a parked handle of a closed server would be handed to the next client
        CloseIdle(m.Kill ? "KILL" : "PAUSE");
        if (m.Kill)
            foreach (var (server, handle) in _servers)
                if (handle == null || !handle.IsParked) server.Tell(new ServerSession.Close("KILL"));
        CheckDone();
    }

    private void OnResume()
    {
        if (!_exchange.Paused) return;
        _exchange.Paused = false;
        _log.Info("pool {0} node {1}: resumed", _name, _rt.NodeName);
        foreach (var (w, h) in _exchange.MatchWaiters()) h.Server.Tell(new ServerSession.Assign(w, h.IdleSince));
        Fill();
    }

    private void CloseIdle(string reason)
    {
        foreach (var h in _exchange.TakeIdleWhere(_ => true)) h.Server.Tell(new ServerSession.Close(reason));
    }

    /// <summary>Answers PAUSE once no server is left, WAIT_CLOSE once none from an older generation is.</summary>
    private void CheckDone()
    {
        if (_pauseReplies.Count > 0 && _servers.Count == 0)
        {
            foreach (var r in _pauseReplies) r.Tell(new Done(_name));
            _pauseReplies.Clear();
        }
        if (_waitCloseReplies.Count > 0 && _servers.Values.All(h => h == null || h.Generation == _exchange.Generation))
        {
            foreach (var r in _waitCloseReplies) r.Tell(new Done(_name));
            _waitCloseReplies.Clear();
        }
    }

    protected override void PreStart()
    {
        Timers.StartPeriodicTimer("tick", new Tick(), TimeSpan.FromMilliseconds(200));
        Fill();
    }

    private PoolerSettings S => _rt.Settings;

    private Stats CurrentStats()
    {
        var idle = _exchange.IdleCount;
        return new(idle, _servers.Count - idle - _connecting, _connecting, _exchange.WaitingCount, _servers.Count);
    }

    private bool InBackoff => _lastFailure != null && _servers.Count == 0 && DateTime.UtcNow < _retryAfter;

    private void OnLogin(Login m)
    {
        if (_template != null) { m.Client.Tell(new Welcome(_template, _exchange)); return; }
        if (InBackoff) { m.Client.Tell(new Failure(_lastFailure!.Value.SqlState, _lastFailure.Value.Message)); return; }
        _loginWaiters.Add(m.Client);
        Context.Watch(m.Client);
        // a paused pool opens nothing (the database may be restarting): RESUME's Fill opens the first server
        if (_servers.Count == 0 && !_exchange.Paused) OpenServer(force: true);
    }

    private void OnWakeup()
    {
        // a dead backend fails new work at once until server-login-retry has passed
        if (InBackoff) { FailWaiters(_lastFailure!.Value.SqlState, _lastFailure.Value.Message); return; }
        Fill();
    }

    /// <summary>Opens servers while clients wait for them (and up to min-pool-size) within the limits.</summary>
    private void Fill()
    {
        if (_exchange.Paused) { NoteSize(); return; }
        var min = S.MinPoolSizeFor(_db);
        // a pool whose first login waits (its server could not be opened within max-db/user-connections) tries again
        while (_exchange.WaitingCount > _connecting || _servers.Count < min || (_loginWaiters.Count > 0 && _servers.Count == 0))
            if (!OpenServer(force: false)) break;
        NoteSize();
    }

    /// <summary>
    /// A full pool is not told of each queued client (a message per transaction under load); the
    /// reserve pool and waiters of a pool that shrank are still served by the tick.
    /// </summary>
    private void NoteSize() => _exchange.SetFull(_servers.Count >= S.PoolSizeFor(_db));

    private bool OpenServer(bool force)
    {
        if (DateTime.UtcNow < _retryAfter && !force) return false;
        var size = S.PoolSizeFor(_db);
        var reserve = S.ReservePoolSizeFor(_db);
        var reserveOk = reserve > 0 && _exchange.OldestWaiterSince() is { } oldest && DateTime.UtcNow - oldest >= S.ReservePoolTimeout;
        if (_servers.Count >= size + (reserveOk ? reserve : 0)) return false;
        if (!_rt.Budget.TryTake(_db.Name, _creds.User, S.MaxDbConnectionsFor(_db), S.MaxUserConnections)) return false;

        var spec = new ServerSession.Spec(_db, _creds, _name);
        var server = Context.ActorOf(ServerSession.Props(_rt, Self, spec, _exchange), $"server-{++_serverSeq}");
        Context.Watch(server);
        _servers[server] = null;
        _connecting++;
        NoteSize();
        if (_servers.Count > size)
            _log.Info("pool {0} node {1}: using the reserve pool ({2} servers)", _name, _rt.NodeName, _servers.Count);
        return true;
    }

    private void OnServerReady(ServerReady m)
    {
        if (!_servers.ContainsKey(m.Handle.Server)) return;
        _connecting--;
        _servers[m.Handle.Server] = m.Handle;
        _lastFailure = null;
        if (_template != null) return;
        _template = m.Params;
        foreach (var c in _loginWaiters) { c.Tell(new Welcome(_template, _exchange)); Context.Unwatch(c); }
        _loginWaiters.Clear();
    }

    private void OnConnectFailed(ServerConnectFailed m)
    {
        _lastFailure = (m.SqlState, m.Message);
        _retryAfter = DateTime.UtcNow + S.ServerLoginRetry;
        _log.Warning("pool {0} node {1}: no server connection: {2}; next try in {3}", _name, _rt.NodeName, m.Message, S.ServerLoginRetry);
        // queued clients are failed only when the pool has no working server to give them
        if (!_servers.Values.Any(h => h != null)) FailWaiters(m.SqlState, m.Message);
    }

    private void FailWaiters(string sqlState, string message)
    {
        foreach (var c in _loginWaiters) { c.Tell(new Failure(sqlState, message)); Context.Unwatch(c); }
        _loginWaiters.Clear();
        foreach (var w in _exchange.TakeAllWaiters()) w.Client.Tell(new Failure(sqlState, message));
    }

    private void OnTerminated(IActorRef actor)
    {
        if (_servers.Remove(actor, out var handle))
        {
            if (handle == null) _connecting--;
            _rt.Budget.Return(_db.Name, _creds.User);
            Fill();
            CheckDone();
            return;
        }
        _loginWaiters.Remove(actor); // a client died while waiting for the first server
    }

    /// <summary>A server past its lifetime or from before a reconnect/reload is closed instead of reused.</summary>
    private bool IsRetired(ServerHandle h, DateTime now)
        => h.Generation != _exchange.Generation || (S.ServerLifetime > TimeSpan.Zero && now - h.OpenedAt > S.ServerLifetime);

    private void OnTick()
    {
        var now = DateTime.UtcNow;
        if (_exchange.Paused) CloseIdle("PAUSE"); // servers released since the PAUSE
        // the cluster lowered this node's quota for the database (another node's clients wait): an idle server goes
        if (_rt.Budget.OverQuota(_db.Name))
        {
            var first = true;
            foreach (var h in _exchange.TakeIdleWhere(_ => { var take = first; first = false; return take; }))
                h.Server.Tell(new ServerSession.Close("the cluster moved this server's quota to another node"));
        }
        if (S.QueryWaitTimeout > TimeSpan.Zero)
            foreach (var w in _exchange.TakeWaitersSince(now - S.QueryWaitTimeout))
                w.Client.Tell(new Failure(SqlState.ProtocolViolation, "query_wait_timeout"));

        // idle servers: server-idle-timeout and server-lifetime, keeping min-pool-size open
        var min = S.MinPoolSizeFor(_db);
        var expired = _exchange.TakeIdleWhere(h => IsRetired(h, now) || (S.ServerIdleTimeout > TimeSpan.Zero && now - h.IdleSince > S.ServerIdleTimeout));
        var open = _servers.Count;
        foreach (var h in expired)
        {
            if (IsRetired(h, now) || open > min)
            {
                h.Server.Tell(new ServerSession.Close(IsRetired(h, now) ? "server lifetime over or reconnect" : "server idle timeout"));
                open--;
            }
            else _exchange.Park(h);
        }
        Fill();
    }

    private void OnUpdate(UpdateSettings m)
    {
        var changed = m.Database.Host != _db.Host || m.Database.Port != _db.Port || m.Database.DbName != _db.DbName
                      || m.Credentials.Password != _creds.Password;
        _db = m.Database;
        _creds = m.Credentials with
        {
            ScramClientKey = m.Credentials.ScramClientKey ?? _creds.ScramClientKey,
            ScramServerKey = m.Credentials.ScramServerKey ?? _creds.ScramServerKey,
        };
        if (changed) Retire();
        Fill();
    }

    /// <summary>Closes idle servers now and busy ones when they are released (RECONNECT, reload).</summary>
    private void Retire()
    {
        _exchange.NewGeneration();
        foreach (var h in _exchange.TakeIdleWhere(_ => true)) h.Server.Tell(new ServerSession.Close("reconnect"));
    }

    protected override void PostStop() => FailWaiters(SqlState.AdminShutdown, "pooler is shutting down");
}
