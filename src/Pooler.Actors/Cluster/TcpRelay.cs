using System.Net;
using Akka.Actor;
using Akka.IO;

namespace Pooler.Actors.Cluster;

/// <summary>
/// Relays one client connection accepted on the VIP to another node's listener, byte for byte (HAProxy's
/// job). One write in flight per direction: while it is, the source socket is paused, so a slow side
/// never makes the relay buffer more than a read or two.
/// </summary>
public sealed class TcpRelay : ReceiveActor, IWithTimers
{
    /// <summary>To the parent: the node could not be reached; the client connection is untouched (not yet registered).</summary>
    public sealed record Failed(IActorRef Client, string Remote, Address Node, string Reason);

    /// <summary>Akka.IO acks a write with a Tcp.Event of our choosing (a class, so not a record).</summary>
    private sealed class Ack(bool toServer) : Tcp.Event
    {
        public bool ToServer { get; } = toServer;
    }
    private sealed record CloseTimeout;

    public static Props Props(IActorRef client, string remote, EndPoint target, Address node)
        => Akka.Actor.Props.Create(() => new TcpRelay(client, remote, target, node));

    private readonly IActorRef _client;
    private IActorRef _server = ActorRefs.Nobody;
    private readonly Direction _up = new();   // client -> server
    private readonly Direction _down = new(); // server -> client

    public ITimerScheduler Timers { get; set; } = null!;

    private sealed class Direction
    {
        public bool Writing;
        public bool Paused;
        public ByteString Queued = ByteString.Empty;
    }

    public TcpRelay(IActorRef client, string remote, EndPoint target, Address node)
    {
        _client = client;
        Context.System.Tcp().Tell(new Tcp.Connect(target, timeout: TimeSpan.FromSeconds(2)));
        Receive<Tcp.Connected>(_ =>
        {
            _server = Sender;
            _server.Tell(new Tcp.Register(Self));
            _client.Tell(new Tcp.Register(Self));
            Become(Relaying);
        });
        Receive<Tcp.CommandFailed>(f =>
        {
            Context.Parent.Tell(new Failed(client, remote, node, f.Cause.HasValue ? f.Cause.Value.Message : "connect failed"));
            Context.Stop(Self);
        });
    }

    private void Relaying()
    {
        Receive<Tcp.Received>(r =>
        {
            var toServer = Sender.Equals(_client);
            var dir = toServer ? _up : _down;
            var source = toServer ? _client : _server;
            if (!dir.Writing)
            {
                (toServer ? _server : _client).Tell(Tcp.Write.Create(r.Data, new Ack(toServer)));
                dir.Writing = true;
                return;
            }
            dir.Queued = dir.Queued.Concat(r.Data);
            if (!dir.Paused)
            {
                source.Tell(Tcp.SuspendReading.Instance);
                dir.Paused = true;
            }
        });
        Receive<Ack>(a =>
        {
            var dir = a.ToServer ? _up : _down;
            if (!dir.Queued.IsEmpty)
            {
                (a.ToServer ? _server : _client).Tell(Tcp.Write.Create(dir.Queued, new Ack(a.ToServer)));
                dir.Queued = ByteString.Empty;
                return;
            }
            dir.Writing = false;
            if (dir.Paused)
            {
                (a.ToServer ? _client : _server).Tell(Tcp.ResumeReading.Instance);
                dir.Paused = false;
            }
        });
        Receive<Tcp.ConnectionClosed>(_ =>
        {
            // the other side gets what is queued for it, then a close; then this relay goes
            var other = Sender.Equals(_client) ? _server : _client;
            var dir = Sender.Equals(_client) ? _up : _down;
            if (!dir.Queued.IsEmpty) other.Tell(Tcp.Write.Create(dir.Queued));
            other.Tell(Tcp.Close.Instance);
            Timers.StartSingleTimer("close", new CloseTimeout(), TimeSpan.FromSeconds(5));
            Become(() =>
            {
                Receive<Tcp.ConnectionClosed>(_ => Context.Stop(Self));
                Receive<CloseTimeout>(_ => Context.Stop(Self));
                ReceiveAny(_ => { });
            });
        });
    }
}
