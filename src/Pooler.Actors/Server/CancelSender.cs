using System.Net;
using Akka.Actor;
using Akka.IO;
using Pooler.Actors.Protocol;

namespace Pooler.Actors.Server;

/// <summary>
/// Opens a fresh connection to the server, sends one CancelRequest, and goes away. When PostgreSQL has
/// closed that connection it has signalled the backend, so <c>notify</c> then learns the cancel is out.
/// </summary>
public sealed class CancelSender : ReceiveActor
{
    /// <summary>To <c>notify</c>: the cancel has been delivered (or could not be).</summary>
    public sealed record Done;

    public static Props Props(EndPoint endpoint, int pid, int secret, IActorRef? notify = null)
        => Akka.Actor.Props.Create(() => new CancelSender(endpoint, pid, secret, notify));

    public CancelSender(EndPoint endpoint, int pid, int secret, IActorRef? notify)
    {
        Context.System.Tcp().Tell(new Tcp.Connect(endpoint, timeout: TimeSpan.FromSeconds(5)));
        Receive<Tcp.Connected>(_ =>
        {
            Sender.Tell(new Tcp.Register(Self));
            Sender.Tell(Tcp.Write.Create(ByteString.FromBytes(PgMessages.CancelRequest(pid, secret))));
            // half-close and wait for PostgreSQL's close: by then it has signalled the backend
            Sender.Tell(Tcp.ConfirmedClose.Instance);
        });
        Receive<Tcp.ConnectionClosed>(_ => Context.Stop(Self));
        Receive<Tcp.CommandFailed>(_ => Context.Stop(Self));
        SetReceiveTimeout(TimeSpan.FromSeconds(10));
        Receive<ReceiveTimeout>(_ => Context.Stop(Self));
        _notify = notify;
    }

    private readonly IActorRef? _notify;

    protected override void PostStop() => _notify?.Tell(new Done());
}

