using Prometheus;

namespace Pooler.Actors.Ops;

/// <summary>
/// The Prometheus series (prometheus-net, default registry). Gauges and counters are set from the node's
/// report at each scrape (counters move forward with IncTo); the wait histogram is observed when a
/// queued client gets its server. The series of a member that left the cluster are removed, so that a
/// replaced node does not keep exporting its last values.
/// </summary>
public static class PoolerMetrics
{
    private static readonly string[] Pool = ["database", "user"];

    public static readonly Histogram WaitSeconds = Metrics.CreateHistogram("pooler_client_wait_seconds",
        "How long queued clients waited for a server connection.",
        new HistogramConfiguration { LabelNames = Pool, Buckets = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30] });

    private static readonly Gauge Clients = Metrics.CreateGauge("pooler_clients", "Logged-in clients by state (active, waiting).",
        new GaugeConfiguration { LabelNames = [.. Pool, "state"] });
    private static readonly Gauge Servers = Metrics.CreateGauge("pooler_servers", "Server connections by state (active, idle, used, tested, login).",
        new GaugeConfiguration { LabelNames = [.. Pool, "state"] });
    private static readonly Gauge MaxWait = Metrics.CreateGauge("pooler_pool_maxwait_seconds", "Age of the oldest queued client.", new GaugeConfiguration { LabelNames = Pool });
    private static readonly Gauge Paused = Metrics.CreateGauge("pooler_pool_paused", "1 while the pool is paused (PAUSE/KILL).", new GaugeConfiguration { LabelNames = Pool });
    private static readonly Counter Xacts = Metrics.CreateCounter("pooler_transactions_total", "Transactions (and queries outside one) completed.", new CounterConfiguration { LabelNames = Pool });
    private static readonly Counter Queries = Metrics.CreateCounter("pooler_queries_total", "Queries completed (ReadyForQuery answers).", new CounterConfiguration { LabelNames = Pool });
    private static readonly Counter Received = Metrics.CreateCounter("pooler_received_bytes_total", "Bytes received from clients.", new CounterConfiguration { LabelNames = Pool });
    private static readonly Counter Sent = Metrics.CreateCounter("pooler_sent_bytes_total", "Bytes sent to clients.", new CounterConfiguration { LabelNames = Pool });
    private static readonly Counter XactTime = Metrics.CreateCounter("pooler_transaction_seconds_total", "Time spent in transactions.", new CounterConfiguration { LabelNames = Pool });
    private static readonly Counter QueryTime = Metrics.CreateCounter("pooler_query_seconds_total", "Time spent in queries.", new CounterConfiguration { LabelNames = Pool });
    private static readonly Counter ClientParses = Metrics.CreateCounter("pooler_client_parses_total", "Named Parse messages from clients (prepared statements).", new CounterConfiguration { LabelNames = Pool });
    private static readonly Counter ServerParses = Metrics.CreateCounter("pooler_server_parses_total", "Parse messages sent to servers to prepare named statements there.", new CounterConfiguration { LabelNames = Pool });
    private static readonly Counter Binds = Metrics.CreateCounter("pooler_binds_total", "Bind messages of named prepared statements.", new CounterConfiguration { LabelNames = Pool });
    private static readonly Counter Errors = Metrics.CreateCounter("pooler_errors_total", "Errors the pooler itself sent to clients, by SQLSTATE.", new CounterConfiguration { LabelNames = ["sqlstate"] });
    private static readonly Gauge ClientsTotal = Metrics.CreateGauge("pooler_client_connections", "Client connections open on this node (any state).");
    private static readonly Gauge ServersTotal = Metrics.CreateGauge("pooler_server_connections", "Server connections open on this node.");
    private static readonly Gauge Draining = Metrics.CreateGauge("pooler_draining", "1 while the node drains.");
    private static readonly Gauge Backend = Metrics.CreateGauge("pooler_backend_reachable", "1 when a configured backend accepts TCP connections.");
    private static readonly Gauge VipHeld = Metrics.CreateGauge("pooler_vip_held", "1 on the node that holds the VIP.");
    private static readonly Gauge VipOwner = Metrics.CreateGauge("pooler_vip_owner", "1 for the node the VIP owner singleton assigns the VIP to.", new GaugeConfiguration { LabelNames = ["node"] });
    private static readonly Gauge Members = Metrics.CreateGauge("pooler_cluster_members", "Cluster members by status as this node sees them.", new GaugeConfiguration { LabelNames = ["status"] });
    private static readonly Gauge Unreachable = Metrics.CreateGauge("pooler_cluster_unreachable_members", "Members this node sees as unreachable.");

    private static readonly string[] ServerStates = ["active", "idle", "used", "tested", "login"];
    private static readonly string[] MemberStatuses = Enum.GetNames<Akka.Cluster.MemberStatus>();

    // scrapes may run concurrently: one at a time, so that a member's series is not removed while another scrape sets it
    private static readonly object Gate = new();
    private static HashSet<string> _members = [];

    /// <summary>Brings every series up to date with this report (called before each scrape).</summary>
    public static void Update(NodeReport node, OpsAgent.ClusterReport? cluster)
    {
        lock (Gate) UpdateLocked(node, cluster);
    }

    private static void UpdateLocked(NodeReport node, OpsAgent.ClusterReport? cluster)
    {
        foreach (var p in node.Pools)
        {
            string[] l = [p.Info.Database, p.Info.User];
            Clients.WithLabels([.. l, "active"]).Set(p.ClActive);
            Clients.WithLabels([.. l, "waiting"]).Set(p.ClWaiting);
            int[] sv = [p.SvActive, p.SvIdle, p.SvUsed, p.SvTested, p.SvLogin];
            for (var i = 0; i < ServerStates.Length; i++) Servers.WithLabels([.. l, ServerStates[i]]).Set(sv[i]);
            MaxWait.WithLabels(l).Set(p.Info.MaxWaitUs / 1e6);
            Paused.WithLabels(l).Set(p.Info.Paused ? 1 : 0);
            var t = p.Info.Totals;
            Xacts.WithLabels(l).IncTo(t.Xacts);
            Queries.WithLabels(l).IncTo(t.Queries);
            ClientParses.WithLabels(l).IncTo(t.ClientParses);
            ServerParses.WithLabels(l).IncTo(t.ServerParses);
            Binds.WithLabels(l).IncTo(t.Binds);
            Received.WithLabels(l).IncTo(t.Received);
            Sent.WithLabels(l).IncTo(t.Sent);
            XactTime.WithLabels(l).IncTo(t.XactUs / 1e6);
            QueryTime.WithLabels(l).IncTo(t.QueryUs / 1e6);
        }
        foreach (var (state, n) in node.Errors) Errors.WithLabels(state).IncTo(n);
        ClientsTotal.Set(node.Clients);
        ServersTotal.Set(node.Servers);
        Draining.Set(node.Draining ? 1 : 0);
        Backend.Set(node.BackendReachable ? 1 : 0);
        if (cluster == null) return;
        VipHeld.Set(cluster.Vip?.HeldHere == true ? 1 : 0);
        var members = cluster.Members.Select(m => m.Address).ToHashSet();
        foreach (var m in members) VipOwner.WithLabels(m).Set(cluster.Vip?.Holder == m ? 1 : 0);
        foreach (var gone in _members.Where(m => !members.Contains(m))) VipOwner.RemoveLabelled(gone);
        _members = members;
        foreach (var s in MemberStatuses) Members.WithLabels(s).Set(cluster.Members.Count(m => m.Status == s));
        Unreachable.Set(cluster.Members.Count(m => !m.Reachable));
    }
}
