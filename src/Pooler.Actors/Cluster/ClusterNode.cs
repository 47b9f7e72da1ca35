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

    /// <summary>Reaches the VipOwner wherever it runs.</summary>
    public IActorRef VipProxy { get; }

    public Akka.Cluster.Cluster Cluster => Akka.Cluster.Cluster.Get(_system);

    /// <summary>Starts the witness (every node). On a pooler node also the VIP singleton; a stale copy of a
    /// linux VIP left on this machine by a previous run is removed first.</summary>
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
        var managerSettings = ClusterSingletonManagerSettings.Create(system).WithRole(Role).WithSingletonName("owner");
        system.ActorOf(ClusterSingletonManager.Props(VipOwner.Props(runtime), new VipOwner.HandOver(), managerSettings), "vip-owner");
        var proxySettings = ClusterSingletonProxySettings.Create(system).WithRole(Role).WithSingletonName("owner");
        var proxy = system.ActorOf(ClusterSingletonProxy.Props("/user/vip-owner", proxySettings), "vip-owner-proxy");
        return new ClusterNode(system, proxy);
    }

    /// <summary>The witness alone (Lighthouse: it votes but holds no VIP).</summary>
    public static IActorRef StartWitness(ActorSystem system) => system.ActorOf(VipWitness.Props(), VipWitness.Name);

    /// <summary>Leaves the cluster (the VIP, if here, is handed over first); completes once removed or after <paramref name="timeout"/>.</summary>
    public async Task LeaveAsync(TimeSpan timeout)
    {
        try { await Cluster.LeaveAsync().WaitAsync(timeout); }
        catch (TimeoutException) { }
    }
}
