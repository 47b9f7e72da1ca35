using System.Text.Json;
using System.Text.Json.Nodes;
using Akka.Actor;
using Akka.Cluster;
using Pooler.Actors.Cluster;

namespace Pooler.Actors.Ops;

/// <summary>A pbm command's answer: text lines, an optional JSON value (--json), exit code 0/1 and why.</summary>
public sealed record PbmResult(IReadOnlyList<string> Lines, JsonNode? Json, int Exit, string? Error)
{
    public static PbmResult Fail(string error) => new([], null, 1, error);
    public static PbmResult Ok(IReadOnlyList<string> lines, object? json) => new(lines, json == null ? null : JsonSerializer.SerializeToNode(json, PbmCommands.JsonOptions), 0, null);
}

/// <summary>
/// pbm's palettes (cluster, pool, vip, node), run on the node the CLI is connected to; cluster-wide
/// commands ask every member's OpsAgent. Text for people, the same data as JSON for scripts.
/// </summary>
public sealed class PbmCommands(ActorSystem system, IActorRef ops)
{
    public static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    public sealed record Spec(string Command, string Args, string Help);

    public static readonly Spec[] All =
    [
        new("cluster show", "", "every member: address, roles, status, reachability, leader, VIP holder"),
        new("cluster status", "", "this node's membership status"),
        new("cluster leader", "", "the cluster leader"),
        new("cluster leave", "[address]", "drain a node (default this one): VIP away, clients finish, leave, exit 0"),
        new("cluster down", "<address>", "mark a member down (it is removed; use for a node known dead)"),
        new("cluster down-unreachable", "", "down every unreachable member"),
        new("cluster join", "<address>", "make this node join the cluster at address"),
        new("cluster tail", "", "stream membership events until Ctrl-C"),
        new("pool show", "", "pools of the whole cluster, summed, then per node"),
        new("pool stats", "", "transaction, query, byte and wait totals per database, cluster-wide and per node"),
        new("pool clients", "", "every client of every node"),
        new("pool servers", "", "every server connection of every node"),
        new("pool pause", "[db]", "on every node: wait for open transactions, hold new ones, close servers"),
        new("pool resume", "[db]", "on every node: resume paused pools"),
        new("pool reload", "", "on every node: re-read the configuration (databases, users, pool settings)"),
        new("pool kill", "<db>", "on every node: close the database's clients and servers now; new clients wait for resume"),
        new("pool reconnect", "[db]", "on every node: replace server connections as they become idle"),
        new("vip show", "", "the VIP: address, driver, which node holds it"),
        new("vip move", "<node>", "move the VIP to a pooler node (address or host:port)"),
        new("node status", "", "this node: address, roles, clients, servers, draining, backend reachable"),
        new("node drain", "", "drain this node like SIGTERM and exit"),
        new("help", "", "this list"),
    ];

    public async Task<PbmResult> RunAsync(string[] args, bool json)
    {
        var words = string.Join(' ', args.Take(2));
        var rest = args.Skip(2).ToArray();
        try
        {
            return words switch
            {
                "help" or "help --json" => Ok(All.Select(s => $"{(s.Command + " " + s.Args).Trim(),-32} {s.Help}").ToList(), All.Select(s => new { command = s.Command, args = s.Args, help = s.Help })),
                "cluster show" => await ClusterShow(),
                "cluster status" => await ClusterStatus(),
                "cluster leader" => Clustered(out var c) ? Ok([c.State.Leader?.ToString() ?? "(none)"], new { leader = c.State.Leader?.ToString() }) : NotClustered(),
                "cluster leave" => await Leave(rest.FirstOrDefault()),
                "cluster down" => rest.Length == 1 ? Down([rest[0]]) : PbmResult.Fail("usage: cluster down <address>"),
                "cluster down-unreachable" => Clustered(out var cu) ? Down(cu.State.Unreachable.Select(m => m.Address.ToString()).ToList()) : NotClustered(),
                "cluster join" => rest.Length == 1 ? Join(rest[0]) : PbmResult.Fail("usage: cluster join <address>"),
                "pool show" => await PoolShow(),
                "pool stats" => await PoolStats(),
                "pool clients" => await Rows(clients: true),
                "pool servers" => await Rows(clients: false),
                "pool pause" => await Everywhere("PAUSE", rest.FirstOrDefault()),
                "pool resume" => await Everywhere("RESUME", rest.FirstOrDefault()),
                "pool reload" => await Everywhere("RELOAD", null),
                "pool kill" => rest.Length == 1 ? await Everywhere("KILL", rest[0]) : PbmResult.Fail("usage: pool kill <db>"),
                "pool reconnect" => await Everywhere("RECONNECT", rest.FirstOrDefault()),
                "vip show" => await VipShow(),
                "vip move" => rest.Length == 1 ? await VipMove(rest[0]) : PbmResult.Fail("usage: vip move <node>"),
                "node status" => await NodeStatus(),
                "node drain" => await Control(ops, "DRAIN", null),
                _ => PbmResult.Fail($"unknown command '{string.Join(' ', args)}'; try help"),
            };
        }
        catch (Exception e) when (e is AskTimeoutException or TaskCanceledException or TimeoutException)
        {
            return PbmResult.Fail($"no answer in time: {e.Message}");
        }
    }

    private static PbmResult Ok(IReadOnlyList<string> lines, object? json) => PbmResult.Ok(lines, json);

    private bool Clustered(out Akka.Cluster.Cluster cluster)
    {
        cluster = null!;
        if (!ClusterConfig.IsClustered(system)) return false;
        cluster = Akka.Cluster.Cluster.Get(system);
        return true;
    }

    private static PbmResult NotClustered() => PbmResult.Fail("this node is not in a cluster (akka.cluster.seed-nodes is not set)");

    private Task<OpsAgent.ClusterReport> ClusterReport() => ops.Ask<OpsAgent.ClusterReport>(new OpsAgent.GetCluster(), Timeout);

    private async Task<PbmResult> ClusterShow()
    {
        if (!Clustered(out _)) return NotClustered();
        var r = await ClusterReport();
        var t = new TextTable("MEMBER", "STATUS", "ROLES", "REACHABLE", "LEADER", "VIP");
        foreach (var m in r.Members)
            t.Add(m.Address, m.Status, string.Join(",", m.Roles), m.Reachable ? "yes" : "NO", m.Leader ? "leader" : "", r.Vip?.Holder == m.Address ? "holds VIP" : "");
        return Ok(t.Lines(), new { members = r.Members, vip = r.Vip });
    }

    private async Task<PbmResult> ClusterStatus()
    {
        if (!Clustered(out var c)) return NotClustered();
        var r = await ClusterReport();
        var self = r.Members.FirstOrDefault(m => m.Address == r.Self);
        var status = self?.Status ?? c.SelfMember.Status.ToString();
        return Ok([$"{r.Self} is {status}; {r.Members.Count} members, {r.Members.Count(m => !m.Reachable)} unreachable"],
            new { self = r.Self, status, members = r.Members.Count, unreachable = r.Members.Count(m => !m.Reachable) });
    }

    /// <summary>"akka.tcp://pooler@10.0.0.1:4053", "pooler@10.0.0.1:4053" or "10.0.0.1:4053".</summary>
    private static bool Matches(Address a, string text)
    {
        var t = text.Trim();
        return a.ToString() == t || $"{a.Host}:{a.Port}" == t || $"{a.System}@{a.Host}:{a.Port}" == t;
    }

    private Address? Find(string text) => Clustered(out var c) ? c.State.Members.FirstOrDefault(m => Matches(m.Address, text))?.Address : null;

    private async Task<PbmResult> Leave(string? address)
    {
        if (!Clustered(out var c)) return NotClustered();
        if (address == null) return await Control(ops, "DRAIN", null);
        var target = Find(address);
        if (target == null) return PbmResult.Fail($"no member at {address}");
        if (target == c.SelfAddress) return await Control(ops, "DRAIN", null);
        // a node leaves in order only by draining itself; plain Leave if it cannot be asked
        try
        {
            var remote = await system.ActorSelection(new RootActorPath(target) / "user" / OpsAgent.Name).ResolveOne(Timeout);
            return await Control(remote, "DRAIN", null);
        }
        catch (ActorNotFoundException)
        {
            c.Leave(target);
            return Ok([$"{target} asked to leave (its node did not answer; it leaves without draining)"], new { leaving = target.ToString() });
        }
    }

    private PbmResult Down(IReadOnlyList<string> addresses)
    {
        if (!Clustered(out var c)) return NotClustered();
        var downed = new List<string>();
        foreach (var a in addresses)
        {
            var target = Find(a);
            if (target == null) return PbmResult.Fail($"no member at {a}");
            c.Down(target);
            downed.Add(target.ToString());
        }
        return Ok(downed.Count == 0 ? ["no unreachable member"] : downed.Select(d => $"{d} marked down").ToList(), new { downed });
    }

    private PbmResult Join(string address)
    {
        if (!Clustered(out var c)) return NotClustered();
        Address target;
        try { target = Address.Parse(address.Contains("://") ? address : $"akka.tcp://{ClusterConfig.SystemName}@{address}"); }
        catch (Exception e) { return PbmResult.Fail($"not a cluster address: {address} ({e.Message})"); }
        c.Join(target);
        return Ok([$"joining {target}"], new { joining = target.ToString() });
    }

    private async Task<List<NodeReport>> Reports(bool rows)
    {
        var (reports, _) = await OpsAgent.GatherAsync(system, ops, rows, Timeout);
        return reports;
    }

    private async Task<PbmResult> PoolShow()
    {
        var reports = await Reports(false);
        var pools = reports.SelectMany(r => r.Pools).ToList();
        var t = new TextTable("NODE", "DATABASE", "USER", "CL_ACTIVE", "CL_WAITING", "SV_ACTIVE", "SV_IDLE", "SV_USED", "SV_LOGIN", "MAXWAIT_MS", "MODE", "PAUSED");
        foreach (var g in pools.GroupBy(p => (p.Info.Database, p.Info.User)).OrderBy(g => g.Key))
        {
            t.Add("(cluster)", g.Key.Database, g.Key.User, g.Sum(p => p.ClActive), g.Sum(p => p.ClWaiting), g.Sum(p => p.SvActive), g.Sum(p => p.SvIdle),
                g.Sum(p => p.SvUsed), g.Sum(p => p.SvLogin), g.Max(p => p.Info.MaxWaitUs) / 1000, g.First().Info.Mode, g.All(p => p.Info.Paused) ? "yes" : g.Any(p => p.Info.Paused) ? "some" : "no");
            foreach (var p in g.OrderBy(p => p.Node))
                t.Add("  " + p.Node, p.Info.Database, p.Info.User, p.ClActive, p.ClWaiting, p.SvActive, p.SvIdle, p.SvUsed, p.SvLogin, p.Info.MaxWaitUs / 1000, p.Info.Mode, p.Info.Paused ? "yes" : "no");
        }
        var lines = pools.Count == 0 ? new List<string> { $"no pools yet on {reports.Count} node(s)" } : t.Lines();
        return Ok(lines, new { nodes = reports.Select(r => new { node = r.Node, pools = r.Pools }) });
    }

    private async Task<PbmResult> PoolStats()
    {
        var reports = await Reports(false);
        var t = new TextTable("NODE", "DATABASE", "XACTS", "QUERIES", "RECEIVED", "SENT", "XACT_TIME_US", "QUERY_TIME_US", "WAIT_TIME_US");
        var byDb = reports.SelectMany(r => r.Pools).GroupBy(p => p.Info.Database).OrderBy(g => g.Key);
        foreach (var g in byDb)
        {
            void Row(string node, IEnumerable<PoolReport> ps)
            {
                var s = ps.Aggregate(PoolTotals.Zero, (a, p) => a.Plus(p.Info.Totals));
                t.Add(node, g.Key, s.Xacts, s.Queries, s.Received, s.Sent, s.XactUs, s.QueryUs, s.WaitUs);
            }
            Row("(cluster)", g);
            foreach (var n in g.GroupBy(p => p.Node).OrderBy(n => n.Key)) Row("  " + n.Key, n);
        }
        return Ok(t.Lines(), new { nodes = reports.Select(r => new { node = r.Node, pools = r.Pools.Select(p => new { p.Info.Database, p.Info.User, p.Info.Totals }) }) });
    }

    private async Task<PbmResult> Rows(bool clients)
    {
        var reports = await Reports(true);
        var rows = reports.SelectMany(r => (clients ? r.ClientRows : r.ServerRows) ?? []).ToList();
        var t = new TextTable("NODE", "USER", "DATABASE", "STATE", "ADDR", "PORT", "CONNECTED", "WAIT_MS", "ID", "LINK", clients ? "APP" : "BACKEND_PID");
        foreach (var r in rows.OrderBy(r => r.Node).ThenBy(r => r.ConnectTime))
            t.Add(r.Node, r.User, r.Database, r.State, r.Addr, r.Port, r.ConnectTime.ToString("HH:mm:ss"), r.WaitUs / 1000, r.Ptr, r.Link, clients ? r.ApplicationName : r.RemotePid);
        return Ok(rows.Count == 0 ? [clients ? "no clients" : "no server connections"] : t.Lines(), rows);
    }

    private static async Task<PbmResult> Control(IActorRef target, string verb, string? db)
    {
        var r = await target.Ask<OpsAgent.ControlResult>(new OpsAgent.Control(verb, db), verb is "PAUSE" or "WAIT_CLOSE" ? TimeSpan.FromMinutes(10) : TimeSpan.FromMinutes(1));
        return r.Ok ? Ok([r.Message], new { ok = true, message = r.Message }) : PbmResult.Fail(r.Message);
    }

    /// <summary>A pool control on every pooler node; fails if any node refused it (each node's answer is listed).</summary>
    private async Task<PbmResult> Everywhere(string verb, string? db)
    {
        if (!Clustered(out var c)) return await Control(ops, verb, db);
        var nodes = c.State.Members.Where(m => m.Status == MemberStatus.Up && m.HasRole(ClusterNode.Role)).ToList();
        var results = await Task.WhenAll(nodes.Select(async m =>
        {
            try
            {
                var r = await system.ActorSelection(new RootActorPath(m.Address) / "user" / OpsAgent.Name)
                    .Ask<OpsAgent.ControlResult>(new OpsAgent.Control(verb, db), verb is "PAUSE" or "WAIT_CLOSE" ? TimeSpan.FromMinutes(10) : TimeSpan.FromSeconds(30));
                return (Node: m.Address.ToString(), r.Ok, r.Message);
            }
            catch (Exception e) { return (Node: m.Address.ToString(), Ok: false, e.Message); }
        }));
        var lines = results.Select(r => $"{r.Node}: {(r.Ok ? "" : "FAILED: ")}{r.Message}").ToList();
        var json = results.Select(r => new { node = r.Node, ok = r.Ok, message = r.Message });
        return results.All(r => r.Ok) ? Ok(lines, json) : new PbmResult(lines, JsonSerializer.SerializeToNode(json, JsonOptions), 1, $"{verb} failed on {results.Count(r => !r.Ok)} node(s)");
    }

    private async Task<PbmResult> VipShow()
    {
        if (!Clustered(out _)) return NotClustered();
        var r = await ClusterReport();
        if (r.Vip == null) return PbmResult.Fail("no VIP information");
        var v = r.Vip;
        return Ok([$"address:     {(v.Address.Length == 0 ? "(none)" : v.Address)}", $"driver:      {v.Driver}", $"holder:      {(v.Holder.Length == 0 ? "(nobody)" : v.Holder)}",
            $"coordinator: {v.Coordinator}", $"this node:   {v.LocalState}"], v);
    }

    private async Task<PbmResult> VipMove(string node)
    {
        if (!Clustered(out _)) return NotClustered();
        var target = Find(node);
        if (target == null) return PbmResult.Fail($"no member at {node}");
        var proxy = system.ActorSelection("/user/vip-owner-proxy");
        var r = await proxy.Ask<VipOwner.MoveResult>(new VipOwner.MoveTo(target.ToString()), TimeSpan.FromSeconds(15));
        // the owner's message already names the node ("the VIP is moving to X", "the VIP is already on X")
        return r.Ok ? Ok([r.Message], new { ok = true, holder = target.ToString(), message = r.Message }) : PbmResult.Fail(r.Message);
    }

    private async Task<PbmResult> NodeStatus()
    {
        var r = await ops.Ask<NodeReport>(new OpsAgent.GetReport(false), Timeout);
        var up = DateTime.UtcNow - r.StartedAt;
        return Ok([
            $"node:      {r.Node}", $"address:   {(r.Address.Length == 0 ? "(not clustered)" : r.Address)}", $"roles:     {string.Join(",", r.Roles)}",
            $"version:   {r.Version}", $"uptime:    {(int)up.TotalHours}h{up.Minutes:00}m{up.Seconds:00}s", $"draining:  {(r.Draining ? "yes" : "no")}",
            $"backend:   {(r.BackendReachable ? "reachable" : "NOT reachable")}", $"clients:   {r.Clients}", $"servers:   {r.Servers}", $"pools:     {r.Pools.Count}",
        ], new { r.Node, r.Address, r.Roles, r.Version, r.StartedAt, r.Draining, r.BackendReachable, r.Clients, r.Servers, pools = r.Pools.Count });
    }
}

/// <summary>Left-aligned columns for pbm's text output.</summary>
public sealed class TextTable(params string[] headers)
{
    private readonly List<string[]> _rows = new();

    public void Add(params object?[] cells) => _rows.Add(cells.Select(c => ResultSet.Text(c)).ToArray());

    public List<string> Lines()
    {
        var widths = headers.Select((h, i) => Math.Max(h.Length, _rows.Select(r => r[i].Length).DefaultIfEmpty(0).Max())).ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((c, i) => c.PadRight(widths[i]))).TrimEnd();
        return [Line(headers), .. _rows.Select(Line)];
    }
}
