using Pooler.Actors.Config;

namespace Pooler.Actors.Ops;

/// <summary>The admin console's SHOW results, built from node reports with PgBouncer 1.18's columns.</summary>
public static class ConsoleTables
{
    private const PgType T = PgType.Text, I4 = PgType.Int4, N = PgType.Numeric;

    private static readonly (string, PgType)[] PoolColumns =
    [
        ("database", T), ("user", T), ("cl_active", I4), ("cl_waiting", I4), ("cl_active_cancel_req", I4), ("cl_waiting_cancel_req", I4),
        ("sv_active", I4), ("sv_active_cancel", I4), ("sv_being_canceled", I4), ("sv_idle", I4), ("sv_used", I4), ("sv_tested", I4),
        ("sv_login", I4), ("maxwait", I4), ("maxwait_us", I4), ("pool_mode", T),
    ];

    public static ResultSet Pools(NodeReport node, int consoleClients) => Pools([node], consoleClients, withNode: false);

    /// <summary>SHOW POOLS (one node), or SHOW PEER_POOLS (every node, a node column first).</summary>
    public static ResultSet Pools(IEnumerable<NodeReport> nodes, int consoleClients, bool withNode)
    {
        var rs = new ResultSet(withNode ? [("node", T), .. PoolColumns] : PoolColumns);
        foreach (var n in nodes)
        {
            foreach (var p in n.Pools.OrderBy(p => p.Info.Database).ThenBy(p => p.Info.User))
            {
                object?[] row = [p.Info.Database, p.Info.User, p.ClActive, p.ClWaiting, 0, 0, p.SvActive, 0, 0, p.SvIdle, p.SvUsed, p.SvTested,
                    p.SvLogin, (int)(p.Info.MaxWaitUs / 1_000_000), (int)(p.Info.MaxWaitUs % 1_000_000), p.Info.Mode];
                rs.Add(withNode ? [n.Node, .. row] : row);
            }
            if (!withNode)
                rs.Add("pgbouncer", "pgbouncer", consoleClients, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "statement");
        }
        return rs;
    }

    /// <summary>Totals and last-period sums per database (PgBouncer's stats are per database).</summary>
    private static IEnumerable<(string Db, PoolTotals Total, PoolTotals Period, double Seconds)> ByDatabase(NodeReport node)
        => node.Pools.GroupBy(p => p.Info.Database).OrderBy(g => g.Key).Select(g => (
            g.Key,
            g.Aggregate(PoolTotals.Zero, (a, p) => a.Plus(p.Info.Totals)),
            g.Aggregate(PoolTotals.Zero, (a, p) => a.Plus(p.LastPeriod)),
            g.Max(p => p.PeriodSeconds)));

    /// <summary>PgBouncer's averages: per second for counts and bytes, per transaction/query for times, wait per transaction.</summary>
    private static (long Xacts, long Queries, long Recv, long Sent, long XactTime, long QueryTime, long WaitTime, long ClientParses, long ServerParses, long Binds)
        Averages(PoolTotals d, double seconds)
    {
        long PerSecond(long v) => seconds > 0 ? (long)Math.Round(v / seconds) : 0;
        static long Per(long v, long n) => n > 0 ? v / n : 0;
        return (PerSecond(d.Xacts), PerSecond(d.Queries), PerSecond(d.Received), PerSecond(d.Sent), Per(d.XactUs, d.Xacts), Per(d.QueryUs, d.Queries), Per(d.WaitUs, d.Xacts),
            PerSecond(d.ClientParses), PerSecond(d.ServerParses), PerSecond(d.Binds));
    }

    public static ResultSet Stats(NodeReport node)
    {
        var rs = new ResultSet(("database", T), ("total_xact_count", N), ("total_query_count", N), ("total_received", N), ("total_sent", N),
            ("total_xact_time", N), ("total_query_time", N), ("total_wait_time", N),
            ("total_client_parse_count", N), ("total_server_parse_count", N), ("total_bind_count", N),
            ("avg_xact_count", N), ("avg_query_count", N), ("avg_recv", N),
            ("avg_sent", N), ("avg_xact_time", N), ("avg_query_time", N), ("avg_wait_time", N),
            ("avg_client_parse_count", N), ("avg_server_parse_count", N), ("avg_bind_count", N));
        foreach (var (db, t, d, s) in ByDatabase(node))
        {
            var a = Averages(d, s);
            rs.Add(db, t.Xacts, t.Queries, t.Received, t.Sent, t.XactUs, t.QueryUs, t.WaitUs, t.ClientParses, t.ServerParses, t.Binds,
                a.Xacts, a.Queries, a.Recv, a.Sent, a.XactTime, a.QueryTime, a.WaitTime, a.ClientParses, a.ServerParses, a.Binds);
        }
        return rs;
    }

    private static readonly (string, PgType)[] TotalsColumns =
        [("database", T), ("xact_count", N), ("query_count", N), ("bytes_received", N), ("bytes_sent", N), ("xact_time", N), ("query_time", N), ("wait_time", N),
         ("client_parse_count", N), ("server_parse_count", N), ("bind_count", N)];

    public static ResultSet StatsTotals(NodeReport node)
    {
        var rs = new ResultSet(TotalsColumns);
        foreach (var (db, t, _, _) in ByDatabase(node)) rs.Add(db, t.Xacts, t.Queries, t.Received, t.Sent, t.XactUs, t.QueryUs, t.WaitUs, t.ClientParses, t.ServerParses, t.Binds);
        return rs;
    }

    public static ResultSet StatsAverages(NodeReport node)
    {
        var rs = new ResultSet(TotalsColumns);
        foreach (var (db, _, d, s) in ByDatabase(node))
        {
            var a = Averages(d, s);
            rs.Add(db, a.Xacts, a.Queries, a.Recv, a.Sent, a.XactTime, a.QueryTime, a.WaitTime, a.ClientParses, a.ServerParses, a.Binds);
        }
        return rs;
    }

    public static ResultSet Totals(NodeReport node)
    {
        var t = node.Pools.Aggregate(PoolTotals.Zero, (a, p) => a.Plus(p.Info.Totals));
        var d = node.Pools.Aggregate(PoolTotals.Zero, (a, p) => a.Plus(p.LastPeriod));
        var a = Averages(d, node.Pools.Select(p => p.PeriodSeconds).DefaultIfEmpty(0).Max());
        var rs = new ResultSet(("name", T), ("value", N));
        foreach (var (k, v) in new (string, long)[]
                 {
                     ("total_xact_count", t.Xacts), ("total_query_count", t.Queries), ("total_client_bytes", t.Received), ("total_server_bytes", t.Sent),
                     ("total_xact_time", t.XactUs), ("total_query_time", t.QueryUs), ("total_wait_time", t.WaitUs),
                     ("total_client_parse_count", t.ClientParses), ("total_server_parse_count", t.ServerParses), ("total_bind_count", t.Binds),
                     ("avg_xact_count", a.Xacts), ("avg_query_count", a.Queries), ("avg_client_bytes", a.Recv), ("avg_server_bytes", a.Sent),
                     ("avg_xact_time", a.XactTime), ("avg_query_time", a.QueryTime), ("avg_wait_time", a.WaitTime),
                     ("avg_client_parse_count", a.ClientParses), ("avg_server_parse_count", a.ServerParses), ("avg_bind_count", a.Binds),
                 })
            rs.Add(k, v);
        return rs;
    }

    /// <summary>SHOW CLIENTS / SHOW SERVERS.</summary>
    public static ResultSet Connections(IEnumerable<ConnRow> rows)
    {
        var rs = new ResultSet(("type", T), ("user", T), ("database", T), ("state", T), ("addr", T), ("port", I4), ("local_addr", T), ("local_port", I4),
            ("connect_time", T), ("request_time", T), ("wait", I4), ("wait_us", I4), ("close_needed", I4), ("ptr", T), ("link", T), ("remote_pid", I4),
            ("tls", T), ("application_name", T));
        foreach (var r in rows.OrderBy(r => r.ConnectTime))
            rs.Add(r.Type, r.User, r.Database, r.State, r.Addr, r.Port, r.LocalAddr, r.LocalPort, r.ConnectTime, r.RequestTime,
                (int)(r.WaitUs / 1_000_000), (int)(r.WaitUs % 1_000_000), 0, r.Ptr, r.Link, r.RemotePid, r.Tls, r.ApplicationName);
        return rs;
    }

    /// <param name="paused">Databases paused by name ("*": every one), as PoolManager.GetPaused answers.</param>
    public static ResultSet Databases(PoolerSettings s, NodeReport node, IReadOnlyCollection<string> paused)
    {
        var rs = new ResultSet(("name", T), ("host", T), ("port", I4), ("database", T), ("force_user", T), ("pool_size", I4), ("min_pool_size", I4),
            ("reserve_pool", I4), ("pool_mode", T), ("max_connections", I4), ("current_connections", I4), ("paused", I4), ("disabled", I4));
        // configured entries and databases reached through "*"
        var names = s.Databases.Keys.Concat(node.Pools.Select(p => p.Info.Database)).Distinct().OrderBy(n => n, StringComparer.Ordinal);
        foreach (var name in names)
        {
            if (s.FindDatabase(name) is not { } db) continue;
            var pools = node.Pools.Where(p => p.Info.Database == name).ToList();
            rs.Add(name, db.Host, db.Port, db.DbName, db.User, s.PoolSizeFor(db), s.MinPoolSizeFor(db), s.ReservePoolSizeFor(db),
                db.PoolMode?.ToString().ToLowerInvariant(), s.MaxDbConnectionsFor(db),
                pools.Sum(p => p.SvActive + p.SvIdle + p.SvUsed + p.SvTested + p.SvLogin), paused.Contains(name), 0);
        }
        rs.Add("pgbouncer", null, s.Listen.Port, "pgbouncer", "pgbouncer", 2, 0, 0, "statement", 0, 0, 0, 0);
        return rs;
    }

    public static ResultSet Users(IEnumerable<string> users)
    {
        var rs = new ResultSet(("name", T), ("pool_mode", T));
        foreach (var u in users.Distinct().OrderBy(u => u, StringComparer.Ordinal)) rs.Add(u, null);
        return rs;
    }

    public static ResultSet Config(IEnumerable<(string Key, string Value, string Default, bool Changeable)> rows)
    {
        var rs = new ResultSet(("key", T), ("value", T), ("default", T), ("changeable", T));
        foreach (var r in rows.OrderBy(r => r.Key, StringComparer.Ordinal)) rs.Add(r.Key, r.Value, r.Default, r.Changeable ? "yes" : "no");
        return rs;
    }

    /// <summary>PgBouncer's setting names (pool-mode -> pool_mode) with the current value and reference.conf's.</summary>
    public static IEnumerable<(string, string, string, bool)> ConfigRows(PoolerSettings now, PoolerSettings defaults)
    {
        static string D(TimeSpan t) => ResultSet.Text(t.TotalSeconds);
        static string L(IReadOnlyList<string> l) => string.Join(",", l);
        (string, Func<PoolerSettings, string>, bool)[] keys =
        [
            ("listen_addr", x => x.Listen.Host, false), ("listen_port", x => ResultSet.Text(x.Listen.Port), false),
            ("auth_type", x => x.Auth.Type switch { AuthType.ScramSha256 => "scram-sha-256", var t => t.ToString().ToLowerInvariant() }, true),
            ("auth_file", x => x.Auth.UsersFile ?? "", true), ("pool_mode", x => x.PoolMode.ToString().ToLowerInvariant(), true),
            ("default_pool_size", x => ResultSet.Text(x.DefaultPoolSize), true), ("min_pool_size", x => ResultSet.Text(x.MinPoolSize), true),
            ("reserve_pool_size", x => ResultSet.Text(x.ReservePoolSize), true), ("reserve_pool_timeout", x => D(x.ReservePoolTimeout), true),
            ("max_client_conn", x => ResultSet.Text(x.MaxClientConn), true), ("max_db_connections", x => ResultSet.Text(x.MaxDbConnections), true),
            ("max_user_connections", x => ResultSet.Text(x.MaxUserConnections), true), ("server_lifetime", x => D(x.ServerLifetime), true),
            ("server_idle_timeout", x => D(x.ServerIdleTimeout), true), ("server_connect_timeout", x => D(x.ServerConnectTimeout), true),
            ("server_login_retry", x => D(x.ServerLoginRetry), true), ("query_timeout", x => D(x.QueryTimeout), true),
            ("query_wait_timeout", x => D(x.QueryWaitTimeout), true), ("client_idle_timeout", x => D(x.ClientIdleTimeout), true),
            ("client_login_timeout", x => D(x.ClientLoginTimeout), true), ("idle_transaction_timeout", x => D(x.IdleTransactionTimeout), true),
            ("server_reset_query", x => x.ServerResetQuery, true), ("server_reset_query_always", x => x.ServerResetQueryAlways ? "1" : "0", true),
            ("server_check_query", x => x.ServerCheckQuery, true), ("server_check_delay", x => D(x.ServerCheckDelay), true),
            ("ignore_startup_parameters", x => L(x.IgnoreStartupParameters), true), ("shutdown_timeout", x => D(x.ShutdownTimeout), true),
            ("max_packet_size", x => ResultSet.Text(x.MaxPacketSize), true), ("admin_users", x => L(x.AdminUsers), true),
            ("stats_users", x => L(x.StatsUsers), true), ("stats_period", x => D(x.StatsPeriod), true),
        ];
        return keys.Select(k => (k.Item1, k.Item2(now), k.Item2(defaults), k.Item3));
    }

    public static ResultSet Lists(PoolerSettings s, NodeReport node, int users)
    {
        var rs = new ResultSet(("list", T), ("items", I4));
        var loggedIn = node.ClientRows?.Count ?? 0;
        foreach (var (k, v) in new (string, int)[]
                 {
                     ("databases", s.Databases.Count + 1), ("users", users), ("pools", node.Pools.Count + 1), ("free_clients", 0),
                     ("used_clients", loggedIn), ("login_clients", Math.Max(0, node.Clients - loggedIn)), ("free_servers", 0),
                     ("used_servers", node.Servers), ("dns_names", 0), ("dns_zones", 0), ("dns_queries", 0), ("dns_pending", 0),
                 })
            rs.Add(k, v);
        return rs;
    }

    public static ResultSet Version() => new ResultSet(("version", T)).Add(AdminConsole.Version);

    /// <summary>SHOW STATE (PgBouncer 1.19+): whether the node runs, is paused (PAUSE without a database) or suspended.</summary>
    public static ResultSet State(NodeReport node, IReadOnlyCollection<string> pausedDatabases)
    {
        var paused = pausedDatabases.Contains("*");
        return new ResultSet(("key", T), ("value", T)).Add("active", !node.Draining && !paused ? "yes" : "no")
            .Add("paused", paused ? "yes" : "no").Add("suspended", "no");
    }

    public static ResultSet Cluster(IEnumerable<MemberReport> members, VipReport? vip)
    {
        var rs = new ResultSet(("member", T), ("status", T), ("roles", T), ("reachable", I4), ("leader", I4), ("oldest", I4), ("vip_holder", I4));
        foreach (var m in members)
            rs.Add(m.Address, m.Status, string.Join(",", m.Roles), m.Reachable, m.Leader, m.Oldest, vip != null && vip.Holder == m.Address);
        return rs;
    }

    public static ResultSet Vip(VipReport? vip)
    {
        var rs = new ResultSet(("address", T), ("driver", T), ("coordinator", T), ("holder", T), ("local_state", T));
        if (vip != null) rs.Add(vip.Address, vip.Driver, vip.Coordinator, vip.Holder, vip.LocalState);
        return rs;
    }
}
