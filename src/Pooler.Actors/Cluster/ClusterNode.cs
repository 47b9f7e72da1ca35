using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Sharding;
using Akka.Cluster.Tools.Singleton;
using Akka.Event;
using Pooler.Actors.Config;

namespace Pooler.Actors.Cluster;

/// <summary>
/// A pooler node's part in the cluster: its VIP witness, the VipOwner singleton manager (role
/// <c>pooler</c>) and a proxy to it, and leaving in order.
/// </summary>
public sealed class ClusterNode
{
    public const string Role = "pooler";

    private readonly ActorSystem _system;

    private ClusterNode(ActorSystem system, IActorRef vipProxy)
    {
        _system = system;
        VipProxy = vipProxy;
    }

    /// <summary>Reaches the VipOwner wherever it runs (<see cref="VipOwner.MoveTo"/>, <see cref="VipOwner.GetStatus"/>).</summary>
    public IActorRef VipProxy { get; }

    /// <summary>This node's VipHolder.</summary>
    public IActorRef Holder { get; private init; } = ActorRefs.Nobody;

    /// <summary>Moves the VIP to the pooler node at <paramref name="node"/> (akka.tcp://pooler@host:port).</summary>
    public Task<VipOwner.MoveResult> MoveVipAsync(string node, TimeSpan timeout)
        => VipProxy.Ask<VipOwner.MoveResult>(new VipOwner.MoveTo(node), timeout);

    public Akka.Cluster.Cluster Cluster => Akka.Cluster.Cluster.Get(_system);

    /// <summary>Starts a pooler node's cluster actors: node info, VIP witness, cancel forwarder, budget agent (and
    /// the PoolBudget shard region), VIP holder, and the VipOwner singleton manager with its proxy. A stale copy
    /// of a linux VIP left on this machine by a previous run is removed first.</summary>
    /// <param name="listenPort">The port this node's own listener got (pooler.listen.port may be 0).</param>
    public static ClusterNode Start(ActorSystem system, PoolerRuntime runtime, int listenPort)
    {
        system.ActorOf(NodeInfo.Props(runtime.Settings.Listen.Host, listenPort), NodeInfo.Name);
        StartWitness(system);
        var cluster = Akka.Cluster.Cluster.Get(system);
        runtime.Cancels.NodeTag = NodeTag.Of(cluster.SelfUniqueAddress);
        runtime.CancelForwarder = system.ActorOf(CancelForwarder.Props(runtime), CancelForwarder.Name);
        // max-db-connections becomes a cluster-wide cap, leased to the nodes by a sharded PoolBudget per database
        runtime.Budget.EnableClusterQuotas();
        var region = ClusterSharding.Get(system).Start(PoolBudget.TypeName, PoolBudget.Props(),
            ClusterShardingSettings.Create(system).WithRole(Role), new PoolBudget.Extractor());
        system.ActorOf(BudgetAgent.Props(runtime, region), BudgetAgent.Name);
        var vip = runtime.Settings.Vip;
        if (vip.Driver == VipDriverKind.Linux)
        {
            new LinuxVipDriver(vip).Down();
            Logging.GetLogger(system, "vip").Info("vip node {0}: removed any stale copy of {1}", runtime.NodeName, vip.Address);
        }
        var holder = system.ActorOf(VipHolder.Props(runtime), VipHolder.Name);
        var managerSettings = ClusterSingletonManagerSettings.Create(system).WithRole(Role).WithSingletonName("owner");
        system.ActorOf(ClusterSingletonManager.Props(VipOwner.Props(vip.PreferredNode), new VipOwner.HandOver(), managerSettings), "vip-owner");
        var proxy = StartVipProxy(system);
        runtime.VipProxy = proxy;
        runtime.VipHolder = holder;
        return new ClusterNode(system, proxy) { Holder = holder };
    }

    /// <summary>A proxy to the VipOwner singleton at <c>/user/vip-owner-proxy</c> (pooler nodes and the Lighthouse, for pbm).</summary>
    public static IActorRef StartVipProxy(ActorSystem system)
    {
        var proxySettings = ClusterSingletonProxySettings.Create(system).WithRole(Role).WithSingletonName("owner");
        return system.ActorOf(ClusterSingletonProxy.Props("/user/vip-owner", proxySettings), "vip-owner-proxy");
    }

    /// <summary>The witness alone (Lighthouse: it votes but holds no VIP).</summary>
    public static IActorRef StartWitness(ActorSystem system) => system.ActorOf(VipWitness.Props(), VipWitness.Name);

    /// <summary>Leaves the cluster; a VIP held here is released first, so the next holder need not wait out its
    /// lease. Completes once removed or after <paramref name="timeout"/>.</summary>
    public async Task LeaveAsync(TimeSpan timeout)
    {
        // the VIP moves to another node first (the singleton tells that one to take it as soon as this one let go);
        // if the singleton cannot be reached, this node at least lets go of it
        try { await VipProxy.Ask<VipOwner.MoveResult>(new VipOwner.MoveAway(Cluster.SelfAddress.ToString()), TimeSpan.FromSeconds(3)); }
        catch (Exception e) when (e is TimeoutException or AskTimeoutException) { }
        try { await Holder.Ask<VipHolder.Released>(new VipHolder.Release(), TimeSpan.FromSeconds(2)); }
        catch (Exception e) when (e is TimeoutException or AskTimeoutException) { }
        try { await Cluster.LeaveAsync().WaitAsync(timeout); }
        catch (TimeoutException) { }
    }
}
