using Akka.Actor;

namespace Pooler.Actors.Cluster;

/// <summary>
/// One per pooler node, at <c>/user/node-info</c>: tells the VIP owner where this node's own listener is,
/// so it can relay clients here.
/// </summary>
public sealed class NodeInfo : ReceiveActor
{
    public const string Name = "node-info";

    public sealed record GetListen;
    /// <summary><paramref name="Host"/> as configured ("0.0.0.0" means: any of this node's addresses).</summary>
    public sealed record Listen(string Host, int Port);

    public static Props Props(string host, int port) => Akka.Actor.Props.Create(() => new NodeInfo(host, port));

    public NodeInfo(string host, int port)
    {
        Receive<GetListen>(_ => Sender.Tell(new Listen(host, port)));
    }
}
