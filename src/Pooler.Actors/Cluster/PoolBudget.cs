using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Sharding;
using Akka.Event;

namespace Pooler.Actors.Cluster;

/// <summary>
/// The cluster-wide <c>max-db-connections</c> of one database: a sharded entity (entity id = database
/// name) that leases server-connection quota to the nodes. Every node reports its quota, open connections
/// and refused opens every <see cref="BudgetAgent.Interval"/>; the answer is its new quota.
/// <para>
/// Never over the cap: a node is counted at the largest of what it was granted, the quota it applies and
/// the connections it has open, and quota is only handed out from what that count leaves free. Lowering
/// a node's quota frees nothing until the node reports that it applied it and closed the connections.
/// A node that leaves or is downed is forgotten (its quota is free again) once it is removed from the
/// cluster; an entity that starts afresh (its shard moved) hands out nothing for one
/// <see cref="Recovery"/>, while the nodes report what they hold.
/// </para>
/// </summary>
public sealed class PoolBudget : ReceiveActor
{
    public const string TypeName = "pool-budget";
    public static readonly TimeSpan Recovery = TimeSpan.FromMilliseconds(600);

    /// <summary>From a node's agent (<paramref name="Node"/>: its cluster address). <paramref name="Wanted"/>: opens refused by the quota since the last report.</summary>
    public sealed record Report(string Database, string Node, int Cap, int Quota, int Open, int Wanted);
    /// <summary>To the agent: the quota the node may use from now on.</summary>
    public sealed record Grant(string Database, int Quota);

    /// <summary>Routes reports to the entity of their database.</summary>
    public sealed class Extractor() : HashCodeMessageExtractor(maxNumberOfShards: 16)
    {
        public override string EntityId(object message) => message is Report r ? r.Database : "";
    }

    private sealed class NodeState
    {
        public int Granted;
        public int Quota;
        public int Open;
        public int Wanted;
        public int Counted => Math.Max(Granted, Math.Max(Quota, Open));
    }

    public static Props Props() => Akka.Actor.Props.Create(() => new PoolBudget());

    private readonly Dictionary<string, NodeState> _nodes = new();
    private readonly DateTime _startedAt = DateTime.UtcNow;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private int _cap;

    public PoolBudget()
    {
        Receive<Report>(OnReport);
        Receive<ClusterEvent.MemberRemoved>(r =>
        {
            if (_nodes.Remove(r.Member.Address.ToString(), out var gone))
                _log.Info("budget {0}: node {1} left the cluster; its quota of {2} is free", Self.Path.Name, r.Member.Address, gone.Counted);
        });
        Receive<ClusterEvent.CurrentClusterState>(_ => { });
    }

    protected override void PreStart()
        => Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot, typeof(ClusterEvent.MemberRemoved));

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);

    private void OnReport(Report r)
    {
        _cap = r.Cap;
        if (!_nodes.TryGetValue(r.Node, out var n))
        {
            n = new NodeState { Granted = r.Quota };
            _nodes[r.Node] = n;
        }
        n.Quota = r.Quota;
        n.Open = r.Open;
        n.Wanted = r.Wanted;

        if (DateTime.UtcNow - _startedAt < Recovery)
        {
            n.Granted = n.Quota; // recovering: hand out nothing new until every node has said what it holds
        }
        else
        {
            var free = _cap - _nodes.Values.Sum(x => x.Counted);
            // all that is free: a node opens servers only for waiting clients
            if (n.Wanted > 0 && free > 0) n.Granted = Math.Max(n.Granted, n.Quota) + free;
            if (_nodes.Values.Any(x => x != n && x.Wanted > 0))
            {
                // others wait: nobody keeps more than a fair share of the cap (it closes idle servers to get there)
                var contenders = Math.Max(1, _nodes.Values.Count(x => x.Wanted > 0 || x.Open > 0));
                n.Granted = Math.Min(n.Granted, Math.Max(1, _cap / contenders));
            }
        }
        // never above the cap, whatever the node asked
        var others = _nodes.Values.Where(x => x != n).Sum(x => x.Counted);
        n.Granted = Math.Clamp(n.Granted, 0, Math.Max(0, _cap - others));
        Sender.Tell(new Grant(r.Database, n.Granted));
    }
}

/// <summary>
/// One per pooler node, at <c>/user/budget-agent</c>: reports this node's use of every database with a
/// max-db-connections to its <see cref="PoolBudget"/> and applies the quota it is granted.
/// </summary>
public sealed class BudgetAgent : ReceiveActor, IWithTimers
{
    public const string Name = "budget-agent";
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(250);

    private sealed record Tick;

    public static Props Props(PoolerRuntime runtime, IActorRef region) => Akka.Actor.Props.Create(() => new BudgetAgent(runtime, region));

    public ITimerScheduler Timers { get; set; } = null!;

    public BudgetAgent(PoolerRuntime rt, IActorRef region)
    {
        var self = Akka.Cluster.Cluster.Get(Context.System).SelfAddress.ToString();
        var log = Context.GetLogger();
        var last = new Dictionary<string, int>();
        Receive<Tick>(_ =>
        {
            var settings = rt.Settings;
            var names = settings.Databases.Keys.Where(k => k != "*").Concat(rt.Budget.Databases()).Distinct();
            foreach (var name in names)
            {
                if (settings.FindDatabase(name) is not { } db) continue;
                var cap = settings.MaxDbConnectionsFor(db);
                if (cap <= 0) continue;
                var (quota, open, wanted) = rt.Budget.TakeReport(name);
                region.Tell(new PoolBudget.Report(name, self, cap, quota, open, wanted));
            }
        });
        Receive<PoolBudget.Grant>(g =>
        {
            rt.Budget.SetQuota(g.Database, g.Quota);
            if (last.GetValueOrDefault(g.Database, -1) != g.Quota)
                log.Info("budget node {0}: quota for {1} is now {2}", rt.NodeName, g.Database, g.Quota);
            last[g.Database] = g.Quota;
        });
    }

    protected override void PreStart() => Timers.StartPeriodicTimer("tick", new Tick(), Interval);
}
