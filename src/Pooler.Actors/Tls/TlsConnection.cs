using System.Net.Security;
using Akka.Actor;
using Akka.Event;
using Akka.IO;

namespace Pooler.Actors.Tls;

/// <summary>
/// Puts TLS between an Akka.IO connection actor and the session that owns it, speaking the same messages
/// as the connection actor: the session sends Register, Write (acks go back to the writer, as Akka.IO does),
/// SuspendReading/ResumeReading, Close and Abort, and gets Received and ConnectionClosed, in plaintext.
/// Behaviours: Plain (bytes pass through untouched until the session asks for TLS: SSLRequest answered
/// 'S', or a client's first byte is a TLS handshake record, PostgreSQL 17's direct TLS), Handshaking, Secure.
/// Encryption happens inline in this actor's message; reads decrypt as each chunk arrives.
/// </summary>
public sealed class TlsConnection : ReceiveActor
{
    /// <summary>From a ClientSession: answer the client's SSLRequest with 'S' and run the server side of the handshake.
    /// One message for both: were the 'S' a separate write, the client's hello could arrive before this.</summary>
    public sealed record Accept;
    /// <summary>From a ServerSession: the server answered 'S'; run the client side of the handshake.</summary>
    public sealed record Connect;
    /// <summary>To the session: the handshake is done; what follows is plaintext from inside TLS.</summary>
    public sealed record Established(TlsInfo Info);
    /// <summary>To the session: the handshake failed; the connection is closed and this actor stops.</summary>
    public sealed record Failed(string Reason);

    private sealed record HandshakeDone(TlsInfo? Info, Exception? Error);
    private sealed record ReadEnded(Exception? Error);
    /// <summary>Rides a socket write so its ack reaches the session's writer with the writer's own event.</summary>
    private sealed class AckFor(IActorRef writer, Tcp.Event ack) : Tcp.Event
    {
        public IActorRef Writer { get; } = writer;
        public Tcp.Event Ack { get; } = ack;
    }

    /// <summary>For the pooler's client side: <paramref name="sniffDirect"/> starts TLS when the first byte is a handshake record.</summary>
    public static Props ForClient(IActorRef socket, ClientTls tls, bool sniffDirect)
        => Akka.Actor.Props.Create(() => new TlsConnection(socket, tls, null, null, sniffDirect));

    /// <summary>For a server connection to <paramref name="host"/>.</summary>
    public static Props ForServer(IActorRef socket, ServerTls tls, string host)
        => Akka.Actor.Props.Create(() => new TlsConnection(socket, null, tls, host, false));

    private const byte TlsHandshakeRecord = 0x16;
    private readonly IActorRef _socket;
    private readonly ClientTls? _clientTls;
    private readonly ServerTls? _serverTls;
    private readonly string? _host;
    private bool _sniff;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private IActorRef _handler = ActorRefs.Nobody;
    private readonly List<object> _early = []; // socket events before the session registered
    private readonly List<(Tcp.Write Write, IActorRef Sender)> _held = []; // writes made during the handshake
    private readonly CancellationTokenSource _cts = new();
    private BridgeStream _bridge = null!;
    private SslStream _ssl = null!;
    private Tcp.ConnectionClosed? _closedBySocket;
    private bool _stopOnRegister;
    private bool _secure; // in Secure: Received and Write are handled in AroundReceive, before ReceiveActor's matching

    public TlsConnection(IActorRef socket, ClientTls? clientTls, ServerTls? serverTls, string? host, bool sniffDirect)
    {
        _socket = socket;
        _clientTls = clientTls;
        _serverTls = serverTls;
        _host = host;
        _sniff = sniffDirect;
        Plain();
    }

    protected override void PreStart()
    {
        _socket.Tell(new Tcp.Register(Self));
        Context.Watch(_socket);
    }

    protected override void PostStop()
    {
        _cts.Cancel();
        _ssl?.Dispose();
        _socket.Tell(Tcp.Abort.Instance);
    }

    private void Deliver(object message)
    {
        if (_handler.IsNobody()) _early.Add(message);
        else _handler.Tell(message, Self);
    }

    private void OnRegister(Tcp.Register r)
    {
        _handler = r.Handler;
        Context.Watch(_handler);
        foreach (var m in _early) _handler.Tell(m, Self);
        _early.Clear();
        if (_stopOnRegister) Context.Stop(Self);
    }

    /// <summary>The session or the socket died: nothing is left to serve.</summary>
    private void OnTerminated(Terminated t) => Context.Stop(Self);

    // ---------------- Plain ----------------

    private void Plain()
    {
        Receive<Tcp.Register>(OnRegister);
        Receive<Tcp.Received>(r =>
        {
            if (_sniff)
            {
                _sniff = false;
                if (r.Data.Count > 0 && r.Data[0] == TlsHandshakeRecord)
                {
                    StartHandshake(direct: true, r.Data);
                    return;
                }
            }
            Deliver(r);
        });
        Receive<Tcp.Write>(w => _socket.Forward(w));
        // the socket's Closed comes back to us and is passed on below
        Receive<Tcp.CloseCommand>(c => _socket.Tell(c));
        Receive<Accept>(_ =>
        {
            _sniff = false;
            // switch to handshaking before the 'S' can reach the client: its hello then always finds us ready
            StartHandshake(direct: false, null);
            _socket.Tell(Tcp.Write.Create(ByteString.FromBytes([(byte)'S'])));
        });
        Receive<Connect>(_ => StartHandshake(direct: false, null));
        CommonSocketCommands();
        Receive<Tcp.ConnectionClosed>(c =>
        {
            Deliver(c);
            if (_handler.IsNobody()) _stopOnRegister = true;
            else Context.Stop(Self);
        });
        Receive<Terminated>(OnTerminated);
    }

    private void CommonSocketCommands()
    {
        Receive<Tcp.SuspendReading>(m => _socket.Tell(m));
        Receive<Tcp.ResumeReading>(m => _socket.Tell(m));
        Receive<Tcp.Abort>(m => _socket.Tell(m));
        Receive<Tcp.CommandFailed>(f => Deliver(f));
    }

    // ---------------- Handshaking ----------------

    private void StartHandshake(bool direct, ByteString? first)
    {
        var socket = _socket;
        var self = Self;
        _bridge = new BridgeStream(bytes => socket.Tell(Tcp.Write.Create(ByteString.FromBytes(bytes)), self));
        _ssl = new SslStream(_bridge, leaveInnerStreamOpen: false);
        if (first != null) _bridge.Push(first.ToArray());
        Task<TlsInfo> handshake;
        try
        {
            handshake = _clientTls != null
                ? _clientTls.AcceptAsync(_ssl, direct, _cts.Token)
                : _serverTls!.ConnectAsync(_ssl, _host!, _cts.Token);
        }
        catch (Exception e)
        {
            handshake = Task.FromException<TlsInfo>(e);
        }
        handshake.ContinueWith(t => self.Tell(t.IsCompletedSuccessfully ? new HandshakeDone(t.Result, null) : new HandshakeDone(null, t.Exception?.GetBaseException() ?? new OperationCanceledException())),
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        Become(Handshaking);
    }

    private void Handshaking()
    {
        Receive<Tcp.Register>(OnRegister);
        Receive<Tcp.Received>(r => _bridge.Push(r.Data.ToArray()));
        Receive<Tcp.Write>(w => _held.Add((w, Sender)));
        Receive<HandshakeDone>(d =>
        {
            if (d.Error != null)
            {
                var reason = d.Error switch
                {
                    OperationCanceledException => "cancelled",
                    IOException when _closedBySocket != null => "connection closed during the TLS handshake",
                    _ => d.Error.Message,
                };
                Deliver(new Failed(reason));
                Context.Stop(Self);
                return;
            }
            Deliver(new Established(d.Info!));
            Become(Secure);
            _secure = true;
            foreach (var (w, sender) in _held) Encrypt(w, sender);
            _held.Clear();
            _ = ReadLoop();
        });
        Receive<Tcp.CloseCommand>(_ => { _cts.Cancel(); _socket.Tell(Tcp.Abort.Instance); });
        CommonSocketCommands();
        Receive<Tcp.ConnectionClosed>(c =>
        {
            // the handshake reads EOF and fails; HandshakeDone reports it
            _closedBySocket ??= c;
            _bridge.PushEof();
        });
        Receive<Terminated>(OnTerminated);
    }

    // ---------------- Secure ----------------

    /// <summary>Tcp.Received and Tcp.Write, the relay's hot messages, are handled in <see cref="AroundReceive"/>.</summary>
    private void Secure()
    {
        Receive<AckFor>(a => a.Writer.Tell(a.Ack, Self));
        Receive<Tcp.CloseCommand>(c =>
        {
            // close_notify first, as PostgreSQL and libpq do; it is written synchronously through the bridge
            try { _ = _ssl.ShutdownAsync(); } catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException) { }
            _socket.Tell(c);
        });
        CommonSocketCommands();
        Receive<Tcp.ConnectionClosed>(c =>
        {
            if (c is Tcp.PeerClosed or Tcp.ErrorClosed && _closedBySocket == null)
            {
                // plaintext still inside SslStream reaches the session first: the read loop ends, then we pass this on
                _closedBySocket = c;
                _bridge.PushEof();
                return;
            }
            _handler.Tell(c, Self);
            Context.Stop(Self);
        });
        Receive<ReadEnded>(e =>
        {
            if (e.Error != null && _closedBySocket == null)
            {
                _log.Info("TLS connection {0}: {1}; closing", Self.Path, e.Error.Message);
                _handler.Tell(new Tcp.ErrorClosed("TLS: " + e.Error.Message), Self);
            }
            else _handler.Tell(_closedBySocket ?? Tcp.PeerClosed.Instance, Self);
            Context.Stop(Self);
        });
        Receive<Terminated>(OnTerminated);
    }

    protected override bool AroundReceive(Receive receive, object message)
    {
        if (_secure)
        {
            if (message is Tcp.Received r) { _bridge.Push(r.Data.ToArray()); return true; }
            if (message is Tcp.Write w) { Encrypt(w, Sender); return true; }
        }
        return base.AroundReceive(receive, message);
    }

    private void Encrypt(Tcp.Write w, IActorRef sender)
    {
        _bridge.BeginCollect();
        try
        {
            // completes synchronously: the bridge's writes only queue Tcp.Write messages
            _ssl.Write(w.Data.ToReadOnlySpan());
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException or NotSupportedException)
        {
            _bridge.EndCollect();
            _log.Info("TLS connection {0}: write failed: {1}", Self.Path, e.Message);
            _handler.Tell(new Tcp.ErrorClosed("TLS: " + e.Message), Self);
            Context.Stop(Self);
            return;
        }
        var data = _bridge.EndCollect();
        if (w.Ack is Tcp.NoAck) { if (data.Count > 0) _socket.Tell(Tcp.Write.Create(data)); }
        else _socket.Tell(Tcp.Write.Create(data, new AckFor(sender, w.Ack)));
    }

    /// <summary>Decrypted bytes go to the session as they come; runs inline in the actor's Received handling.</summary>
    private async Task ReadLoop()
    {
        var handler = _handler;
        var self = Self;
        var ssl = _ssl;
        var ct = _cts.Token;
        try
        {
            while (true)
            {
                // wait without a buffer held: an idle connection holds no read buffer
                await ssl.ReadAsync(Memory<byte>.Empty, ct).ConfigureAwait(false);
                var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(16 * 1024);
                int n;
                try
                {
                    n = await ssl.ReadAsync(buffer, ct).ConfigureAwait(false);
                    if (n > 0) handler.Tell(new Tcp.Received(ByteString.CopyFrom(buffer, 0, n)), self);
                }
                finally { System.Buffers.ArrayPool<byte>.Shared.Return(buffer); }
                if (n == 0) break;
            }
            self.Tell(new ReadEnded(null));
        }
        catch (Exception e)
        {
            self.Tell(new ReadEnded(e is OperationCanceledException ? null : e));
        }
    }
}
