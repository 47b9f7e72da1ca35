using System.Net;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;

namespace Pooler.Actors.Cluster;

/// <summary>
/// Watches the cluster for the VIP listener (its parent) and tells it which other pooler nodes may take
/// clients: Up, reachable, not leaving, with the listen address their <see cref="NodeInfo"/> gave.
/// </summary>
public sealed class VipTargets : ReceiveActor
{
    /// <summary>To the parent: the nodes a client may be relayed to now.</summary>
    public sealed record Changed(IReadOnlyDictionary<Address, EndPoint> Remotes);

    private sealed record Refresh;

    public static Props Props() => Akka.Actor.Props.Create(() => new VipTargets());

    private readonly Akka.Cluster.Cluster _cluster = Akka.Cluster.Cluster.Get(Context.System);
    private readonly Dictionary<Address, EndPoint> _listen = new();
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private string _last = "";

    public VipTargets()
    {
        Receive<ClusterEvent.IMemberEvent>(_ => Update());
        Receive<ClusterEvent.IReachabilityEvent>(_ => Update());
        Receive<ClusterEvent.CurrentClusterState>(_ => Update());
        Receive<NodeInfo.Listen>(l =>
        {
            var node = Sender.Path.Address;
            // "any address" on that node: reach it at the address it has in the cluster
            var host = l.Host is "0.0.0.0" or "*" or "" or "::" ? node.Host! : l.Host == "localhost" ? "127.0.0.1" : l.Host;
            _listen[node] = new IPEndPoint(IPAddress.Parse(host), l.Port);
            Update();
        });
        Receive<Refresh>(_ => Update());
    }

    protected override void PreStart()
        => _cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot,
            typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));

    protected override void PostStop() => _cluster.Unsubscribe(Self);

    private void Update()
    {
        var state = _cluster.State;
        var ready = new Dictionary<Address, EndPoint>();
        foreach (var m in state.Members)
        {
            if (!m.HasRole(ClusterNode.Role) || m.Status != MemberStatus.Up || state.Unreachable.Contains(m)) continue;
            if (m.Address.Equals(_cluster.SelfAddress)) continue;
            if (_listen.TryGetValue(m.Address, out var e)) ready[m.Address] = e;
            else Context.ActorSelection(new RootActorPath(m.Address) / "user" / NodeInfo.Name).Tell(new NodeInfo.GetListen());
        }
        var text = string.Join(", ", ready.Select(r => $"{r.Key.Host}:{r.Key.Port}->{r.Value}"));
        if (text == _last) return;
        _last = text;
        _log.Info("vip routing node {0}: other nodes taking clients: [{1}]", _cluster.SelfAddress, text);
        Context.Parent.Tell(new Changed(ready));
    }
}
