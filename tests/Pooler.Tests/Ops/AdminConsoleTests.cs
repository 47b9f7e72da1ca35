using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Ops;

/// <summary>
/// The admin console of a pooler process with real clients: who may log in and run what, SHOW results that follow the
/// traffic, and the controls (PAUSE/RESUME under pgbench, KILL, RECONNECT + WAIT_CLOSE, RELOAD, SHUTDOWN).
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed partial class AdminConsoleTests(PostgresFixture pg, ITestOutputHelper output)
{
    private const string Admin = PostgresFixture.AdminUser;
    private const string StatsUser = PostgresFixture.Md5User;
    private const string Db = PostgresFixture.Database;
    private const string OtherDb = PostgresFixture.OtherDatabase;
    // generous: other engineers run multi-process tests on this 2-core machine at the same time
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    private string Config(string extra = "", int port = 0) => PoolerProcess.DefaultConfig(pg, port,
        settings: $"admin-users = [{Admin}]\nstats-users = [{StatsUser}]\n{extra}");

    private Task<PoolerProcess> StartAsync(string extra = "") => PoolerProcess.StartAsync(Config(extra));

    private static Task<ConsoleClient> ConsoleAsync(PoolerProcess p, string user = Admin)
        => ConsoleClient.ConnectAsync(p.Port, user, PostgresFixture.PasswordOf(user), "pgbouncer");

    private static async Task<QueryResult> Show(ConsoleClient console, string what) => (await console.QueryAsync("SHOW " + what)).EnsureOk();

    /// <summary>The SHOW POOLS row of a database (its only user in these tests).</summary>
    private static async Task<IReadOnlyDictionary<string, string?>?> PoolRow(ConsoleClient console, string db)
        => (await Show(console, "POOLS")).Maps().FirstOrDefault(r => r["database"] == db);

    private static int Int(IReadOnlyDictionary<string, string?>? row, string column)
        => row == null ? 0 : int.Parse(row[column]!, CultureInfo.InvariantCulture);

    private static int Servers(IReadOnlyDictionary<string, string?>? row)
        => Int(row, "sv_active") + Int(row, "sv_idle") + Int(row, "sv_used") + Int(row, "sv_tested") + Int(row, "sv_login");

    private static async Task<long> XactCount(ConsoleClient console, string db)
        => (await Show(console, "STATS")).Maps().Where(r => r["database"] == db).Select(r => long.Parse(r["total_xact_count"]!, CultureInfo.InvariantCulture))
            .DefaultIfEmpty(0).Single();

    private static void AssertError(QueryResult r, string sqlState, string message)
    {
        Assert.True(r.Error != null, $"expected an error, got {r}");
        Assert.Equal(("ERROR", sqlState, message), (r.Error.Severity, r.Error.SqlState, r.Error.Message));
        Assert.Equal('I', r.Status);
    }

    private static async Task<int> BackendPid(NpgsqlConnection c)
    {
        await using var cmd = new NpgsqlCommand("SELECT pg_backend_pid()", c);
        return (int)(await cmd.ExecuteScalarAsync())!;
    }

    // ---------------- login and protocol ----------------

    [Fact]
    public async Task Admins_run_everything_stats_users_only_SHOW_others_are_refused_at_login()
    {
        await using var p = await StartAsync();

        await using (var admin = await ConsoleAsync(p))
        {
            Assert.Equal("1.18.0/bouncer", admin.Parameters["server_version"]);
            Assert.Equal([("version", 25)], (await Show(admin, "VERSION")).Columns);
            Assert.Equal("PAUSE", (await admin.QueryAsync("PAUSE other_db")).EnsureOk().Tag);
            Assert.Equal("RESUME", (await admin.QueryAsync("RESUME other_db")).EnsureOk().Tag);
        }

        await using (var stats = await ConsoleAsync(p, StatsUser))
        {
            foreach (var what in new[] { "POOLS", "STATS", "CLIENTS", "SERVERS", "CONFIG", "DATABASES" }) await Show(stats, what);
            AssertError(await stats.QueryAsync("PAUSE"), "42501", "admin access needed");
            AssertError(await stats.QueryAsync("RELOAD"), "42501", "admin access needed");
            Assert.Single((await Show(stats, "VERSION")).Rows); // still usable
        }

        var notListed = await ConsoleClient.LoginErrorAsync(p.Port, PostgresFixture.ScramUser, PostgresFixture.ScramPassword, "pgbouncer");
        Assert.Equal(("FATAL", "28000"), (notListed.Severity, notListed.SqlState));
        Assert.Contains("admin console", notListed.Message);

        var wrong = await ConsoleClient.LoginErrorAsync(p.Port, Admin, "not-the-password", "pgbouncer");
        Assert.Equal(("FATAL", "28P01"), (wrong.Severity, wrong.SqlState));
        var wrongStats = await ConsoleClient.LoginErrorAsync(p.Port, StatsUser, "not-the-password", "pooler");
        Assert.Equal(("FATAL", "28P01"), (wrongStats.Severity, wrongStats.SqlState));
    }

    [Fact]
    public async Task An_unknown_command_is_an_error_and_the_connection_stays_usable()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        AssertError(await admin.QueryAsync("FROBNICATE all"), "08P01", "invalid command 'FROBNICATE all', use SHOW HELP;");
        AssertError(await admin.QueryAsync("select * from pg_class"), "08P01", "invalid command 'select * from pg_class', use SHOW HELP;");
        // the accepted spellings: any case, extra spaces, a trailing semicolon
        Assert.Single((await admin.QueryAsync("  show   version ; ")).EnsureOk().Rows);
        Assert.Single((await admin.QueryAsync("SHOW version;")).EnsureOk().Rows);
    }

    [Fact]
    public async Task The_extended_protocol_gets_an_error_then_bad_packet_and_the_connection_closes()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        await admin.SendParseAndSyncAsync("SHOW POOLS");
        var first = await admin.ReadAsync();
        Assert.Equal('E', first?.Type);
        var error = PgFields.Parse(first!.Value.Body);
        Assert.Equal(("ERROR", "08P01", "extended query protocol not supported by admin console"), (error.Severity, error.SqlState, error.Message));
        Assert.Equal('Z', (await admin.ReadAsync())?.Type);
        var fatal = await admin.ReadAsync();
        Assert.Equal('E', fatal?.Type);
        Assert.Equal(("FATAL", "08P01", "bad packet"), (PgFields.Parse(fatal!.Value.Body).Severity, PgFields.Parse(fatal.Value.Body).SqlState, PgFields.Parse(fatal.Value.Body).Message));
        Assert.Null(await admin.ReadAsync());

        // a lone Sync is refused by its type byte, as PgBouncer does
        await using var other = await ConsoleAsync(p);
        await other.SendAsync('S', []);
        var sync = await other.ReadAsync();
        Assert.Equal("unsupported packet type for admin console: 83", PgFields.Parse(sync!.Value.Body).Message);
    }

    [Fact]
    public async Task Psql_shows_pools()
    {
        await using var p = await StartAsync();
        await using (var c = await p.OpenAsync(pg)) await BackendPid(c);
        var r = await pg.RunPsqlAsync(["-At", "-F", "|", "-c", "SHOW POOLS"], Admin, database: "pgbouncer", port: p.Port, host: "127.0.0.1",
            timeout: Limit);
        Assert.True(r.Succeeded, r.ToString());
        var lines = r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(lines, l => l.StartsWith($"{Db}|{PostgresFixture.ScramUser}|", StringComparison.Ordinal) && l.EndsWith("|transaction", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("pgbouncer|pgbouncer|1|", StringComparison.Ordinal));
    }

    // ---------------- SHOW follows the traffic ----------------

    [Fact]
    public async Task Show_stats_counts_the_transactions_run_through_the_pooler()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        const int n = 50;
        await using (var c = await p.OpenAsync(pg))
            for (var i = 0; i < n; i++)
                await BackendPid(c);
        var count = await Eventually.Value(() => XactCount(admin, Db), v => v >= n, $"SHOW STATS total_xact_count of {Db} >= {n}", Limit);
        output.WriteLine($"total_xact_count after {n} transactions: {count}");
        var totals = (await Show(admin, "STATS_TOTALS")).Maps().Single(r => r["database"] == Db);
        Assert.True(long.Parse(totals["xact_count"]!, CultureInfo.InvariantCulture) >= n);
        Assert.True(long.Parse(totals["bytes_received"]!, CultureInfo.InvariantCulture) > 0);
        Assert.True(long.Parse(totals["bytes_sent"]!, CultureInfo.InvariantCulture) > 0);
        var all = (await Show(admin, "TOTALS")).Maps().Single(r => r["name"] == "total_xact_count");
        Assert.True(long.Parse(all["value"]!, CultureInfo.InvariantCulture) >= n);
    }

    [Fact]
    public async Task An_open_transaction_shows_as_active_client_linked_to_its_active_server_and_a_queued_one_as_waiting()
    {
        await using var p = await StartAsync("default-pool-size = 1");
        await using var admin = await ConsoleAsync(p);
        await using var holder = await p.OpenAsync(pg, applicationName: "holder");
        // opened before the pool is busy: Npgsql's first open of a connection string loads types with a query
        await using var queued = await p.OpenAsync(pg, applicationName: "queued");
        await using var tx = await holder.BeginTransactionAsync();
        var pid = await BackendPid(holder);

        var clients = (await Show(admin, "CLIENTS")).Maps().ToList();
        var client = clients.Single(r => r["application_name"] == "holder");
        Assert.Equal(("C", Db, PostgresFixture.ScramUser, "active"), (client["type"], client["database"], client["user"], client["state"]));
        Assert.False(string.IsNullOrEmpty(client["link"]));
        var server = (await Show(admin, "SERVERS")).Maps().Single(r => r["ptr"] == client["link"]);
        Assert.Equal(("S", "active", client["ptr"]), (server["type"], server["state"], server["link"]));
        Assert.Equal(pid.ToString(CultureInfo.InvariantCulture), server["remote_pid"]);
        Assert.Equal(pg.Port.ToString(CultureInfo.InvariantCulture), server["port"]);
        var pool = await PoolRow(admin, Db);
        // as PgBouncer, cl_active counts the idle logged-in client too
        Assert.Equal((2, 1, 0), (Int(pool, "cl_active"), Int(pool, "sv_active"), Int(pool, "cl_waiting")));

        // pool size 1 is busy: the next client queues
        var waitingQuery = BackendPid(queued);
        var row = await Eventually.Value(() => PoolRow(admin, Db), r => Int(r, "cl_waiting") == 1 && Int(r, "maxwait") * 1_000_000L + Int(r, "maxwait_us") > 0,
            "SHOW POOLS: one waiting client with maxwait > 0", Limit);
        output.WriteLine($"while queued: cl_waiting={row!["cl_waiting"]} maxwait={row["maxwait"]} maxwait_us={row["maxwait_us"]}");
        var waiting = (await Show(admin, "CLIENTS")).Maps().Single(r => r["application_name"] == "queued");
        Assert.Equal(("waiting", ""), (waiting["state"], waiting["link"]));
        Assert.False(waitingQuery.IsCompleted);

        await tx.CommitAsync();
        Assert.Equal(pid, await waitingQuery.WaitAsync(Limit)); // the one server, handed on
        await Eventually.True(async () => Int(await PoolRow(admin, Db), "cl_waiting") == 0, "no client waits after the commit", Limit);
    }

    // ---------------- PAUSE / RESUME ----------------

    [Fact]
    public async Task Pause_held_for_five_seconds_under_pgbench_then_resume_fails_no_transaction()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        var script = p.WriteFile("select.sql", "SELECT 1;\n");
        var bench = pg.RunPgbenchAsync(["-n", "-f", script, "-c", "10", "-j", "2", "-T", "12", "-M", "simple"], Admin, port: p.Port,
            host: "127.0.0.1", timeout: TimeSpan.FromSeconds(120));

        await Eventually.True(async () => await XactCount(admin, Db) >= 200 || bench.IsCompleted, "pgbench runs transactions through the pooler", Limit);
        Assert.False(bench.IsCompleted, $"pgbench ended early: {(bench.IsCompleted ? bench.Result.ToString() : "")}");

        var watch = Stopwatch.StartNew();
        Assert.Equal("PAUSE", (await admin.QueryAsync("PAUSE", Limit)).EnsureOk().Tag);
        var pauseLatency = watch.Elapsed;

        // paused: no server left, pgbench's clients queue, nothing runs
        var paused = await Eventually.Value(() => PoolRow(admin, Db), r => Servers(r) == 0 && Int(r, "cl_waiting") > 0,
            "SHOW POOLS while paused: no server, waiting clients", Limit);
        await Eventually.True(async () => await pg.ActiveConnectionsAsync(user: Admin, database: Db) == 0, "no backend of the pool left", Limit);
        var before = await XactCount(admin, Db);
        await Task.Delay(TimeSpan.FromSeconds(5)); // the PAUSE is held for 5 s
        var after = await XactCount(admin, Db);
        var stillPaused = await PoolRow(admin, Db);
        Assert.Equal(0, Servers(stillPaused));
        Assert.Equal(before, after);

        watch.Restart();
        Assert.Equal("RESUME", (await admin.QueryAsync("RESUME", Limit)).EnsureOk().Tag);
        await Eventually.True(async () => await XactCount(admin, Db) > after, "transactions run again after RESUME", Limit);
        var resumeLatency = watch.Elapsed;

        var r = await bench.WaitAsync(TimeSpan.FromSeconds(120));
        output.WriteLine(r.StdOut);
        Assert.True(r.Succeeded, r.ToString());
        var processed = long.Parse(Processed().Match(r.StdOut).Groups[1].Value, CultureInfo.InvariantCulture);
        var failed = Failed().Match(r.StdOut);
        Assert.True(failed.Success, r.StdOut);
        Assert.Equal("0", failed.Groups[1].Value);
        Assert.True(processed > 0);
        output.WriteLine($"PAUSE took {pauseLatency.TotalMilliseconds:0} ms; while paused: cl_waiting={paused!["cl_waiting"]}; first transaction " +
                         $"{resumeLatency.TotalMilliseconds:0} ms after RESUME was sent; pgbench: {processed} transactions, 0 failed");
    }

    [GeneratedRegex(@"number of transactions actually processed: (\d+)")]
    private static partial Regex Processed();

    [GeneratedRegex(@"number of failed transactions: (\d+)")]
    private static partial Regex Failed();

    [Fact]
    public async Task Pause_returns_only_once_the_open_transaction_committed()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        await using var observer = await ConsoleAsync(p);
        await using var c = await p.OpenAsync(pg);
        await using var late = await p.OpenAsync(pg, applicationName: "late"); // opened (types loaded) before the PAUSE
        await using var tx = await c.BeginTransactionAsync();
        var pid = await BackendPid(c);

        await admin.SendQueryAsync("PAUSE " + Db);
        var pause = admin.ReadResultAsync(Limit);
        // the pool is paused (a new transaction queues) but PAUSE waits for the open one
        await Eventually.True(async () => (await Show(observer, "DATABASES")).Maps().Single(r => r["name"] == Db)["paused"] == "1",
            "SHOW DATABASES says paused", Limit);
        var lateQuery = BackendPid(late);
        await Eventually.True(async () => Int(await PoolRow(observer, Db), "cl_waiting") == 1, "a new transaction queues while paused", Limit);
        Assert.False(pause.IsCompleted, "PAUSE answered while a transaction was open");
        Assert.Equal(1, Int(await PoolRow(observer, Db), "sv_active"));

        var watch = Stopwatch.StartNew();
        await tx.CommitAsync();
        Assert.Equal("PAUSE", (await pause).EnsureOk().Tag);
        output.WriteLine($"PAUSE answered {watch.Elapsed.TotalMilliseconds:0} ms after the COMMIT");
        Assert.Equal(0, Servers(await PoolRow(observer, Db)));
        await Eventually.True(async () => (long)(await pg.ScalarAsync($"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"))! == 0,
            "the paused pool's backend has exited", Limit);
        Assert.False(lateQuery.IsCompleted);

        Assert.Equal("RESUME", (await admin.QueryAsync("RESUME " + Db)).EnsureOk().Tag);
        Assert.NotEqual(pid, await lateQuery.WaitAsync(Limit));
        AssertError(await admin.QueryAsync("RESUME " + Db), "08P01", $"database {Db} is not paused");
    }

    [Fact]
    public async Task A_paused_node_opens_no_server_for_a_database_first_used_during_the_pause()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        Assert.Equal("PAUSE", (await admin.QueryAsync("PAUSE")).EnsureOk().Tag);
        // the first client of other_db: its pool is created paused, and may not log in to the (maybe restarting) database
        var first = Task.Run(async () =>
        {
            await using var c = await p.OpenAsync(pg, database: OtherDb);
            return await BackendPid(c);
        });
        await Eventually.True(async () => await PoolRow(admin, OtherDb) != null || first.IsCompleted, "the other_db pool exists", Limit);
        Assert.Equal(0, Servers(await PoolRow(admin, OtherDb)));
        Assert.Equal(0, await pg.ActiveConnectionsAsync(user: PostgresFixture.ScramUser, database: OtherDb));
        Assert.False(first.IsCompleted, "a client logged in through a paused pool");
        // nor did one log in and close meanwhile (the servers' INFO lines are the record)
        Assert.DoesNotContain(p.OutputLines, l => l.Contains($"pool {OtherDb}/", StringComparison.Ordinal) && l.Contains("logged in to", StringComparison.Ordinal));

        Assert.Equal("RESUME", (await admin.QueryAsync("RESUME")).EnsureOk().Tag);
        Assert.True(await first.WaitAsync(Limit) > 0);
    }

    [Fact]
    public async Task Show_state_says_whether_the_node_is_paused()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        async Task<string?[][]> State()
        {
            var s = (await admin.QueryAsync("SHOW STATE")).EnsureOk();
            Assert.Equal([("key", 25), ("value", 25)], s.Columns);
            return s.Rows.Select(r => r.ToArray()).ToArray();
        }
        Assert.Equal([["active", "yes"], ["paused", "no"], ["suspended", "no"]], await State());
        Assert.Equal("PAUSE", (await admin.QueryAsync("PAUSE")).EnsureOk().Tag);
        Assert.Equal([["active", "no"], ["paused", "yes"], ["suspended", "no"]], await State());
        Assert.Equal("RESUME", (await admin.QueryAsync("RESUME")).EnsureOk().Tag);
        Assert.Equal([["active", "yes"], ["paused", "no"], ["suspended", "no"]], await State());
        // also with a pool in use: a client's pool paused and resumed with the node
        await using (var c = await p.OpenAsync(pg)) await BackendPid(c);
        Assert.Equal("PAUSE", (await admin.QueryAsync("PAUSE", Limit)).EnsureOk().Tag);
        Assert.Equal([["active", "no"], ["paused", "yes"], ["suspended", "no"]], await State());
        Assert.Equal("RESUME", (await admin.QueryAsync("RESUME")).EnsureOk().Tag);
        Assert.Equal([["active", "yes"], ["paused", "no"], ["suspended", "no"]], await State());
    }

    // ---------------- KILL ----------------

    [Fact]
    public async Task Kill_closes_the_databases_clients_leaves_others_and_new_clients_wait_for_resume()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        await using var victim = await ConsoleClient.ConnectAsync(p.Port, PostgresFixture.ScramUser, PostgresFixture.ScramPassword, Db);
        (await victim.QueryAsync("SELECT 1")).EnsureOk();
        await using var bystander = await p.OpenAsync(pg, database: OtherDb);
        await BackendPid(bystander);

        Assert.Equal("KILL", (await admin.QueryAsync("KILL " + Db, Limit)).EnsureOk().Tag);
        var fatal = await victim.ReadAsync(Limit);
        Assert.Equal('E', fatal?.Type);
        var f = PgFields.Parse(fatal!.Value.Body);
        Assert.Equal(("FATAL", "08P01", "database removed"), (f.Severity, f.SqlState, f.Message));
        Assert.Null(await victim.ReadAsync(Limit));

        await BackendPid(bystander); // another database's client goes on
        Assert.Equal(0, Servers(await PoolRow(admin, Db)));

        // a new client of the killed database waits until RESUME
        var newcomer = Task.Run(async () =>
        {
            await using var c = await p.OpenAsync(pg, applicationName: "newcomer");
            return await BackendPid(c);
        });
        await Eventually.True(async () => Int(await PoolRow(admin, Db), "cl_waiting") == 1 || newcomer.IsCompleted, "the newcomer waits", Limit);
        Assert.False(newcomer.IsCompleted, "a client of the killed database ran before RESUME");
        Assert.Equal("RESUME", (await admin.QueryAsync("RESUME " + Db)).EnsureOk().Tag);
        Assert.True(await newcomer.WaitAsync(Limit) > 0);
    }

    // ---------------- RECONNECT / WAIT_CLOSE ----------------

    [Fact]
    public async Task Wait_close_after_reconnect_returns_once_the_old_servers_are_gone()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        await using var observer = await ConsoleAsync(p);
        await using var busy = await p.OpenAsync(pg);
        await using var tx = await busy.BeginTransactionAsync();
        var busyPid = await BackendPid(busy);
        await using var idle = await p.OpenAsync(pg);
        var idlePid = await BackendPid(idle); // its server is idle in the pool now
        Assert.NotEqual(busyPid, idlePid);
        var old = new[] { busyPid, idlePid }.Select(x => x.ToString(CultureInfo.InvariantCulture)).ToHashSet();
        Assert.Equal(old, (await Show(observer, "SERVERS")).Maps().Select(r => r["remote_pid"]!).ToHashSet());

        Assert.Equal("RECONNECT", (await admin.QueryAsync("RECONNECT " + Db)).EnsureOk().Tag);
        await admin.SendQueryAsync("WAIT_CLOSE " + Db);
        var waitClose = admin.ReadResultAsync(Limit);
        // the idle one goes at once; the busy one is still in its transaction
        await Eventually.True(async () => (await Show(observer, "SERVERS")).Maps().All(r => r["remote_pid"] != idlePid.ToString(CultureInfo.InvariantCulture)),
            "the idle old server is closed", Limit);
        Assert.False(waitClose.IsCompleted, "WAIT_CLOSE answered while an old server was in a transaction");
        var newPid = await BackendPid(idle); // new work gets a new server meanwhile
        Assert.DoesNotContain(newPid.ToString(CultureInfo.InvariantCulture), old);

        await tx.CommitAsync();
        Assert.Equal("WAIT_CLOSE", (await waitClose).EnsureOk().Tag);
        var pids = (await Show(observer, "SERVERS")).Maps().Select(r => r["remote_pid"]!).ToList();
        Assert.DoesNotContain(pids, old.Contains);
        await Eventually.True(async () => (long)(await pg.ScalarAsync($"SELECT count(*) FROM pg_stat_activity WHERE pid IN ({busyPid}, {idlePid})"))! == 0,
            "the old backends have exited", Limit);
        Assert.DoesNotContain((await BackendPid(busy)).ToString(CultureInfo.InvariantCulture), old);
    }

    // ---------------- RELOAD ----------------

    [Fact]
    public async Task Reload_applies_a_new_pool_size_keeps_clients_and_refuses_an_invalid_file()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        await using var client = await p.OpenAsync(pg);
        await using var tx = await client.BeginTransactionAsync(); // a client in a transaction across both reloads
        await BackendPid(client);
        string PoolSize(QueryResult config) => config.Maps().Single(r => r["key"] == "default_pool_size")["value"]!;
        Assert.Equal("5", PoolSize(await Show(admin, "CONFIG")));

        p.WriteConfig(Config("default-pool-size = 7", p.Port));
        Assert.Equal("RELOAD", (await admin.QueryAsync("RELOAD", Limit)).EnsureOk().Tag);
        Assert.Equal("7", PoolSize(await Show(admin, "CONFIG")));
        Assert.Equal("7", (await Show(admin, "DATABASES")).Maps().Single(r => r["name"] == Db)["pool_size"]);
        await BackendPid(client);

        p.WriteConfig(Config("default-pool-size = 0", p.Port));
        var refused = await admin.QueryAsync("RELOAD", Limit);
        Assert.True(refused.Error != null, $"RELOAD of an invalid file answered {refused}");
        Assert.Equal(("ERROR", "08P01"), (refused.Error.Severity, refused.Error.SqlState));
        Assert.Contains("default-pool-size", refused.Error.Message);
        Assert.Equal("7", PoolSize(await Show(admin, "CONFIG")));

        await BackendPid(client);
        await tx.CommitAsync();
        await BackendPid(client);
        Assert.False(p.HasExited);
    }

    // ---------------- SHUTDOWN ----------------

    [Fact]
    public async Task Shutdown_ends_the_process_with_exit_code_0()
    {
        await using var p = await StartAsync();
        await using var admin = await ConsoleAsync(p);
        await using var client = await p.OpenAsync(pg);
        await BackendPid(client);
        var watch = Stopwatch.StartNew();
        await admin.SendQueryAsync("SHUTDOWN");
        Assert.Equal(0, await p.WaitForExitAsync(Limit));
        output.WriteLine($"SHUTDOWN to exit: {watch.Elapsed.TotalMilliseconds:0} ms");
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"SHUTDOWN took {watch.Elapsed}");
    }
}
