using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using Pooler.Actors.Client;
using Pooler.Actors.Server;

namespace Pooler.Actors.Cluster;

/// <summary>
/// The node part of a cancel key. In a cluster each node mints BackendKeyData whose process id carries
/// its tag (bits 21-30), so a CancelRequest that reaches another node (a client that lists several
/// hosts, a VIP relayed elsewhere) can be sent on to the node that owns the key.
/// </summary>
public static class NodeTag
{
    public const int Bits = 10;
    public const int Shift = 21;
    private const int Mask = (1 << Bits) - 1;

    /// <summary>1..1023 from a member's unique address (FNV-1a: the same on every node, unlike string.GetHashCode).</summary>
    public static int Of(UniqueAddress node)
    {
        var hash = 2166136261u;
        foreach (var c in node.ToString())
        {
            hash ^= c;
            hash *= 16777619u;
        }
        return (int)(hash % Mask) + 1;
    }

    /// <summary>The tag a minted process id carries (0: minted by a node outside a cluster).</summary>
    public static int FromPid(int pid) => (pid >> Shift) & Mask;

    /// <summary>A process id with <paramref name="tag"/> in its tag bits and <paramref name="random"/> below them.</summary>
    public static int Pid(int tag, int random) => tag == 0 ? random : (tag << Shift) | (random & ((1 << Shift) - 1));
}

/// <summary>
/// One per pooler node in a cluster, at <c>/user/cancel-forwarder</c>. A CancelRequest whose key this node
/// did not mint is sent to the forwarder of the node whose tag the key carries; that node cancels the
/// query as if the request had come to it, and the requesting connection is closed once it has.
/// </summary>
public sealed class CancelForwarder : ReceiveActor
{
    public const string Name = "cancel-forwarder";

    /// <summary>From a local ClientSession: a key not known here. <paramref name="ReplyTo"/> gets CancelSender.Done.</summary>
    public sealed record Forward(int Pid, int Secret, IActorRef ReplyTo);
    /// <summary>Between nodes: cancel this key if it is yours.</summary>
    public sealed record Remote(int Pid, int Secret, IActorRef ReplyTo);

    public static Props Props(PoolerRuntime runtime) => Akka.Actor.Props.Create(() => new CancelForwarder(runtime));

    public CancelForwarder(PoolerRuntime rt)
    {
        var log = Context.GetLogger();
        var cluster = Akka.Cluster.Cluster.Get(Context.System);
        Receive<Forward>(f =>
        {
            var tag = NodeTag.FromPid(f.Pid);
            var owners = cluster.State.Members
                .Where(m => m.HasRole(ClusterNode.Role) && m.Status is MemberStatus.Up or MemberStatus.Leaving
                    && !m.UniqueAddress.Equals(cluster.SelfUniqueAddress) && NodeTag.Of(m.UniqueAddress) == tag)
                .ToList();
            log.Info("cancel node {0}: key {1} is not ours; {2}", rt.NodeName, f.Pid,
                owners.Count == 0 ? "no node carries its tag" : $"sent to {string.Join(", ", owners.Select(o => o.Address))}");
            if (owners.Count == 0) { f.ReplyTo.Tell(new CancelSender.Done()); return; }
            // tags may collide: every node with the tag checks the full key; only the owner acts
            foreach (var m in owners)
                Context.ActorSelection(new RootActorPath(m.Address) / "user" / Name).Tell(new Remote(f.Pid, f.Secret, f.ReplyTo));
        });
        Receive<Remote>(r =>
        {
            var target = rt.Cancels.Find(r.Pid, r.Secret);
            log.Info("cancel node {0}: forwarded cancel request for key {1}: {2}", rt.NodeName, r.Pid, target is null ? "no such key" : "cancelling");
            if (target is null) r.ReplyTo.Tell(new CancelSender.Done());
            else target.Tell(new ClientSession.CancelRequested(r.ReplyTo));
        });
    }
}
