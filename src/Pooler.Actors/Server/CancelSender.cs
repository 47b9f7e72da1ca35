using System.Net;
using Akka.Actor;
using Akka.IO;
using Pooler.Actors.Protocol;

namespace Pooler.Actors.Server;

/// <summary>Opens a fresh connection to the server, sends one CancelRequest, and goes away.</summary>
public sealed class CancelSender : ReceiveActor
{
    public static Props Props(EndPoint endpoint, int pid, int secret)
        => Akka.Actor.Props.Create(() => new CancelSender(endpoint, pid, secret));

    public CancelSender(EndPoint endpoint, int pid, int secret)
    {
        Context.System.Tcp().Tell(new Tcp.Connect(endpoint, timeout: TimeSpan.FromSeconds(5)));
        Receive<Tcp.Connected>(_ =>
        {
            Sender.Tell(new Tcp.Register(Self));
            Sender.Tell(Tcp.Write.Create(ByteString.FromBytes(PgMessages.CancelRequest(pid, secret))));
            Sender.Tell(Tcp.Close.Instance);
        });
        Receive<Tcp.ConnectionClosed>(_ => Context.Stop(Self));
        Receive<Tcp.CommandFailed>(_ => Context.Stop(Self));
        SetReceiveTimeout(TimeSpan.FromSeconds(10));
        Receive<ReceiveTimeout>(_ => Context.Stop(Self));
    }
}
