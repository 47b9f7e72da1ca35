using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using Pooler.Actors.Cluster;
using Pooler.Actors.Config;
using Pooler.Actors.Pooling;

namespace Pooler.Actors.Ops;

/// <summary>
/// One per node at <c>/user/ops</c> (pooler nodes and the Lighthouse): reports the node (pools, clients,
/// servers, cluster view, VIP), runs the admin console's commands and pbm's controls, and answers other
/// nodes asking for its report. Long work (PAUSE waits for transactions) runs off the actor, so the
/// console, pbm and /metrics stay responsive meanwhile.
/// </summary>
public sealed class OpsAgent : ReceiveActor, IWithTimers
{
    public const string Name = "ops";

    /// <summary>A node's report; <paramref name="Rows"/> adds every client and server.</summary>
    public sealed record GetReport(bool Rows);
    /// <summary>From an admin console session: run this query; the answer is the wire bytes.</summary>
    public sealed record ConsoleQuery(string Sql, ConsoleRole Role, string User);
    public sealed record ConsoleReply(byte[] Bytes, bool Close);
    /// <summary>pbm and HTTP controls: PAUSE, RESUME, RECONNECT, KILL, WAIT_CLOSE [db], RELOAD, DRAIN, SHUTDOWN.</summary>
    public sealed record Control(string Verb, string? Database);
    public sealed record ControlResult(bool Ok, string Message);
    private sealed record Sample;

    /// <summary>The cluster as this node sees it: members and the VIP.</summary>
    public sealed record GetCluster;
    public sealed record ClusterReport(IReadOnlyList<MemberReport> Members, VipReport? Vip, string Self);

    /// <param name="vipProxy">The Lighthouse's own proxy to the VipOwner (a pooler node's is on its runtime).</param>
    /// <param name="control">The Lighthouse's own control (a pooler node's is on its runtime).</param>
    public static Props Props(PoolerRuntime? runtime, string roles, IActorRef? vipProxy = null, INodeControl? control = null)
        => Akka.Actor.Props.Create(() => new OpsAgent(runtime, roles, vipProxy, control));

    private readonly PoolerRuntime? _rt;
    private readonly string[] _roles;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly ActorSystem _system;
    private readonly BackendProbe _probe = new();
    // reference.conf's values for SHOW CONFIG (its md5 default needs a users file to load: loaded as trust, shown as md5)
    private static readonly PoolerSettings Defaults =
        SettingsLoader.Load(Akka.Configuration.ConfigurationFactory.ParseString("pooler.auth.type = trust"), null) with { Auth = new AuthSettings(AuthType.Md5, null) };
    // totals per pool at the last two samples (replaced whole: read by report tasks off the actor)
    private volatile Samples _samples = new(ImmutableDictionary<string, PoolTotals>.Empty, ImmutableDictionary<string, PoolTotals>.Empty, DateTime.UtcNow, DateTime.UtcNow);

    private sealed record Samples(ImmutableDictionary<string, PoolTotals> Prev, ImmutableDictionary<string, PoolTotals> Last, DateTime PrevAt, DateTime LastAt);

    public ITimerScheduler Timers { get; set; } = null!;

    private readonly IActorRef? _vipProxy;

    private readonly INodeControl? _control;
    private readonly IActorRef _self; // for report tasks that run off the actor (Self needs its context)

    public OpsAgent(PoolerRuntime? runtime, string roles, IActorRef? vipProxy, INodeControl? control)
    {
        _control = control;
        _self = Self;
        _rt = runtime;
        _vipProxy = vipProxy;
        _roles = roles.Split(',', StringSplitOptions.RemoveEmptyEntries);
        _system = Context.System;
        Receive<GetReport>(m => LocalReport(m.Rows).PipeTo(Sender));
        Receive<ConsoleQuery>(q => RunConsole(q).PipeTo(Sender));
        Receive<Control>(c => RunControl(c).PipeTo(Sender));
        Receive<Sample>(_ => TakeSample());
        Receive<GetCluster>(_ =>
        {
            var members = Members();
            Vip().ContinueWith(t => new ClusterReport(members, t.IsCompletedSuccessfully ? t.Result : null, Address)).PipeTo(Sender);
        });
    }

    protected override void PreStart()
    {
        if (_rt == null) return;
        Timers.StartSingleTimer("sample", new Sample(), _rt.Settings.StatsPeriod);
    }

    private static string Key(PoolInfo p) => $"{p.Database}/{p.User}";

    private void TakeSample()
    {
        var infos = _rt!.PoolManager.Ask<PoolManager.Infos>(new PoolManager.GetInfos(), TimeSpan.FromSeconds(5));
        infos.ContinueWith(t =>
        {
            if (!t.IsCompletedSuccessfully) return;
            var s = _samples;
            _samples = new Samples(s.Last, t.Result.Pools.ToImmutableDictionary(Key, p => p.Totals), s.LastAt, DateTime.UtcNow);
        });
        // one tick at a time: a reload may change the period
        Timers.StartSingleTimer("sample", new Sample(), _rt.Settings.StatsPeriod);
    }

    private bool Clustered => ClusterConfig.IsClustered(_system);

    private string Address => Clustered ? Akka.Cluster.Cluster.Get(_system).SelfAddress.ToString() : "";

    /// <summary>This node's report (pools merged with client and server counts by state).</summary>
    private async Task<NodeReport> LocalReport(bool rows)
    {
        var rt = _rt;
        var node = rt?.NodeName ?? Address;
        if (rt == null)
            return new NodeReport(node, Address, _roles, AdminConsole.Version, DateTime.UtcNow, false, true, 0, 0, [], rows ? [] : null, rows ? [] : null,
                new Dictionary<string, long>());
        var infos = (await rt.PoolManager.Ask<PoolManager.Infos>(new PoolManager.GetInfos(), TimeSpan.FromSeconds(5))).Pools;
        var clients = rt.Connections.Clients().Select(c => c.Row).ToList();
        var servers = rt.Connections.Servers().Select(c => c.Row).ToList();
        var samples = _samples;
        var seconds = (samples.LastAt - samples.PrevAt).TotalSeconds;
        // grouped once: a node can hold thousands of clients
        var clientsOf = clients.ToLookup(c => (c.Database, PoolUserOf(rt, c)));
        var serversOf = servers.ToLookup(s => (s.Database, s.User));
        var pools = infos.Select(p =>
        {
            var key = Key(p);
            var cl = clientsOf[(p.Database, p.User)];
            var sv = serversOf[(p.Database, p.User)];
            var last = samples.Last.GetValueOrDefault(key, PoolTotals.Zero);
            var prev = samples.Prev.GetValueOrDefault(key, PoolTotals.Zero);
            return new PoolReport(p, cl.Count(c => c.State == "active"), cl.Count(c => c.State == "waiting"),
                sv.Count(s => s.State == "active"), sv.Count(s => s.State == "idle"), sv.Count(s => s.State == "used"),
                sv.Count(s => s.State == "tested"), sv.Count(s => s.State == "login"), last.Minus(prev), seconds, node);
        }).ToList();
        return new NodeReport(node, Address, _roles, AdminConsole.Version, rt.StartedAt, rt.Draining, await _probe.ReachableAsync(rt.Settings),
            rt.ClientCount, rt.ServerCount, pools, rows ? clients : null, rows ? servers : null, rt.Errors.Snapshot());
    }

    /// <summary>The server user a client's pool logs in as (the database entry's user, else the client's own).</summary>
    private static string PoolUserOf(PoolerRuntime rt, ConnRow c) => rt.Settings.FindDatabase(c.Database)?.User ?? c.User;


    // ---------------- cluster ----------------

    private List<MemberReport> Members()
    {
        if (!Clustered) return [];
        var cluster = Akka.Cluster.Cluster.Get(_system);
        var state = cluster.State;
        var oldest = state.Members.Where(m => m.Status == MemberStatus.Up && m.HasRole(ClusterNode.Role))
            .OrderBy(m => m, Member.AgeOrdering).FirstOrDefault();
        return state.Members.Select(m => new MemberReport(m.Address.ToString(), m.Status.ToString(), m.Roles.OrderBy(r => r).ToList(),
            !state.Unreachable.Contains(m), state.Leader == m.Address, oldest != null && oldest.Address == m.Address)).ToList();
    }

    private async Task<VipReport?> Vip()
    {
        if (!Clustered) return null;
        var vip = _rt?.Settings.Vip ?? VipSettings.Off;
        var proxy = _rt?.VipProxy ?? _vipProxy;
        string coordinator = "", holder = "", local = "";
        var heldHere = false;
        if (proxy != null)
        {
            try
            {
                var s = await proxy.Ask<VipOwner.Status>(new VipOwner.GetStatus(), TimeSpan.FromSeconds(2));
                (coordinator, holder) = (s.Coordinator, s.Holder);
            }
            catch (Exception e) when (e is AskTimeoutException or TaskCanceledException) { coordinator = "(no answer)"; }
        }
        if (_rt?.VipHolder is { } h)
        {
            try
            {
                var s = await h.Ask<VipHolder.Status>(new VipHolder.GetStatus(), TimeSpan.FromSeconds(2));
                (local, heldHere) = (s.State.ToString().ToLowerInvariant(), s.Holding);
            }
            catch (Exception e) when (e is AskTimeoutException or TaskCanceledException) { local = "(no answer)"; }
        }
        return new VipReport(vip.Address, vip.Driver.ToString().ToLowerInvariant(), coordinator, holder, local, heldHere);
    }

    /// <summary>
    /// Every pooler node's report, ordered by node (the Lighthouse has no pools); the nodes that did not answer in
    /// time are left out and named. Outside a cluster, the report of <paramref name="local"/> (this node's agent) alone.
    /// </summary>
    public static async Task<(List<NodeReport> Reports, List<string> Missing)> GatherAsync(ActorSystem system, IActorRef local, bool rows, TimeSpan timeout)
    {
        if (!ClusterConfig.IsClustered(system)) return ([await local.Ask<NodeReport>(new GetReport(rows), timeout)], []);
        var members = Akka.Cluster.Cluster.Get(system).State.Members
            .Where(m => m.HasRole(ClusterNode.Role) && m.Status is MemberStatus.Up or MemberStatus.Joining or MemberStatus.WeaklyUp or MemberStatus.Leaving);
        var asks = members.Select(m => (m.Address, Task: system.ActorSelection(new RootActorPath(m.Address) / "user" / Name)
            .Ask<NodeReport>(new GetReport(rows), timeout))).ToList();
        try { await Task.WhenAll(asks.Select(a => a.Task)); } catch { /* the ones that failed are named below */ }
        return (asks.Where(a => a.Task.IsCompletedSuccessfully).Select(a => a.Task.Result).OrderBy(r => r.Node, StringComparer.Ordinal).ToList(),
            asks.Where(a => !a.Task.IsCompletedSuccessfully).Select(a => a.Address.ToString()).Order(StringComparer.Ordinal).ToList());
    }

    // ---------------- console ----------------

    private async Task<ConsoleReply> RunConsole(ConsoleQuery q)
    {
        var cmd = AdminConsole.Parse(q.Sql, out var error);
        if (cmd == null) return new ConsoleReply(AdminConsole.Error(error!), false);
        // PgBouncer's message, with PostgreSQL's SQLSTATE for a missing privilege (PgBouncer sends 08P01)
        if (!AdminConsole.Allowed(cmd, q.Role)) return new ConsoleReply(AdminConsole.Error("admin access needed", Protocol.SqlState.InsufficientPrivilege), false);
        try
        {
            if (cmd.Verb != "SHOW")
            {
                _log.Info("admin console node {0}: {1} runs {2}", _rt?.NodeName, q.User, cmd.Text);
                var r = await RunControl(new Control(cmd.Verb, cmd.Database));
                return new ConsoleReply(r.Ok ? AdminConsole.Tag(cmd.Verb) : AdminConsole.Error(r.Message), false);
            }
            return new ConsoleReply(await Show(cmd.Subject!), false);
        }
        catch (Exception e)
        {
            _log.Warning("admin console node {0}: {1} failed: {2}", _rt?.NodeName, cmd.Text, e);
            return new ConsoleReply(AdminConsole.Error($"{cmd.Text} failed: {e.Message}"), false);
        }
    }

    private async Task<byte[]> Show(string subject)
    {
        var rt = _rt!;
        if (subject == "HELP") return AdminConsole.Help();
        if (subject == "VERSION") return AdminConsole.Rows(ConsoleTables.Version());
        if (subject == "CLUSTER") return AdminConsole.Rows(ConsoleTables.Cluster(Members(), await Vip()));
        if (subject == "VIP") return AdminConsole.Rows(ConsoleTables.Vip(await Vip()));
        if (subject == "PEER_POOLS")
        {
            var (reports, _) = await GatherAsync(_system, _self, false, TimeSpan.FromSeconds(3));
            return AdminConsole.Rows(ConsoleTables.Pools(reports, 0, withNode: true));
        }
        var node = await LocalReport(subject is "CLIENTS" or "SERVERS" or "LISTS" or "POOLS");
        // pause state of databases without a pool (paused before their first client) is known to the manager only
        var paused = subject is "DATABASES" or "STATE"
            ? (await rt.PoolManager.Ask<PoolManager.PausedDatabases>(new PoolManager.GetPaused(), TimeSpan.FromSeconds(5))).Databases
            : [];
        var consoleClients = node.ClientRows?.Count(c => AdminConsole.IsConsoleDatabase(c.Database)) ?? 0;
        var users = rt.Users?.Users.ToList() ?? [];
        return AdminConsole.Rows(subject switch
        {
            "POOLS" => ConsoleTables.Pools(node, consoleClients),
            "STATS" => ConsoleTables.Stats(node),
            "STATS_TOTALS" => ConsoleTables.StatsTotals(node),
            "STATS_AVERAGES" => ConsoleTables.StatsAverages(node),
            "TOTALS" => ConsoleTables.Totals(node),
            "CLIENTS" => ConsoleTables.Connections(node.ClientRows!),
            "SERVERS" => ConsoleTables.Connections(node.ServerRows!),
            "DATABASES" => ConsoleTables.Databases(rt.Settings, node, paused),
            "USERS" => ConsoleTables.Users(users),
            "CONFIG" => ConsoleTables.Config(ConsoleTables.ConfigRows(rt.Settings, Defaults)),
            "LISTS" => ConsoleTables.Lists(rt.Settings, node, users.Count),
            "STATE" => ConsoleTables.State(node, paused),
            _ => throw new InvalidOperationException($"SHOW {subject} is not implemented"),
        });
    }

    // ---------------- controls ----------------

    private async Task<ControlResult> RunControl(Control c)
    {
        var rt = _rt;
        var control = rt?.Control ?? _control;
        switch (c.Verb)
        {
            case "DRAIN":
                if (control == null) return new(false, "this process cannot be drained from here");
                _log.Info("node {0}: drain requested", rt?.NodeName ?? Address);
                control.Stop(drain: true);
                return new(true, "draining: the VIP moves away, clients finish up to shutdown-timeout, then the node leaves and exits");
            case "SHUTDOWN":
                if (control == null) return new(false, "this process cannot be shut down from here");
                control.Stop(drain: false);
                return new(true, "shutting down");
        }
        if (rt == null) return new(false, $"{c.Verb} needs a pooler node (this is a {string.Join(",", _roles)} node)");
        if (c.Database is { } db)
        {
            if (AdminConsole.IsConsoleDatabase(db))
                return new(false, c.Verb switch { "WAIT_CLOSE" => $"cannot wait in admin db: {db}", _ => $"cannot {c.Verb.ToLowerInvariant()} admin db: {db}" });
            if (rt.Settings.FindDatabase(db) == null) return new(false, $"no such database: {db}");
        }
        var pools = rt.PoolManager;
        switch (c.Verb)
        {
            case "RELOAD":
                if (control == null) return new(false, "this process has no configuration file to reload");
                var error = control.Reload();
                return error == null ? new(true, "configuration reloaded") : new(false, $"RELOAD failed, keeping the current settings: {error}");
            case "PAUSE":
                await pools.Ask<PoolManager.Done>(new PoolManager.Pause(c.Database, false), TimeSpan.FromMinutes(10));
                return new(true, c.Database == null ? "every pool paused" : $"database {c.Database} paused");
            case "KILL":
                foreach (var (session, row) in rt.Connections.Clients())
                    if (row.Database == c.Database) session.Tell(new Client.ClientSession.Kill(Protocol.SqlState.ProtocolViolation, "database removed"));
                await pools.Ask<PoolManager.Done>(new PoolManager.Pause(c.Database, true), TimeSpan.FromMinutes(1));
                return new(true, $"database {c.Database} killed: its clients were closed; new ones wait for RESUME");
            case "RESUME":
                if (await pools.Ask<object>(new PoolManager.Resume(c.Database), TimeSpan.FromSeconds(5)) is PoolManager.NotPaused)
                    return new(false, $"database {c.Database} is not paused");
                return new(true, c.Database == null ? "every pool resumed" : $"database {c.Database} resumed");
            case "RECONNECT":
                await pools.Ask<PoolManager.Done>(new PoolManager.Reconnect(c.Database), TimeSpan.FromSeconds(5));
                return new(true, "server connections are replaced as they become idle");
            case "WAIT_CLOSE":
                await pools.Ask<PoolManager.Done>(new PoolManager.WaitClose(c.Database), TimeSpan.FromMinutes(10));
                return new(true, "no server connection from before the last RECONNECT or RELOAD is left");
            default:
                return new(false, $"unknown command {c.Verb}");
        }
    }
}
