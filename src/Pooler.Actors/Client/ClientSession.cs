using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Akka.Actor;
using Akka.Event;
using Akka.IO;
using Pooler.Actors.Auth;
using Pooler.Actors.Config;
using Pooler.Actors.Pooling;
using Pooler.Actors.Protocol;
using Pooler.Actors.Protocol.Prepared;
using Pooler.Actors.Server;

namespace Pooler.Actors.Client;

/// <summary>
/// One client connection. Behaviours: Startup (startup packet, SSL/GSS refusals, cancel requests),
/// Authenticating, LoggingIn (waiting for the pool's parameters), Ready (linked or not), Waiting (for
/// a server; reading pauses only past 64 KiB held), Closing. While linked, the client's bytes go straight to the server's
/// socket actor; only message headers are read, to count the units each ReadyForQuery answers.
/// </summary>
public sealed class ClientSession : ReceiveActor, IWithTimers, Ops.IConnView
{
    /// <summary>KILL, or an admin's order: send this error and close now.</summary>
    public sealed record Kill(string SqlState, string Message);
    /// <summary>A CancelRequest carried this client's key; <c>ReplyTo</c> gets CancelSender.Done once it is dealt with.</summary>
    public sealed record CancelRequested(IActorRef ReplyTo);
    /// <summary>The node is shutting down: leave at the next transaction boundary.</summary>
    public sealed record Drain;
    private sealed record LoginTimeout;
    private sealed record IdleTick;
    private sealed record CloseTimeout;

    /// <summary>Why a connection is refused right after its startup packet (max-client-conn, shutdown).</summary>
    public sealed record Refusal(string SqlState, string Message);

    public static Props Props(PoolerRuntime rt, IActorRef conn, string remote, Refusal? refusal)
        => Akka.Actor.Props.Create(() => new ClientSession(rt, conn, remote, refusal));


    private readonly PoolerRuntime _rt;
    private readonly IActorRef _conn; // the socket actor, or the TlsConnection in front of it
    private readonly bool _tlsCapable; // client-tls-sslmode is not disable: _conn is a TlsConnection
    private Tls.TlsInfo? _tls; // set once the handshake is done
    private readonly string _remote;
    private readonly Refusal? _refusal;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly MessageBuffer _buf;
    private readonly FrameScanner _scan;
    private readonly RelayFlow _flow;
    private const int MaxHeldBytes = 64 * 1024;

    private string _user = "", _database = "";
    private DatabaseSettings? _db;
    private readonly List<KeyValuePair<string, string>> _startupParams = new();
    private readonly ClientParams _params = new();
    private ScramServer? _scramServer;
    private Md5Challenge? _md5;
    private bool _userKnown;
    private string? _secret;
    private IActorRef _pool = ActorRefs.Nobody;
    private PoolExchange _exchange = new();
    private Waiter? _waiter;
    private int _keyPid;
    private bool _keyRegistered;

    private Link? _link;
    private StatementRelay? _relay; // named statements renamed for each server (transaction and statement pooling)
    private bool _inUnit;
    private bool _holding;
    private int _swallow; // bytes of a padded COPY message still to drop from the client's stream
    private ByteString? _headerTail; // the start of a header cut by the end of the last chunk (see KeepHeaderTail)
    private bool _draining;
    private long _lastActivity = Environment.TickCount64;
    private bool _closing;
    private bool _inReady; // in the Ready behaviour (see AroundReceive)

    private sealed record Md5Challenge(byte[] Salt);
    private bool _admin; // connected to the admin console (virtual database pgbouncer/pooler)
    private readonly DateTime _connectedAt = DateTime.UtcNow;
    private readonly string _id; // Self.Path.Name, for rows read outside the actor (Self needs its context)

    public ITimerScheduler Timers { get; set; } = null!;

    public ClientSession(PoolerRuntime rt, IActorRef conn, string remote, Refusal? refusal)
    {
        _rt = rt;
        // TLS lives in one adapter in front of the socket actor; without it nothing sits in between
        _tlsCapable = rt.Tls.Client != null;
        _conn = rt.Tls.Client is { } tls ? Context.ActorOf(Tls.TlsConnection.ForClient(conn, tls, sniffDirect: true), "tls") : conn;
        _remote = remote;
        _refusal = refusal;
        _buf = new MessageBuffer(ProtocolLimits.MaxStartupPacketSize);
        _scan = new FrameScanner(ReadOnlySpan<byte>.Empty, rt.Settings.MaxPacketSize);
        _flow = new RelayFlow(_conn, Self);
        Become(Startup);
        _id = Self.Path.Name;
    }

    private PoolerSettings S => _rt.Settings;
    private string Who => $"client {Self.Path.Name} {_remote} db={_database} user={_user} node {_rt.NodeName}";

    protected override void PreStart()
    {
        Interlocked.Increment(ref _rt.ClientCount);
        _conn.Tell(new Tcp.Register(Self));
        Context.Watch(_conn);
        RequestRead();
        if (S.ClientLoginTimeout > TimeSpan.Zero) Timers.StartSingleTimer("login", new LoginTimeout(), S.ClientLoginTimeout);
    }

    protected override void PostStop()
    {
        Interlocked.Decrement(ref _rt.ClientCount);
        _rt.Connections.RemoveClient(Self);
        if (_keyRegistered) _rt.Cancels.Unregister(_keyPid);
        AdoptLink(resume: false);
        if (_link is { } l && !l.IsReleased) l.Server.Tell(new ServerSession.ClientGone(l));
        LeaveQueue();
        _conn.Tell(Tcp.Abort.Instance);
    }

    private void RequestRead() => _flow.Resume();

    private void Send(byte[] bytes) => _conn.Tell(Tcp.Write.Create(ByteString.FromBytes(bytes)));

    /// <summary>Sends a FATAL error, flushes, closes. Only this client is affected.</summary>
    private void Fatal(string sqlState, string message)
    {
        if (_closing) return;
        _log.Info("{0}: closing: {1} ({2})", Who, message, sqlState);
        _rt.Errors.Add(sqlState);
        Send(PgMessages.Error("FATAL", sqlState, message));
        CloseNow();
    }

    private void CloseNow()
    {
        if (_closing) return;
        AdoptLink(resume: false);
        _closing = true;
        _flow.Closed = true;
        LeaveQueue();
        if (_link is { } l && !l.IsReleased) l.Server.Tell(new ServerSession.ClientGone(l));
        _link = null;
        _conn.Tell(Tcp.Close.Instance);
        Timers.StartSingleTimer("close", new CloseTimeout(), TimeSpan.FromSeconds(5));
        _inReady = false;
        Become(() =>
        {
            Receive<Tcp.ConnectionClosed>(_ => Context.Stop(Self));
            Receive<Terminated>(_ => Context.Stop(Self));
            Receive<CloseTimeout>(_ => Context.Stop(Self));
            ReceiveAny(_ => { });
        });
    }

    private void CommonClosed()
    {
        Receive<Kill>(k => Fatal(k.SqlState, k.Message));
        Receive<Tcp.ConnectionClosed>(_ => Context.Stop(Self));
        Receive<Terminated>(_ => Context.Stop(Self));
        Receive<LoginTimeout>(_ => Fatal(SqlState.ProtocolViolation, "client_login_timeout"));
        Receive<Drain>(_ => Fatal(SqlState.AdminShutdown, "pooler is shutting down"));
    }

    // ---------------- Startup ----------------

    private void Startup()
    {
        Receive<Tcp.Received>(r =>
        {
            if (_buf.Buffered + r.Data.Count > ProtocolLimits.MaxStartupPacketSize) { Fatal(SqlState.ProtocolViolation, "startup packet too large"); return; }
            _buf.Append(r.Data.ToReadOnlySpan());
            while (!_closing)
            {
                var res = _buf.TryReadUntyped(out var body);
                if (res == ReadResult.NeedMore) { RequestRead(); return; }
                if (res == ReadResult.Invalid) { Fatal(SqlState.ProtocolViolation, "invalid startup packet length"); return; }
                var pkt = StartupPacket.Parse(body.Span, out var error);
                if (pkt == null) { Fatal(SqlState.ProtocolViolation, error!); return; }
                if (!OnStartupPacket(pkt)) return;
            }
        });
        Receive<Tls.TlsConnection.Established>(e =>
        {
            _tls = e.Info;
            _log.Debug("{0}: TLS {1}{2}", Who, e.Info.Describe, e.Info.Direct ? " (direct)" : "");
            // as PostgreSQL 17: direct TLS must have negotiated ALPN "postgresql", so a TLS hello meant for another protocol cannot reach it
            if (e.Info.Direct && !e.Info.Alpn)
                Fatal(SqlState.ProtocolViolation, "received direct SSL connection request without ALPN protocol negotiation extension");
        });
        Receive<Tls.TlsConnection.Failed>(f =>
        {
            // nothing can be said to a client whose handshake failed; the adapter has closed the socket
            _log.Info("client {0} {1} node {2}: TLS handshake failed: {3}", Self.Path.Name, _remote, _rt.NodeName, f.Reason);
            _rt.Errors.Add(SqlState.ProtocolViolation);
            Context.Stop(Self);
        });
        CommonClosed();
    }

    /// <summary>Returns true to keep reading startup packets.</summary>
    private bool OnStartupPacket(StartupPacket p)
    {
        switch (p.Kind)
        {
            case StartupKind.SslRequest when _tlsCapable && _tls == null:
                // bytes pipelined behind SSLRequest would be taken as if they came over TLS (CVE-2021-23214)
                if (_buf.Buffered > 0) { Fatal(SqlState.ProtocolViolation, "received unencrypted data after SSL request"); return false; }
                _conn.Tell(new Tls.TlsConnection.Accept()); // answers 'S' itself, see Accept
                return true;
            case StartupKind.SslRequest:
            case StartupKind.GssEncRequest:
                // no TLS here (or already inside it), no GSSAPI: the client goes on in plaintext or gives up
                _conn.Tell(Tcp.Write.Create(ByteString.FromBytes([(byte)'N'])));
                return true;
            case StartupKind.CancelRequest:
                var target = _rt.Cancels.Find(p.CancelPid, p.CancelSecret);
                var forwarder = target == null ? _rt.CancelForwarder : null;
                _log.Info("client {0} {1}: cancel request for key {2}: {3}", Self.Path.Name, _remote, p.CancelPid,
                    target != null ? "forwarded" : forwarder != null ? "not minted here, asking the cluster" : "no such key");
                if (target == null && forwarder == null) { CloseNow(); return false; }
                // PostgreSQL closes a cancel connection once the backend is signalled; a client may wait for
                // that before its next query, so close only when the cancel is out (or found moot)
                if (target != null) target.Tell(new CancelRequested(Self));
                else forwarder!.Tell(new Cluster.CancelForwarder.Forward(p.CancelPid, p.CancelSecret, Self));
                Timers.StartSingleTimer("cancel", new CancelSender.Done(), TimeSpan.FromSeconds(5));
                Become(() =>
                {
                    Receive<CancelSender.Done>(_ => CloseNow());
                    Receive<Tcp.ConnectionClosed>(_ => Context.Stop(Self));
                    Receive<Terminated>(_ => Context.Stop(Self));
                    ReceiveAny(_ => { });
                });
                return false;
            case StartupKind.Unsupported:
                Fatal(SqlState.ProtocolViolation, $"unsupported frontend protocol {p.Code >> 16}.{p.Code & 0xffff}: server supports 3.0");
                return false;
        }
        if (_refusal is { } r)
        {
            Fatal(r.SqlState, r.Message);
            return false;
        }
        if (TlsRefusal() is { } refusal)
        {
            Fatal(SqlState.InvalidAuthorization, refusal);
            return false;
        }
        _user = p.Get("user") ?? "";
        _database = p.Get("database") is { Length: > 0 } d ? d : _user;
        if (_user.Length == 0) { Fatal(SqlState.InvalidAuthorization, "no PostgreSQL user name specified in startup packet"); return false; }
        foreach (var (k, v) in p.Parameters)
        {
            if (k is "user" or "database") continue;
            if (S.IgnoreStartupParameters.Contains(k, StringComparer.OrdinalIgnoreCase)) continue;
            if (ClientParams.Canonical(k) == null)
            {
                Fatal(SqlState.FeatureNotSupported, $"unsupported startup parameter: {k} (add it to ignore-startup-parameters to let clients send it)");
                return false;
            }
            _startupParams.Add(new(ClientParams.Canonical(k)!, v));
        }
        if (Ops.AdminConsole.IsConsoleDatabase(_database) && !S.Databases.ContainsKey(_database))
        {
            _admin = true;
            StartAuth();
            return false;
        }
        _db = S.FindDatabase(_database);
        if (_db == null) { Fatal(SqlState.InvalidCatalogName, $"database \"{_database}\" does not exist (no entry in pooler.databases)"); return false; }
        StartAuth();
        return false;
    }

    /// <summary>Why client-tls-sslmode refuses this connection, or null.</summary>
    private string? TlsRefusal()
    {
        var mode = _rt.Tls.Client?.Settings.Mode ?? Tls.SslMode.Disable;
        if (mode >= Tls.SslMode.Require && _tls == null)
            return $"SSL required: the pooler accepts only TLS connections (client-tls-sslmode = {Tls.TlsSettings.NameOf(mode)}); connect with sslmode=require or stronger";
        if (mode >= Tls.SslMode.VerifyCa && !_tls!.PeerValid)
            return _tls.PeerPresented ? $"client certificate is not valid: {_tls.PeerProblem}" : "connection requires a valid client certificate";
        return null;
    }

    // ---------------- Authentication ----------------

    private void StartAuth()
    {
        var users = _rt.Users;
        _userKnown = users != null && users.TryGetSecret(_user, out _secret);
        var type = S.Auth.Type;
        switch (type)
        {
            case AuthType.Trust:
                if (users != null && !_userKnown) { AuthFailed(); return; }
                AuthOk();
                return;
            case AuthType.Cert:
                // as PostgreSQL's cert method: a certificate signed by the CA, whose CN is the user
                if (_tls == null) { Fatal(SqlState.InvalidAuthorization, $"certificate authentication failed for user \"{_user}\": the connection is not using TLS (connect with sslmode=require or stronger and a client certificate)"); return; }
                if (!_tls.PeerPresented) { Fatal(SqlState.InvalidAuthorization, "connection requires a valid client certificate"); return; }
                if (!_tls.PeerValid) { Fatal(SqlState.InvalidAuthorization, $"client certificate is not valid: {_tls.PeerProblem}"); return; }
                if (_tls.PeerCommonName != _user)
                {
                    Fatal(SqlState.InvalidAuthorization, $"certificate authentication failed for user \"{_user}\": the certificate's CN is \"{_tls.PeerCommonName}\"");
                    return;
                }
                AuthOk();
                return;
            case AuthType.Plain:
                Send(PgMessages.AuthCleartext());
                break;
            case AuthType.Md5:
                if (_secret != null && ScramServer.IsScramSecret(_secret))
                {
                    // an MD5 challenge cannot be checked against a SCRAM secret: use SCRAM, as PostgreSQL does
                    goto case AuthType.ScramSha256;
                }
                _md5 = new Md5Challenge(RandomNumberGenerator.GetBytes(4));
                Send(PgMessages.AuthMd5(_md5.Salt));
                break;
            case AuthType.ScramSha256:
                // unknown users still get a full exchange, so a probe cannot tell them apart
                _scramServer = new ScramServer(!_userKnown || Md5Auth.IsMd5Secret(_secret!) ? _rt.ScramSecrets.Dummy
                    : ScramServer.IsScramSecret(_secret!) ? _secret! : _rt.ScramSecrets.For(_user, _secret!));
                Send(PgMessages.AuthSasl("SCRAM-SHA-256"));
                break;
        }
        _buf.TakeRemaining(); // discarded: nothing legitimate follows a startup packet before our challenge
        Become(Authenticating);
        RequestRead();
    }

    private void Authenticating()
    {
        var sasl = 0;
        var authBuf = new MessageBuffer(ProtocolLimits.MaxStartupPacketSize);
        Receive<Tcp.Received>(r =>
        {
            authBuf.Append(r.Data.ToReadOnlySpan());
            while (!_closing)
            {
                var res = authBuf.TryReadTyped(out var type, out var body);
                if (res == ReadResult.NeedMore) { RequestRead(); return; }
                if (res == ReadResult.Invalid || type != MsgType.Password)
                {
                    Fatal(SqlState.ProtocolViolation, type == MsgType.Terminate ? "client left during authentication" : "expected a password message during authentication");
                    return;
                }
                var span = body.Span;
                if (_scramServer != null)
                {
                    string? reply, error;
                    if (sasl++ == 0)
                    {
                        var mech = Payload.CString(span, out var used);
                        if (mech != "SCRAM-SHA-256") { Fatal(SqlState.ProtocolViolation, $"unsupported SASL mechanism {mech}"); return; }
                        var len = Payload.Int32(span[used..]);
                        var data = len < 0 ? "" : Encoding.UTF8.GetString(span.Slice(used + 4, Math.Min(len, span.Length - used - 4)));
                        reply = _scramServer.HandleClientFirst(data, out error);
                        if (reply == null) { SaslError(error); return; }
                        Send(PgMessages.AuthSaslContinue(reply));
                        continue;
                    }
                    reply = _scramServer.HandleClientFinal(Encoding.UTF8.GetString(span), out error);
                    if (reply == null || !_userKnown) { SaslError(error ?? ScramServer.WrongPasswordError); return; }
                    Send(PgMessages.AuthSaslFinal(reply));
                    AuthOk();
                    return;
                }
                var password = Payload.CString(span, out _);
                if (_md5 != null ? _userKnown && Md5Auth.Verify(_secret!, _user, _md5.Salt, password) : _userKnown && CheckPlain(password))
                {
                    if (S.Auth.Type == AuthType.Plain && _secret != null && ScramServer.IsScramSecret(_secret)) _secret = password;
                    AuthOk();
                }
                else AuthFailed();
                return;
            }
        });
        CommonClosed();
    }

    private bool CheckPlain(string password)
    {
        var secret = _secret!;
        if (Md5Auth.IsMd5Secret(secret)) return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(Md5Auth.Hash(password, _user)), Encoding.UTF8.GetBytes(secret));
        if (ScramServer.IsScramSecret(secret))
        {
            var server = new ScramServer(secret);
            return CryptographicOperations.FixedTimeEquals(
                Encoding.ASCII.GetBytes(ScramServer.MakeSecret(password, server.Salt, server.Iterations)), Encoding.ASCII.GetBytes(secret));
        }
        return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(password), Encoding.UTF8.GetBytes(secret));
    }

    private void SaslError(string? error)
    {
        if (error == null || error == ScramServer.WrongPasswordError) AuthFailed();
        else Fatal(SqlState.ProtocolViolation, "SCRAM authentication failed: " + error);
    }

    private void AuthFailed() => Fatal(SqlState.InvalidPassword, $"password authentication failed for user \"{_user}\"");

    private void AuthOk()
    {
        var w = new PgWriter(16);
        PgMessages.AppendAuth(w, 0, default);
        Send(w.ToArray());
        if (_admin) { ConsoleLogin(); return; }
        var db = _db!;
        var serverUser = db.User ?? _user;
        string? password = db.Password;
        if (password == null && _rt.Users is { } users && users.TryGetSecret(serverUser, out var sec)) password = sec;
        if (serverUser == _user && _secret != null && S.Auth.Type == AuthType.Plain && !Md5Auth.IsMd5Secret(_secret)) password ??= _secret;
        var keys = _scramServer?.ClientKey != null && serverUser == _user && db.Password == null;
        var creds = new ServerCredentials(serverUser, password, keys ? _scramServer!.ClientKey : null, keys ? _scramServer!.ServerKey : null);
        _rt.PoolManager.Tell(new PoolManager.Connect(db, creds, Self));
        Become(LoggingIn);
    }

    private void LoggingIn()
    {
        Receive<Pool.Welcome>(w =>
        {
            _pool = Sender;
            _exchange = w.Exchange;
            Timers.Cancel("login");
            // a session keeps its server, and its statements with it; otherwise they follow the client from server to server
            if (S.MaxPreparedStatements > 0 && S.ModeFor(_db!) != PoolMode.Session) _relay = new StatementRelay(S.MaxPacketSize, _exchange.Counters);
            var writer = new PgWriter(512);
            foreach (var (k, v) in w.ServerParams) _params.Set(k, v);
            foreach (var (k, v) in _startupParams) _params.Set(k, v);
            // the client sees the pool's parameters with its own settings on top
            foreach (var (k, v) in w.ServerParams)
                PgMessages.AppendParameterStatus(writer, k, _params.Get(ClientParams.Canonical(k) ?? "\0") ?? v);
            foreach (var (k, v) in _startupParams)
                if (!w.ServerParams.Any(p => string.Equals(p.Key, k, StringComparison.OrdinalIgnoreCase)))
                    PgMessages.AppendParameterStatus(writer, k, v);
            (_keyPid, var secret) = _rt.Cancels.Register(Self);
            _keyRegistered = true;
            PgMessages.AppendBackendKeyData(writer, _keyPid, secret);
            writer.Bytes(PgMessages.ReadyForQuery((byte)'I'));
            Send(writer.ToArray());
            _log.Info("{0}: login ok", Who);
            _rt.Connections.AddClient(Self, this);
            if (S.ClientIdleTimeout > TimeSpan.Zero)
                Timers.StartPeriodicTimer("idle", new IdleTick(), TimeSpan.FromMilliseconds(Math.Clamp(S.ClientIdleTimeout.TotalMilliseconds / 4, 50, 1000)));
            Become(Ready);
            _inReady = true;
            RequestRead();
            // messages the client pipelined behind its startup packet (trust) or sent while we waited for the pool
            var early = _buf.TakeRemaining();
            if (early.Length > 0) OnClientData(ByteString.FromBytes(early));
        });
        Receive<Pool.Failure>(f => Fatal(f.SqlState, f.Message));
        Receive<Tcp.Received>(r => { _flow.Suspend(); _buf.Append(r.Data.ToReadOnlySpan()); });
        CommonClosed();
    }

    // ---------------- Ready / Waiting ----------------

    /// <summary>
    /// Logged in, linked or not, or waiting for a server (<see cref="_waiter"/> set). One
    /// behaviour for all three: ReceiveActor rebuilds its handlers on every Become, and a busy pool
    /// moves clients between these states on every transaction. Tcp.Received and Linked are handled
    /// in <see cref="AroundReceive"/>, before ReceiveActor's matching.
    /// </summary>
    private void Ready()
    {
        Receive<Pool.Failure>(f =>
        {
            if (_waiter == null) return;
            _waiter = null;
            Fatal(f.SqlState, f.Message);
        });
        Receive<ServerSession.Lost>(l =>
        {
            if (_waiter == null && !ReferenceEquals(l.Link, _link)) return;
            _waiter = null;
            Fatal(l.SqlState, l.Message);
        });
        Receive<ServerSession.IdleUnderHold>(h =>
        {
            if (!ReferenceEquals(h.Link, _link) || !_holding) return;
            // PostgreSQL ended the COPY and waits for the rest of the message we started: complete it with
            // filler (it discards CopyData after a failed COPY); the client's real remainder is dropped
            // as the tail of a finished COPY once the link is released
            var rest = _scan.RemainingBody;
            if (rest > 0) _link.ServerConn.Tell(Tcp.Write.Create(ByteString.FromBytes(new byte[rest])));
            _relay?.EndMessage();
            _swallow = rest;
            DropHold(_link);
        });
        Receive<ServerSession.Unlinked>(u =>
        {
            if (_waiter == null && ReferenceEquals(u.Link, _link) && _draining) Fatal(SqlState.AdminShutdown, "pooler is shutting down");
        });
        Receive<CancelRequested>(c =>
        {
            if (_waiter == null && _link is { } l && !l.IsReleased) l.Server.Tell(new ServerSession.CancelQuery(l, c.ReplyTo));
            else c.ReplyTo.Tell(new CancelSender.Done()); // not linked: nothing of this client runs
        });
        Receive<Kill>(k => Fatal(k.SqlState, k.Message));
        Receive<Drain>(_ =>
        {
            _draining = true;
            if (_waiter != null) return; // refused at its next transaction
            if (_link == null || _link.IsReleased) { Fatal(SqlState.AdminShutdown, "pooler is shutting down"); return; }
            _link.ReleaseWhenIdle = true;
            _link.Server.Tell(new ServerSession.ReleaseIfIdle(_link));
        });
        Receive<IdleTick>(_ =>
        {
            if (_waiter == null && (_link == null || _link.IsReleased) && Environment.TickCount64 - _lastActivity > S.ClientIdleTimeout.TotalMilliseconds)
                Fatal(SqlState.ProtocolViolation, "client_idle_timeout");
        });
        Receive<Tcp.ConnectionClosed>(_ => Leave());
        Receive<Terminated>(_ => Leave());
        Receive<Tcp.Event>(e =>
        {
            if (_waiter == null && _link != null && ReferenceEquals(e, _link.ServerAck))
            {
                _flow.Acked();
            }
        });
    }

    /// <summary>The relay's hot messages skip ReceiveActor's handler matching (same code as Ready's handlers).</summary>
    protected override bool AroundReceive(Receive receive, object message)
    {
        if (_inReady)
        {
            if (_waiter != null) AdoptLink();
            if (message is Tcp.Received r) { OnReadyData(r.Data); return true; }
            if (message is ServerSession.Linked) return true; // adopted just above
        }
        return base.AroundReceive(receive, message);
    }

    /// <summary>
    /// A server linked while this client waited (and wrote what it held): relay through the link from
    /// now on. Checked before every message, so no handler sees a stale waiting state.
    /// </summary>
    private void AdoptLink(bool resume = true)
    {
        if (_waiter?.Link is not { } l) return;
        _waiter = null;
        _link = l;
        _flow.NewTarget();
        if (resume) RequestRead();
    }

    private void OnReadyData(ByteString data)
    {
        _exchange.Counters.AddReceived(data.Count);
        if (_waiter == null) { OnClientData(data); return; }
        // more of the client's bytes while it waits for a server: kept with the rest
        var units = CountUnits(data, out var terminateAt, out var error);
        if (error != null) { Fatal(SqlState.ProtocolViolation, error); return; }
        if (terminateAt >= 0) { Leave(); return; }
        data = KeepHeaderTail(data, ref terminateAt);
        if (data.Count == 0) return;
        if (_waiter.TryHold(data, units, out var held)) { HoldBound(held); return; }
        AdoptLink(); // linked meanwhile: these bytes follow the held ones through the link
        Forward(data, units);
    }

    private void OnClientData(ByteString data)
    {
        _lastActivity = Environment.TickCount64;
        var units = CountUnits(data, out var terminateAt, out var error);
        if (error != null) { Fatal(SqlState.ProtocolViolation, error); return; }
        data = KeepHeaderTail(data, ref terminateAt);
        if (data.Count == 0) { RequestRead(); return; }
        if (_swallow > 0)
        {
            // the server already got filler for the rest of this message: the real rest must not follow it
            var n = Math.Min(_swallow, terminateAt >= 0 ? terminateAt : data.Count);
            _swallow -= n;
            data = data.Slice(n);
            if (terminateAt >= 0) terminateAt -= n;
            if (data.Count == 0 && terminateAt < 0) { RequestRead(); return; }
        }
        if (terminateAt >= 0)
        {
            if (terminateAt > 0) Forward(data.Slice(0, terminateAt), units);
            Leave();
            return;
        }
        var midCopy = _scan.RemainingBody > 0 && _scan.Type is MsgType.CopyData or MsgType.CopyDone or MsgType.CopyFail;
        if (_link is { } link && !link.IsReleased && midCopy != _holding)
        {
            if (midCopy && link.TryAddUnits(1))
            {
                // hold the server until this COPY message is whole (see Link.ClientHolds)
                _holding = true;
                link.ClientHolds = true;
            }
            else if (!midCopy)
            {
                Forward(data, units);
                DropHold(link);
                return;
            }
        }
        Forward(data, units);
    }

    private void DropHold(Link link)
    {
        if (!_holding) return;
        _holding = false;
        link.ClientHolds = false;
        link.UnitDone();
        if (link.Pending == 0) link.Server.Tell(new ServerSession.ReleaseIfIdle(link)); // nothing else would release it now
    }

    /// <summary>
    /// Without statement renaming (whose relay does the same itself): the first bytes of a message header at the end
    /// of a chunk wait until the header is whole. That message may open the next unit, and if the link is released
    /// meanwhile (its last unit answered), those bytes belong to the next server, not to this one.
    /// </summary>
    private ByteString KeepHeaderTail(ByteString data, ref int terminateAt)
    {
        if (_relay != null) return data;
        if (_headerTail != null)
        {
            data = _headerTail.Concat(data);
            if (terminateAt >= 0) terminateAt += _headerTail.Count;
            _headerTail = null;
        }
        var k = _scan.PartialHeaderLength;
        if (k == 0 || terminateAt >= 0) return data;
        _headerTail = ByteString.FromBytes(data.Slice(data.Count - k).ToArray());
        return data.Slice(0, data.Count - k);
    }

    /// <summary>
    /// Reads the message headers of a chunk: how many units (each answered by one ReadyForQuery)
    /// it opens, where a Terminate starts, or why it cannot be framed.
    /// </summary>
    private int CountUnits(ByteString data, out int terminateAt, out string? error)
    {
        var span = data.ToReadOnlySpan();
        var pos = 0;
        var units = 0;
        terminateAt = -1;
        error = null;
        while (true)
        {
            var ev = _scan.Next(span, ref pos);
            if (ev == ScanEvent.End) return units;
            if (ev == ScanEvent.Invalid) { error = "invalid message length"; return units; }
            if (ev != ScanEvent.Header) continue;
            switch (_scan.Type)
            {
                case MsgType.Query or MsgType.FunctionCall or MsgType.Sync:
                    if (!_inUnit) units++;
                    _inUnit = false;
                    break;
                case MsgType.Parse or MsgType.Bind or MsgType.Describe or MsgType.Execute or MsgType.Close or MsgType.Flush:
                    if (!_inUnit) { units++; _inUnit = true; }
                    break;
                case MsgType.CopyData or MsgType.CopyDone or MsgType.CopyFail:
                    break;
                case MsgType.Terminate:
                    terminateAt = Math.Max(0, _scan.StartInChunk);
                    return units;
                default:
                    error = $"invalid frontend message type {(char)_scan.Type} ({_scan.Type})";
                    return units;
            }
        }
    }

    private void Forward(ByteString data, int units)
    {
        var link = _link;
        if (units > 0 && link is { Pending: 0 }) link.UnitStart = Stopwatch.GetTimestamp();
        if (link != null && link.TryAddUnits(units))
        {
            Write(link, data);
            return;
        }
        _link = null;
        if (units == 0)
        {
            // no message here starts a new unit: it is the tail of a COPY the server already ended
            _relay?.Skip(data);
            RequestRead();
            return;
        }
        if (_draining) { Fatal(SqlState.AdminShutdown, "pooler is shutting down"); return; }
        var h = _exchange.TryTakeIdle();
        if (h != null && h.Matches(_params)
            && (string.IsNullOrWhiteSpace(S.ServerCheckQuery) || DateTime.UtcNow - h.IdleSince < S.ServerCheckDelay))
        {
            // fast path: link to a parked server directly; it learns of the link before our bytes reach it
            link = new Link(Link.NextId(), Self, _conn, h.Server, h.Conn, _params, _relay, h.Statements) { UnitStart = Stopwatch.GetTimestamp() };
            h.Server.Tell(new ServerSession.Attach(link));
            _link = link;
            _flow.NewTarget();
            link.TryAddUnits(units);
            Write(link, data);
            return;
        }
        _waiter = new Waiter(Self, _conn, _params, _relay);
        _waiter.TryHold(data, units, out var heldBytes); // before queueing: the server that takes it writes them
        var wakePool = false;
        h ??= _exchange.TakeOrQueue(_waiter, out wakePool);
        if (h != null)
        {
            // the server must first run its check query or SET the client's settings
            _waiter.TakenBy = h.Server;
            h.Server.Tell(new ServerSession.Assign(_waiter, h.IdleSince));
        }
        else if (wakePool) _pool.Tell(new Pool.Wakeup());
        HoldBound(heldBytes);
    }

    /// <summary>
    /// A waiting client keeps being read (a paused read costs two messages per transaction) until
    /// what it sent meanwhile passes <see cref="MaxHeldBytes"/>; then reading pauses, and the server
    /// that links is asked to say so (it resumes reading).
    /// </summary>
    private void HoldBound(int heldBytes)
    {
        if (heldBytes <= MaxHeldBytes || _waiter == null) return;
        _flow.Suspend();
        if (!_waiter.NotifyWhenLinked()) AdoptLink(); // linked meanwhile: no message will come
    }

    private void Write(Link link, ByteString data)
    {
        if (link is { Relay: { } relay, Statements: { } statements })
        {
            lock (statements.Gate) data = relay.Relay(data, statements);
            if (data.Count == 0) { RequestRead(); return; } // all of it is inside a message still being read
        }
        _flow.Write(link.ServerConn, data, link.ServerAck);
    }

    /// <summary>Leaving while queued: out of the queue, or tell the server that already took us.</summary>
    private void LeaveQueue()
    {
        if (_waiter is not { } w) return;
        _waiter = null;
        if (!_exchange.TryLeave(w, out var takenBy) && takenBy != null) takenBy.Tell(new ServerSession.ClientLeft(Self));
    }

    private void Leave()
    {
        if (_closing) return;
        AdoptLink(resume: false);
        _log.Debug("{0}: client left", Who);
        if (_link is { } l && !l.IsReleased) l.Server.Tell(new ServerSession.ClientGone(l));
        _link = null;
        LeaveQueue();
        // the TLS adapter is our child: stopping now would stop it before it sends close_notify and FIN
        if (_tlsCapable) { CloseNow(); return; }
        _closing = true;
        _conn.Tell(Tcp.Close.Instance);
        Context.Stop(Self);
    }

    // ---------------- Admin console ----------------

    /// <summary>The virtual database pgbouncer/pooler: admin-users may run everything, stats-users SHOW only.</summary>
    private void ConsoleLogin()
    {
        var role = Ops.AdminConsole.RoleOf(S, _user);
        if (role == Ops.ConsoleRole.None)
        {
            Fatal(SqlState.InvalidAuthorization, $"user \"{_user}\" is not allowed to use the admin console (not in admin-users or stats-users)");
            return;
        }
        Timers.Cancel("login");
        (_keyPid, var secret) = _rt.Cancels.Register(Self);
        _keyRegistered = true;
        Send(Ops.AdminConsole.Welcome(_keyPid, secret));
        _log.Info("{0}: admin console login ({1})", Who, role);
        foreach (var (k, v) in _startupParams) _params.Set(k, v); // SHOW CLIENTS shows the console's application_name too
        _rt.Connections.AddClient(Self, this);
        var consoleBuf = new MessageBuffer(ProtocolLimits.MaxStartupPacketSize);
        consoleBuf.Append(_buf.TakeRemaining());
        var busy = false;
        void Run()
        {
            while (!_closing && !busy)
            {
                var res = consoleBuf.TryReadTyped(out var type, out var body);
                if (res == ReadResult.NeedMore) { RequestRead(); return; }
                if (res == ReadResult.Invalid) { Fatal(SqlState.ProtocolViolation, "invalid message length"); return; }
                _lastActivity = Environment.TickCount64;
                if (type == MsgType.Terminate) { Leave(); return; }
                if (type != MsgType.Query)
                {
                    // as PgBouncer: say why, then drop the connection
                    Send(Ops.AdminConsole.Error(type == MsgType.Parse ? Ops.AdminConsole.SimpleProtocolOnly : $"unsupported packet type for admin console: {type}"));
                    Fatal(SqlState.ProtocolViolation, "bad packet");
                    return;
                }
                busy = true;
                _rt.Ops.Tell(new Ops.OpsAgent.ConsoleQuery(Payload.CString(body.Span, out _), role, _user), Self);
            }
        }
        _inReady = false;
        Become(() =>
        {
            Receive<Tcp.Received>(r =>
            {
                if (consoleBuf.Buffered + r.Data.Count > ProtocolLimits.MaxStartupPacketSize) { Fatal(SqlState.ProtocolViolation, "admin console query too long"); return; }
                consoleBuf.Append(r.Data.ToReadOnlySpan());
                Run();
            });
            Receive<Ops.OpsAgent.ConsoleReply>(reply =>
            {
                busy = false;
                Send(reply.Bytes);
                if (reply.Close) { CloseNow(); return; }
                Run();
            });
            Receive<CancelRequested>(c => c.ReplyTo.Tell(new CancelSender.Done()));
            Receive<Tcp.ConnectionClosed>(_ => Leave());
            Receive<Terminated>(_ => Leave());
            Receive<Kill>(k => Fatal(k.SqlState, k.Message));
            Receive<Drain>(_ => Fatal(SqlState.AdminShutdown, "pooler is shutting down"));
            Receive<Tcp.Event>(_ => { });
        });
        RequestRead();
    }

    /// <summary>SHOW CLIENTS row; read from the OpsAgent's thread (display only).</summary>
    Ops.ConnRow Ops.IConnView.Row()
    {
        var waiter = _waiter;
        var link = _link is { IsReleased: false } l ? l : waiter?.Link;
        var waiting = waiter != null && waiter.Link == null;
        var (addr, port) = Ops.AdminConsole.SplitEndpoint(_remote);
        var requestAt = DateTime.UtcNow - TimeSpan.FromMilliseconds(Environment.TickCount64 - Volatile.Read(ref _lastActivity));
        return new Ops.ConnRow("C", _user, _database, waiting ? "waiting" : "active", addr, port, S.Listen.Host, _rt.ListenPort,
            _connectedAt, requestAt, waiting ? (long)(DateTime.UtcNow - waiter!.Since).TotalMicroseconds : 0,
            _id, link?.Server.Path.Name ?? "", _keyPid, _params.Get("application_name") ?? "", _rt.NodeName, _tls?.Describe ?? "");
    }
}
