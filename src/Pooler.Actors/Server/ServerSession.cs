using System.Collections.Frozen;
using System.Diagnostics;
using System.Net;
using System.Text;
using Akka.Actor;
using Akka.Event;
using Akka.IO;
using Pooler.Actors.Auth;
using Pooler.Actors.Config;
using Pooler.Actors.Pooling;
using Pooler.Actors.Protocol;
using Pooler.Actors.Protocol.Prepared;

namespace Pooler.Actors.Server;

/// <summary>
/// One connection to PostgreSQL. Behaviours: Connecting, LoggingIn, Idle, Internal (the pooler's
/// own queries: check, SET, reset), Linked (relaying the server's bytes to a client socket).
/// </summary>
public sealed class ServerSession : ReceiveActor, IWithTimers, Ops.IConnView
{
    public sealed record Spec(DatabaseSettings Db, ServerCredentials Creds, string PoolName);
    /// <summary>From the pool: serve this client (idleSince drives server-check-delay).</summary>
    public sealed record Assign(Waiter Waiter, DateTime IdleSince);
    /// <summary>From a queued client that left after this server had taken it.</summary>
    public sealed record ClientLeft(IActorRef Client);
    /// <summary>From a client that took this server from the idle list and already writes to it.</summary>
    public sealed record Attach(Link Link);
    public sealed record Close(string Reason);
    /// <summary>From the client: it left while linked.</summary>
    public sealed record ClientGone(Link Link);
    /// <summary>From the client: cancel what runs on this link (a CancelRequest matched its key).</summary>
    public sealed record CancelQuery(Link Link, IActorRef ReplyTo);
    /// <summary>From a draining client: give the server back now if it is between transactions.</summary>
    public sealed record ReleaseIfIdle(Link Link);
    /// <summary>To a waiting client that asked for it (<see cref="Waiter.NotifyWhenLinked"/>): linked, its held bytes are written.</summary>
    public sealed record Linked(Link Link);
    /// <summary>To the client: the server went back to the pool; ask again for the next transaction.</summary>
    public sealed record Unlinked(Link Link);
    /// <summary>To a client holding the link mid-COPY-message: PostgreSQL ended the COPY and is idle; finish the message and let go.</summary>
    public sealed record IdleUnderHold(Link Link);
    /// <summary>To the client: the link broke; send this error and close.</summary>
    public sealed record Lost(Link Link, string SqlState, string Message);
    private sealed record WatchTick;
    private sealed record LoginTimeout;

    public static Props Props(PoolerRuntime rt, IActorRef pool, Spec spec, PoolExchange exchange)
        => Akka.Actor.Props.Create(() => new ServerSession(rt, pool, spec, exchange));


    private readonly PoolerRuntime _rt;
    private readonly IActorRef _pool;
    private readonly Spec _spec;
    private readonly PoolExchange _exchange;
    private ServerHandle? _handle;
    private bool _paramsChanged;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly Dictionary<string, string> _params = new(StringComparer.OrdinalIgnoreCase);
    private readonly List<KeyValuePair<string, string>> _paramList = new();
    private readonly FrameScanner _scan;
    private MessageBuffer _buf;
    private IActorRef _conn = ActorRefs.Nobody;
    private EndPoint _endpoint = null!;
    private int _backendPid, _backendSecret;
    private RelayFlow _flow = null!;
    private ScramClient? _scram;

    private Link? _link;
    private PoolMode _mode;
    private byte _txStatus = (byte)'I';
    private DateTime? _busySince, _idleTxSince;
    private Assign? _pendingAssign;
    private bool _inReady;
    private bool _assignAbandoned;
    private IPEndPoint? _local;
    private readonly DateTime _connectedAt = DateTime.UtcNow;
    private readonly string _id; // Self.Path.Name, for rows read outside the actor (Self needs its context)
    private long _xactStart; // Stopwatch timestamp of the open transaction's first unit (0: none open)
    private bool _used; // linked to a client at least once (server-lifetime = 0 closes it at its first release)
    private Tls.ServerTls? _serverTls; // server-tls settings when this connection opened (null: disable)
    private bool _plainFirst; // sslmode allow: this attempt is plaintext; a refused login retries with TLS
    private Tls.TlsInfo? _tls;
    private IActorRef? _abandoned; // allow: the refused plaintext connection, whose close must not end the TLS retry
    private readonly ServerStatements _statements; // named statements prepared here for renaming clients
    private byte[]? _carry; // renaming: a header cut by the end of the last chunk, relayed with the next

    public ITimerScheduler Timers { get; set; } = null!;

    public ServerSession(PoolerRuntime rt, IActorRef pool, Spec spec, PoolExchange exchange)
    {
        _rt = rt;
        _exchange = exchange;
        _pool = pool;
        _spec = spec;
        var max = rt.Settings.MaxPacketSize;
        _buf = new MessageBuffer(max);
        _scan = new FrameScanner([MsgType.ReadyForQuery, MsgType.ParameterStatus], max, 64 * 1024)
            // answers a renaming client's plan matches (bodiless, so capturing them costs nothing), and errors for their SQLSTATE
            .Capture(MsgType.ParseComplete, 0).Capture(MsgType.BindComplete, 0).Capture(MsgType.CloseComplete, 0)
            .Capture(MsgType.ErrorResponse, 64 * 1024);
        _statements = new ServerStatements(Math.Max(1, rt.Settings.MaxPreparedStatements));
        _id = Self.Path.Name;
        Connecting();
    }

    private PoolerSettings S => _rt.Settings;
    private string Who => $"server {Self.Path.Name} pool {_spec.PoolName} node {_rt.NodeName}";

    protected override void PreStart()
    {
        Interlocked.Increment(ref _rt.ServerCount);
        _rt.Connections.AddServer(Self, this);
        _endpoint = IPAddress.TryParse(_spec.Db.Host, out var ip)
            ? new IPEndPoint(ip, _spec.Db.Port)
            : new DnsEndPoint(_spec.Db.Host, _spec.Db.Port);
        _serverTls = _rt.Tls.Server;
        _plainFirst = _serverTls?.Settings.Mode == Tls.SslMode.Allow;
        Context.System.Tcp().Tell(new Tcp.Connect(_endpoint, pullMode: false, timeout: S.ServerConnectTimeout > TimeSpan.Zero ? S.ServerConnectTimeout : null));
        if (S.ServerConnectTimeout > TimeSpan.Zero) Timers.StartSingleTimer("login", new LoginTimeout(), S.ServerConnectTimeout);
    }

    protected override void PostStop()
    {
        Interlocked.Decrement(ref _rt.ServerCount);
        _rt.Connections.RemoveServer(Self);
        if (_link is { } l && !l.IsReleased)
        {
            l.ForceRelease();
            l.Client.Tell(new Lost(l, SqlState.ConnectionFailure, "server connection closed"));
        }
        _conn.Tell(Tcp.Abort.Instance);
    }

    // ---------------- Connecting / LoggingIn ----------------

    private void Connecting()
    {
        Receive<Tcp.Connected>(c =>
        {
            _local = c.LocalAddress as IPEndPoint;
            if (_serverTls != null && !_plainFirst)
            {
                // TLS lives in one adapter in front of the socket actor: SSLRequest goes through it in plaintext,
                // and once PostgreSQL says 'S' it runs the handshake; from then on it speaks plaintext to us
                _conn = Context.ActorOf(Tls.TlsConnection.ForServer(Sender, _serverTls, _spec.Db.Host), "tls");
                _flow = new RelayFlow(_conn, Self);
                _conn.Tell(new Tcp.Register(Self));
                Send(PgMessages.SslRequest);
                RequestRead();
                Become(NegotiatingTls);
                return;
            }
            _conn = Sender;
            _flow = new RelayFlow(_conn, Self);
            _conn.Tell(new Tcp.Register(Self));
            SendStartup();
        });
        Receive<Tcp.CommandFailed>(f => FailLogin(SqlState.ClientUnableToEstablishConnection,
            $"could not connect to server {_spec.Db.Host}:{_spec.Db.Port}: {(f.Cause.HasValue ? f.Cause.Value.Message : "connection refused")}"));
        Receive<LoginTimeout>(_ => FailLogin(SqlState.ClientUnableToEstablishConnection,
            $"could not connect to server {_spec.Db.Host}:{_spec.Db.Port}: server-connect-timeout ({S.ServerConnectTimeout.TotalSeconds}s) expired"));
        Receive<Close>(c => Context.Stop(Self));
    }

    private void SendStartup()
    {
        var ps = new List<KeyValuePair<string, string>>
        {
            new("user", _spec.Creds.User),
            new("database", _spec.Db.DbName),
        };
        _conn.Tell(Tcp.Write.Create(ByteString.FromBytes(PgMessages.Startup(ps))));
        RequestRead();
        Become(LoggingIn);
    }

    private string TlsMode => Tls.TlsSettings.NameOf(_serverTls!.Settings.Mode);

    /// <summary>SSLRequest sent: one byte answers it ('S' or 'N'), then the adapter's handshake.</summary>
    private void NegotiatingTls()
    {
        var answered = false;
        Receive<Tcp.Received>(r =>
        {
            if (answered || r.Data.Count != 1)
            {
                // anything after the answer byte would be taken as if it came over TLS (CVE-2021-23222)
                FailLogin(SqlState.ProtocolViolation, answered ? "server sent data during the TLS handshake" : $"server {_spec.Db.Host}:{_spec.Db.Port} sent unencrypted data after its SSL response");
                return;
            }
            answered = true;
            switch (r.Data[0])
            {
                case (byte)'S':
                    _conn.Tell(new Tls.TlsConnection.Connect());
                    break;
                case (byte)'N' when _serverTls!.Settings.Mode is Tls.SslMode.Prefer or Tls.SslMode.Allow:
                    _log.Info("{0}: server {1}:{2} does not offer TLS; going on in plaintext (server-tls-sslmode = {3})", Who, _spec.Db.Host, _spec.Db.Port, TlsMode);
                    SendStartup();
                    break;
                case (byte)'N':
                    FailLogin(SqlState.ConnectionFailure, $"server {_spec.Db.Host}:{_spec.Db.Port} does not support TLS, and server-tls-sslmode = {TlsMode} requires it");
                    break;
                default:
                    FailLogin(SqlState.ProtocolViolation, $"server {_spec.Db.Host}:{_spec.Db.Port} answered the SSL request with '{(char)r.Data[0]}'");
                    break;
            }
        });
        Receive<Tls.TlsConnection.Established>(e =>
        {
            _tls = e.Info;
            _log.Debug("{0}: TLS {1} with {2}:{3}", Who, e.Info.Describe, _spec.Db.Host, _spec.Db.Port);
            SendStartup();
        });
        Receive<Tls.TlsConnection.Failed>(f => FailLogin(SqlState.ConnectionFailure,
            $"TLS handshake with server {_spec.Db.Host}:{_spec.Db.Port} failed (server-tls-sslmode = {TlsMode}): {f.Reason}"));
        Receive<LoginTimeout>(_ => FailLogin(SqlState.ClientUnableToEstablishConnection,
            $"TLS with server {_spec.Db.Host}:{_spec.Db.Port} not set up within server-connect-timeout ({S.ServerConnectTimeout.TotalSeconds}s)"));
        Receive<Tcp.ConnectionClosed>(_ => FailLogin(SqlState.ConnectionFailure, $"server {_spec.Db.Host}:{_spec.Db.Port} closed the connection during TLS negotiation"));
        Receive<Close>(c => Context.Stop(Self));
    }

    private void LoggingIn()
    {
        Receive<Tcp.Received>(r =>
        {
            _buf.Append(r.Data.ToReadOnlySpan());
            while (true)
            {
                var res = _buf.TryReadTyped(out var type, out var body);
                if (res == ReadResult.NeedMore) break;
                if (res == ReadResult.Invalid) { FailLogin(SqlState.ProtocolViolation, "invalid message from server during login"); return; }
                if (!OnLoginMessage(type, body.Span)) return;
            }
            RequestRead();
        });
        Receive<LoginTimeout>(_ => FailLogin(SqlState.ClientUnableToEstablishConnection,
            $"server login to {_spec.Db.Host}:{_spec.Db.Port} timed out after server-connect-timeout ({S.ServerConnectTimeout.TotalSeconds}s)"));
        Receive<Tcp.ConnectionClosed>(_ => FailLogin(SqlState.ConnectionFailure, "server closed the connection during login"));
        Receive<Close>(c => Context.Stop(Self));
    }

    /// <summary>Returns false when the actor is done (failed or moved on).</summary>
    private bool OnLoginMessage(byte type, ReadOnlySpan<byte> body)
    {
        switch (type)
        {
            case MsgType.Authentication:
                return OnAuthRequest(body);
            case MsgType.ParameterStatus:
                if (Payload.TryParameterStatus(body, out var n, out var v)) SetParam(n, v);
                return true;
            case MsgType.BackendKeyData:
                _backendPid = Payload.Int32(body);
                _backendSecret = Payload.Int32(body[4..]);
                return true;
            case MsgType.ErrorResponse:
                var f = Payload.ErrorFields(body);
                if (_plainFirst)
                {
                    // sslmode allow, as libpq: the plaintext login was refused, try again over TLS
                    _log.Info("{0}: plaintext login refused ({1}); retrying with TLS (server-tls-sslmode = allow)", Who, f.GetValueOrDefault('M', ""));
                    _plainFirst = false;
                    _abandoned = _conn;
                    _conn.Tell(Tcp.Abort.Instance);
                    _conn = ActorRefs.Nobody;
                    _buf = new MessageBuffer(S.MaxPacketSize);
                    Context.System.Tcp().Tell(new Tcp.Connect(_endpoint, pullMode: false, timeout: S.ServerConnectTimeout > TimeSpan.Zero ? S.ServerConnectTimeout : null));
                    Become(Connecting);
                    return false;
                }
                FailLogin(f.GetValueOrDefault('C', SqlState.ConnectionFailure), $"server login failed: {f.GetValueOrDefault('M', "")}");
                return false;
            case MsgType.ReadyForQuery:
                Timers.Cancel("login");
                _log.Info("{0}: logged in to {1}:{2} as {3}", Who, _spec.Db.Host, _spec.Db.Port, _spec.Creds.User);
                _handle = new ServerHandle(Self, _conn, DateTime.UtcNow, _exchange.Generation, _statements);
                _pool.Tell(new Pool.ServerReady(_handle, _paramList.ToArray()));
                GoIdle();
                return false;
            default:
                return true; // NoticeResponse and the like
        }
    }

    private bool OnAuthRequest(ReadOnlySpan<byte> body)
    {
        var code = Payload.Int32(body);
        var creds = _spec.Creds;
        switch (code)
        {
            case 0: return true;
            case 3:
                if (creds.Password == null || UsesNonPlainSecret(creds.Password)) return NoPassword("cleartext");
                Send(PgMessages.Password(creds.Password));
                return true;
            case 5:
                if (creds.Password == null || ScramServer.IsScramSecret(creds.Password)) return NoPassword("md5");
                Send(PgMessages.Password(Md5Auth.Response(creds.Password, creds.User, body.Slice(4, 4))));
                return true;
            case 10:
                var mechs = Encoding.UTF8.GetString(body[4..]);
                if (!mechs.Split('\0').Contains("SCRAM-SHA-256")) return NoPassword("SASL mechanism other than SCRAM-SHA-256");
                if (creds.ScramClientKey != null && creds.ScramServerKey != null && (creds.Password == null || ScramServer.IsScramSecret(creds.Password)))
                    _scram = ScramClient.FromKeys(creds.ScramClientKey, creds.ScramServerKey);
                else if (creds.Password != null && !UsesNonPlainSecret(creds.Password))
                    _scram = new ScramClient(creds.Password);
                else return NoPassword("SCRAM-SHA-256");
                Send(PgMessages.SaslInitialResponse("SCRAM-SHA-256", _scram.ClientFirstMessage()));
                return true;
            case 11:
                try { Send(PgMessages.SaslResponse(_scram!.ClientFinalMessage(Encoding.UTF8.GetString(body[4..])))); }
                catch (InvalidOperationException e) { FailLogin(SqlState.ProtocolViolation, "SCRAM with server failed: " + e.Message); return false; }
                return true;
            case 12:
                if (_scram == null || !_scram.VerifyServerFinal(Encoding.UTF8.GetString(body[4..])))
                {
                    FailLogin(SqlState.InvalidPassword, "server's SCRAM signature did not verify");
                    return false;
                }
                return true;
            default:
                FailLogin(SqlState.FeatureNotSupported, $"server asked for unsupported authentication method {code}");
                return false;
        }
    }

    private static bool UsesNonPlainSecret(string secret) => ScramServer.IsScramSecret(secret) || IsMd5Secret(secret);
    private static bool IsMd5Secret(string s) => s.Length == 35 && s.StartsWith("md5", StringComparison.Ordinal);

    private bool NoPassword(string method)
    {
        FailLogin(SqlState.InvalidPassword,
            $"server asked for {method} authentication for user \"{_spec.Creds.User}\" and the pooler has no usable password (set password in the database entry or a plain/matching secret in the users file)");
        return false;
    }

    private void FailLogin(string sqlState, string message)
    {
        _log.Warning("{0}: {1}", Who, message);
        _pool.Tell(new Pool.ServerConnectFailed(Self, sqlState, message));
        Context.Stop(Self);
    }

    private void SetParam(string name, string value)
    {
        _paramsChanged = true;
        _trackedKey = null;
        _params[name] = value;
        var i = _paramList.FindIndex(p => p.Key == name);
        if (i >= 0) _paramList[i] = new(name, value); else _paramList.Add(new(name, value));
    }

    private void RefreshSnapshot()
    {
        if (!_paramsChanged || _handle == null) return;
        _paramsChanged = false;
        _handle.Params = _params.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
        _handle.TrackedKey = TrackedKey;
    }

    private string? _trackedKey;
    private string TrackedKey => _trackedKey ??= ClientParams.KeyOf(n => _params.GetValueOrDefault(n));

    private void Send(byte[] bytes) => _conn.Tell(Tcp.Write.Create(ByteString.FromBytes(bytes)));

    private void RequestRead() => _flow.Resume();

    // ---------------- Idle ----------------

    private void BecomeIdle()
    {
        _link = null;
        EnterReady();
        RequestRead(); // keep reading so a closed or terminated server is noticed at once
    }

    /// <summary>
    /// The server is unusable while parked. If a client took it from the idle list in the meantime,
    /// its Attach or Assign is on the way: answer it before stopping so the client is not left waiting.
    /// </summary>
    private void DieWhileIdle(string reason)
    {
        _log.Info("{0}: {1}; closing it", Who, reason);
        if (_handle == null || _handle.TryMarkDead()) { Context.Stop(Self); return; }
        _inReady = false;
        Become(() =>
        {
            Receive<Attach>(a =>
            {
                a.Link.ForceRelease();
                a.Link.Client.Tell(new Lost(a.Link, SqlState.ConnectionFailure, "server connection closed unexpectedly (the backend may have restarted)"));
                Context.Stop(Self);
            });
            Receive<Assign>(a =>
            {
                _pool.Tell(new Pool.Requeue(a.Waiter));
                Context.Stop(Self);
            });
            Receive<Close>(_ => Context.Stop(Self));
            Receive<LoginTimeout>(_ => Context.Stop(Self));
            ReceiveAny(_ => { });
        });
        Timers.StartSingleTimer("dying", new LoginTimeout(), TimeSpan.FromSeconds(5));
    }

    private void Terminate(string reason)
    {
        _log.Info("{0}: closing ({1})", Who, reason);
        _conn.Tell(Tcp.Write.Create(ByteString.FromBytes(PgMessages.Terminate)));
        _conn.Tell(Tcp.Close.Instance);
        Context.Stop(Self);
    }

    private void OnAssign(Assign a)
    {
        _pendingAssign = a;
        _assignAbandoned = false;
        var check = S.ServerCheckQuery;
        if (!string.IsNullOrWhiteSpace(check) && DateTime.UtcNow - a.IdleSince >= S.ServerCheckDelay && a.IdleSince != default)
            RunInternal(check, error =>
            {
                if (error != null)
                {
                    _log.Warning("{0}: server-check-query failed ({1}); closing it", Who, error);
                    if (!_assignAbandoned) _pool.Tell(new Pool.Requeue(a.Waiter));
                    Context.Stop(Self);
                    return;
                }
                SyncParamsThenLink(a);
            });
        else SyncParamsThenLink(a);
    }

    /// <summary>Re-applies the client's session settings that differ on this server, then links.</summary>
    private void SyncParamsThenLink(Assign a)
    {
        if (_assignAbandoned) { _pendingAssign = null; GoIdle(); return; }
        if (a.Waiter.Params.Key == TrackedKey) { LinkTo(a); return; }
        StringBuilder? sql = null;
        foreach (var (name, value) in a.Waiter.Params.Values)
        {
            if (_params.TryGetValue(name, out var cur) && cur == value) continue;
            (sql ??= new StringBuilder()).Append("SET ").Append(name).Append(" TO '").Append(value.Replace("'", "''")).Append("';");
        }
        if (sql == null) { LinkTo(a); return; }
        RunInternal(sql.ToString(), error =>
        {
            if (_assignAbandoned) { _pendingAssign = null; GoIdle(); return; }
            if (error != null)
            {
                var w = a.Waiter;
                w.Client.Tell(new Lost(new Link(0, w.Client, w.ClientConn, Self, _conn, w.Params), SqlState.ProtocolViolation,
                    "could not apply session settings on the server: " + error));
                _pendingAssign = null;
                GoIdle();
                return;
            }
            LinkTo(a);
        });
    }

    private void LinkTo(Assign a)
    {
        _pendingAssign = null;
        var w = a.Waiter;
        var link = new Link(Link.NextId(), w.Client, w.ClientConn, Self, _conn, w.Params, w.Relay, _statements) { UnitStart = Stopwatch.GetTimestamp() };
        _exchange.Counters.Waited(DateTime.UtcNow - w.Since);
        StartRelay(link);
        // the client's waiting query goes out from here; the client hears of the link only if it asked
        if (w.LinkAndFlush(link, _conn, Self)) w.Client.Tell(new Linked(link));
    }

    private void StartRelay(Link link)
    {
        _mode = S.ModeFor(_spec.Db);
        _link = link;
        _used = true;
        _flow.NewTarget();
        _busySince = _idleTxSince = null;
        _xactStart = 0;
        _scan.Reset();
        _carry = null;
        EnterReady();
        if (S.QueryTimeout > TimeSpan.Zero || S.IdleTransactionTimeout > TimeSpan.Zero)
            Timers.StartPeriodicTimer("watch", new WatchTick(), TimeSpan.FromMilliseconds(100));
        RequestRead();
    }

    // ---------------- Internal queries ----------------

    private void RunInternal(string sql, Action<string?> then)
    {
        string? error = null;
        Send(PgMessages.Query(sql));
        _inReady = false;
        Become(() =>
        {
            Receive<Tcp.Received>(r =>
            {
                    _buf.Append(r.Data.ToReadOnlySpan());
                while (true)
                {
                    var res = _buf.TryReadTyped(out var type, out var body);
                    if (res == ReadResult.NeedMore) break;
                    if (res == ReadResult.Invalid) { Context.Stop(Self); return; }
                    if (type == MsgType.ErrorResponse) error ??= Payload.ErrorSummary(body.Span);
                    else if (type == MsgType.ParameterStatus && Payload.TryParameterStatus(body.Span, out var n, out var v)) SetParam(n, v);
                    else if (type == MsgType.ReadyForQuery)
                    {
                        _txStatus = body.Span[0];
                        if (error == null && _txStatus != (byte)'I') error = "server left in a transaction";
                        then(error);
                        return;
                    }
                }
                RequestRead();
            });
            Receive<Tcp.ConnectionClosed>(_ =>
            {
                if (_pendingAssign is { } pa && !_assignAbandoned) _pool.Tell(new Pool.Requeue(pa.Waiter));
                Context.Stop(Self);
            });
            Receive<Close>(c => Terminate(c.Reason));
            Receive<ClientGone>(_ => { });
            Receive<ClientLeft>(l => { if (_pendingAssign?.Waiter.Client.Equals(l.Client) == true) _assignAbandoned = true; });
            Receive<CancelQuery>(c => c.ReplyTo.Tell(new CancelSender.Done()));
            Receive<ReleaseIfIdle>(_ => { });
            Receive<Tcp.Event>(_ => { });
        });
        RequestRead();
    }

    // ---------------- Linked ----------------

    /// <summary>
    /// Idle and linked in one behaviour: a transaction moves a server between the two, and
    /// ReceiveActor rebuilds its handlers on every Become, so the hot path branches on the link instead.
    /// Tcp.Received is handled in <see cref="AroundReceive"/>, before ReceiveActor's matching.
    /// </summary>
    private void Ready()
    {
        Receive<Attach>(a =>
        {
            if (_link == null) { StartRelay(a.Link); return; }
            // cannot happen (a linked server is never parked); refuse rather than mix two clients
            a.Link.ForceRelease();
            a.Link.Client.Tell(new Lost(a.Link, SqlState.ProtocolViolation, "internal error: server already linked"));
        });
        Receive<Assign>(a =>
        {
            if (_link == null) OnAssign(a);
            else _pool.Tell(new Pool.Requeue(a.Waiter));
        });
        Receive<ClientGone>(g => { if (_link != null && ReferenceEquals(g.Link, _link)) OnClientGone(); });
        Receive<ClientLeft>(l => { if (_link != null && _link.Client.Equals(l.Client)) OnClientGone(); });
        Receive<CancelQuery>(c =>
        {
            if (_link == null || !ReferenceEquals(c.Link, _link) || _link.Pending <= 0)
            {
                c.ReplyTo.Tell(new CancelSender.Done()); // nothing runs: like PostgreSQL, cancel nothing
                return;
            }
            _log.Info("{0}: cancelling the running query for client {1}", Who, _link.Client.Path.Name);
            Context.ActorOf(CancelSender.Props(_endpoint, _backendPid, _backendSecret, c.ReplyTo));
        });
        Receive<WatchTick>(_ => OnWatch());
        Receive<ReleaseIfIdle>(r =>
        {
            if (_link == null || !ReferenceEquals(r.Link, _link) || _txStatus != (byte)'I') return;
            if (_mode == PoolMode.Session && !r.Link.ReleaseWhenIdle) return; // a session keeps its server
            if (!r.Link.TryRelease()) return;
            r.Link.Client.Tell(new Unlinked(r.Link));
            AfterRelease(runReset: _mode == PoolMode.Session || S.ServerResetQueryAlways);
        });
        Receive<Tcp.ConnectionClosed>(_ =>
        {
            if (_link is not { } l) { DieWhileIdle("idle server closed the connection"); return; }
            _log.Warning("{0}: server closed the connection while linked to client {1}", Who, l.Client.Path.Name);
            l.ForceRelease();
            l.Client.Tell(new Lost(l, SqlState.ConnectionFailure, "server connection closed unexpectedly (the backend may have restarted); the open transaction, if any, was rolled back"));
            _link = null;
            Context.Stop(Self);
        });
        Receive<Close>(c =>
        {
            _link?.ForceRelease();
            if (_link == null) _handle?.TryMarkDead(); // still parked (it went idle after the pool's look): nobody may take it now
            Terminate(c.Reason);
        });
        Receive<Tcp.Event>(e =>
        {
            // acks of an earlier link are ignored
            if (_link != null && ReferenceEquals(e, _link.ClientAck))
            {
                _flow.Acked();
            }
        });
    }

    private void OnIdleData(ByteString data)
    {
        _buf.Append(data.ToReadOnlySpan());
        while (_buf.TryReadTyped(out var type, out var body) == ReadResult.Ok)
        {
            if (type == MsgType.ErrorResponse)
            {
                DieWhileIdle($"idle server sent {Payload.ErrorSummary(body.Span)}");
                return;
            }
            if (type == MsgType.ParameterStatus && Payload.TryParameterStatus(body.Span, out var n, out var v)) SetParam(n, v);
        }
    }

    /// <summary>The relay's hot message skips ReceiveActor's handler matching (same code as Ready's handler).</summary>
    protected override bool AroundReceive(Receive receive, object message)
    {
        if (_inReady && message is Tcp.Received r)
        {
            OnReadyData(r.Data);
            return true;
        }
        if (_abandoned is not null && message is Tcp.Event && Sender.Equals(_abandoned)) return true;
        return base.AroundReceive(receive, message);
    }

    private void OnReadyData(ByteString data)
    {
        if (_link != null) OnServerData(data);
        else OnIdleData(data);
    }

    /// <summary>Switches to <see cref="Ready"/> unless already there (Become is not free).</summary>
    private void EnterReady()
    {
        if (_inReady) return;
        _inReady = true;
        Become(Ready);
    }

    private void OnServerData(ByteString data)
    {
        var link = _link!;
        _exchange.Counters.AddSent(data.Count);
        bool framed, sawReady;
        if (link.Statements is { } st)
        {
            // the answers to what the pooler added are taken out, a stand-in's answer retyped
            lock (st.Gate) data = FilterAnswers(link, st, data, out framed, out sawReady);
        }
        else
        {
            List<Edit>? none = null;
            framed = ReadAnswers(link, data.ToReadOnlySpan(), null, ref none, out sawReady);
        }
        if (!framed)
        {
            Fail(link, SqlState.ProtocolViolation, "invalid message length from server");
            return;
        }

        if (sawReady)
        {
            // timeout clocks restart here; the watch tick starts them (see OnWatch)
            if (link.Pending == 0) _busySince = null;
            _idleTxSince = null;
            if (_mode == PoolMode.Statement && _txStatus != (byte)'I')
            {
                Fail(link, SqlState.FeatureNotSupported, "transaction blocks not allowed in statement pooling mode");
                return;
            }
            var releasable = _txStatus == (byte)'I' && (_mode != PoolMode.Session || link.ReleaseWhenIdle);
            if (releasable && link.ClientHolds && link.Pending == 1)
                link.Client.Tell(new IdleUnderHold(link)); // after a failed COPY the client's half message is all that keeps the link
            else if (releasable && link.TryRelease())
            {
                WriteToClient(link, data);
                // a draining client closes once told: only after these bytes are queued to its socket
                if (link.ReleaseWhenIdle) link.Client.Tell(new Unlinked(link));
                AfterRelease(runReset: S.ServerResetQueryAlways);
                return;
            }
        }

        WriteToClient(link, data);
    }

    /// <summary>An answer a renaming client must not see as sent: at <c>At</c> in the chunk, <c>Length</c> bytes.</summary>
    private readonly record struct Edit(int At, int Length, ResponseAction Action, byte[]? Replacement);

    /// <summary>
    /// Frames a chunk of the server's stream and reads the answers the relay captures: ReadyForQuery and ParameterStatus,
    /// and with renaming (<paramref name="st"/>) those its plan matches, noting the edits. False when it cannot be framed.
    /// </summary>
    private bool ReadAnswers(Link link, ReadOnlySpan<byte> span, ServerStatements? st, ref List<Edit>? edits, out bool sawReady)
    {
        sawReady = false;
        var pos = 0;
        while (true)
        {
            var ev = _scan.Next(span, ref pos);
            if (ev == ScanEvent.End) return true;
            if (ev == ScanEvent.Invalid) return false;
            if (ev != ScanEvent.Body) continue;
            var type = _scan.Type;
            var body = _scan.Body;
            if (st != null && type is MsgType.ParseComplete or MsgType.BindComplete or MsgType.CloseComplete or MsgType.ErrorResponse or MsgType.ReadyForQuery)
            {
                var action = st.Plan.OnServerMessage(type, body, st.Effects);
                if (action != ResponseAction.Pass)
                    (edits ??= []).Add(new Edit(_scan.StartInChunk, _scan.Length + 1, action, action == ResponseAction.Replace ? st.Plan.Replacement : null));
            }
            if (type == MsgType.ReadyForQuery)
            {
                link.UnitDone();
                _txStatus = body[0];
                CountUnit(link);
                sawReady = true;
            }
            else if (type == MsgType.ParameterStatus && Payload.TryParameterStatus(body, out var n, out var v))
            {
                SetParam(n, v);
                link.Params.Set(n, v);
            }
        }
    }

    /// <summary>
    /// A renaming client's link: reads the chunk as the plain relay does, and drops, retypes or replaces the answers the
    /// client must not see as sent (see <see cref="ResponsePlan"/>). Returns the bytes for the client.
    /// </summary>
    private ByteString FilterAnswers(Link link, ServerStatements st, ByteString data, out bool framed, out bool sawReady)
    {
        if (_carry != null)
        {
            var joined = new byte[_carry.Length + data.Count];
            _carry.CopyTo(joined, 0);
            data.CopyTo(joined, _carry.Length, data.Count);
            _carry = null;
            data = ByteString.FromBytes(joined);
        }
        var span = data.ToReadOnlySpan();
        List<Edit>? edits = null;
        framed = ReadAnswers(link, span, st, ref edits, out sawReady);
        if (!framed) return ByteString.Empty;
        if (st.Effects.Any) st.Apply(st.Effects, link.Relay?.Statements);
        // a message cut by the chunk's end waits for the rest, so what is edited is always whole and in this chunk:
        // a header, or a captured answer (bodiless ones, errors up to 64 KiB)
        var end = span.Length;
        if (_scan.Capturing)
        {
            end = _scan.StartInChunk;
            _scan.Reset();
        }
        else if (_scan.PartialHeaderLength > 0)
        {
            end -= _scan.PartialHeaderLength;
            _scan.DropPartialHeader();
        }
        if (end < span.Length) _carry = span[end..].ToArray();
        if (edits == null) return end == span.Length ? data : data.Slice(0, end);
        var w = new PgWriter(end);
        var from = 0;
        foreach (var e in edits)
        {
            w.Bytes(span[from..e.At]);
            if (e.Action == ResponseAction.AsParseComplete) w.Byte(MsgType.ParseComplete).Bytes(span.Slice(e.At + 1, 4));
            else if (e.Replacement != null) w.Bytes(e.Replacement);
            from = e.At + e.Length;
        }
        w.Bytes(span[from..end]);
        return w.Length == 0 ? ByteString.Empty : ByteString.FromBytes(w.ToArray());
    }

    /// <summary>SHOW STATS: one query answered; a transaction ended when the status is back to idle.</summary>
    private void CountUnit(Link link)
    {
        var now = Stopwatch.GetTimestamp();
        var counters = _exchange.Counters;
        counters.Query(now - link.UnitStart);
        if (_xactStart == 0) _xactStart = link.UnitStart;
        if (_txStatus == (byte)'I')
        {
            counters.Transaction(now - _xactStart);
            _xactStart = 0;
        }
        link.UnitStart = now; // a pipelined next unit was sent no later than this
    }

    private void WriteToClient(Link link, ByteString data)
    {
        if (data.Count > 0) _flow.Write(link.ClientConn, data, link.ClientAck);
    }

    private void AfterRelease(bool runReset)
    {
        Timers.Cancel("watch");
        _link = null;
        if (_statements.Unknown)
        {
            // a client's DISCARD ALL or DEALLOCATE ALL failed after the cache was emptied: start the server over clean
            RunInternal("DEALLOCATE ALL", error =>
            {
                if (error != null) { _log.Warning("{0}: DEALLOCATE ALL failed ({1}); closing it", Who, error); Context.Stop(Self); return; }
                lock (_statements.Gate) _statements.Clear();
                ResetThenIdle(runReset);
            });
            return;
        }
        ResetThenIdle(runReset);
    }

    private void ResetThenIdle(bool runReset)
    {
        var reset = S.ServerResetQuery;
        if (runReset && !string.IsNullOrWhiteSpace(reset))
        {
            RunInternal(reset, error =>
            {
                if (error != null) { _log.Warning("{0}: server-reset-query failed ({1}); closing it", Who, error); Context.Stop(Self); return; }
                if (ResetDropsStatements(reset)) lock (_statements.Gate) _statements.Clear();
                GoIdle();
            });
            return;
        }
        GoIdle();
    }

    /// <summary>server-reset-query (DISCARD ALL by default) dropped the statements prepared here.</summary>
    private static bool ResetDropsStatements(string reset)
    {
        var words = reset.Split([' ', '\t', '\n', '\r', ';'], StringSplitOptions.RemoveEmptyEntries);
        for (var i = 0; i + 1 < words.Length; i++)
            if (words[i + 1].Equals("ALL", StringComparison.OrdinalIgnoreCase)
                && (words[i].Equals("DISCARD", StringComparison.OrdinalIgnoreCase) || words[i].Equals("DEALLOCATE", StringComparison.OrdinalIgnoreCase)))
                return true;
        return false;
    }

    /// <summary>Parks on the idle list unless clients wait or the server is due to close: then the pool decides.</summary>
    private void GoIdle()
    {
        BecomeIdle();
        var h = _handle!;
        RefreshSnapshot();
        h.IdleSince = DateTime.UtcNow;
        var lifeOver = S.ServerLifetime > TimeSpan.Zero ? h.IdleSince - h.OpenedAt > S.ServerLifetime : _used; // 0 = use each server once
        if (h.Generation != _exchange.Generation || lifeOver || _exchange.Paused)
        {
            Terminate(_exchange.Paused ? "pool paused" : "server lifetime over or configuration changed");
            return;
        }
        if (_exchange.TakeWaiterOrPark(h) is { } w) OnAssign(new Assign(w, h.IdleSince));
    }

    private void OnClientGone()
    {
        var link = _link!;
        if (_txStatus == (byte)'I' && link.TryRelease())
        {
            // session mode (and reset-always) clean the server for the next client
            AfterRelease(runReset: _mode == PoolMode.Session || S.ServerResetQueryAlways);
            return;
        }
        if (link.Pending > 0) CancelRunningQuery();
        link.ForceRelease();
        _link = null;
        Terminate($"client {link.Client.Path.Name} left with the server busy or in a transaction");
    }

    /// <summary>
    /// Every 100 ms while linked (only when query-timeout or idle-transaction-timeout is set): starts the
    /// clocks the relay clears at each ReadyForQuery, and enforces the timeouts. Off the hot path.
    /// </summary>
    private void OnWatch()
    {
        var link = _link;
        if (link == null) return;
        var now = DateTime.UtcNow;
        if (link.Pending > 0) _busySince ??= now;
        else if (_txStatus != (byte)'I') _idleTxSince ??= now;
        if (S.QueryTimeout > TimeSpan.Zero && link.Pending > 0 && now - _busySince > S.QueryTimeout)
            Fail(link, SqlState.QueryCanceled, "query_timeout");
        else if (S.IdleTransactionTimeout > TimeSpan.Zero && link.Pending == 0 && now - _idleTxSince > S.IdleTransactionTimeout)
            Fail(link, SqlState.IdleInTransactionTimeout, "idle transaction timeout");
    }

    /// <summary>
    /// Closing the socket does not stop a running query (PostgreSQL notices only when it next reads or writes):
    /// send a CancelRequest from an actor that outlives this one.
    /// </summary>
    private void CancelRunningQuery()
    {
        if (_backendPid == 0) return;
#pragma warning disable AK1008 // deliberately not a child: this server stops right after, the cancel must still go out
        Context.System.ActorOf(CancelSender.Props(_endpoint, _backendPid, _backendSecret));
#pragma warning restore AK1008
    }

    /// <summary>The link cannot go on: the client gets the error and is closed, the server is closed.</summary>
    private void Fail(Link link, string sqlState, string message)
    {
        _log.Info("{0}: {1} for client {2}", Who, message, link.Client.Path.Name);
        if (link.Pending > 0) CancelRunningQuery();
        link.ForceRelease();
        link.Client.Tell(new Lost(link, sqlState, message));
        _link = null;
        Terminate(message);
    }

    /// <summary>SHOW SERVERS row; read from the OpsAgent's thread (display only).</summary>
    Ops.ConnRow Ops.IConnView.Row()
    {
        var handle = _handle;
        var link = _link;
        var state = handle == null ? "login"
            : link != null ? "active"
            : !_inReady ? "tested"
            : DateTime.UtcNow - handle.IdleSince >= S.ServerCheckDelay && !string.IsNullOrWhiteSpace(S.ServerCheckQuery) ? "used"
            : "idle";
        var busyAt = link != null ? DateTime.UtcNow : handle?.IdleSince ?? _connectedAt;
        return new Ops.ConnRow("S", _spec.Creds.User, _spec.Db.Name, state, _spec.Db.Host, _spec.Db.Port,
            _local is { } l ? (l.Address.IsIPv4MappedToIPv6 ? l.Address.MapToIPv4() : l.Address).ToString() : "", _local?.Port ?? 0, _connectedAt, busyAt, 0, _id,
            link?.Client.Path.Name ?? "", _backendPid, link?.Params.Get("application_name") ?? "", _rt.NodeName);
    }
}
