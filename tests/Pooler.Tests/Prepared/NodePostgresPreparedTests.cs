using System.Globalization;
using System.Text.Json;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Pooler.Tests.Ops;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Prepared;

/// <summary>
/// Protocol-level named prepared statements in transaction pooling, driven by node-postgres (npm <c>pg</c> 8)
/// "named queries": pg sends Parse with the name once per connection, afterwards only Bind/Describe/Execute/Sync by
/// that name, so each client's statements must follow it to whatever server its next transaction lands on. The
/// scripts (tests/Pooler.Tests/node) check every value themselves and print a JSON summary; from here the tests
/// check the summary, SHOW STATS of the admin console, and what each server holds in pg_prepared_statements.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class NodePostgresPreparedTests(PostgresFixture pg, ITestOutputHelper output)
{
    private const string Db = PostgresFixture.Database;
    private static readonly TimeSpan RunLimit = TimeSpan.FromMinutes(3);

    private static string Settings(int poolSize, string extra = "") => $"""
        pool-mode = transaction
        default-pool-size = {poolSize}
        admin-users = [{PostgresFixture.AdminUser}]
        {extra}
        """;

    private async Task<NodeResult> RunNodeAsync(string script, int port, IReadOnlyDictionary<string, string>? env = null)
    {
        var r = await NodePg.RunAsync(script, port, environment: env, timeout: RunLimit);
        output.WriteLine($"node {script} (port {port}): exit {r.Process.ExitCode}{(r.Process.TimedOut ? " timed out" : "")}, {r.Process.Elapsed.TotalSeconds:0.0} s");
        output.WriteLine(r.Process.StdOut.TrimEnd());
        if (r.Process.StdErr.Length > 0) output.WriteLine("stderr: " + r.Process.StdErr.TrimEnd());
        return r;
    }

    // ---------------- 1. many clients, shared and own names, transactions ----------------

    [Fact]
    public async Task Twenty_pg_clients_run_named_queries_across_three_servers_with_correct_results()
    {
        const int poolSize = 3;
        await using var p = await PoolerHarness.StartAsync(pg, Settings(poolSize));

        var run = await RunNodeAsync("named-load.js", p.Port, new Dictionary<string, string> { ["CLIENTS"] = "20", ["ITERATIONS"] = "50" });
        var s = run.EnsureSuccess("20 pg clients x 50 iterations of named queries through the pooler");

        var executions = s.GetProperty("namedExecutions").GetInt64();
        var clientParses = s.GetProperty("clientParses").GetInt64();
        var distinctTexts = s.GetProperty("distinctTexts").GetInt32();
        var pids = s.GetProperty("backendPids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(20 * (40 * 4 + 10 * 2), executions);           // 40 rounds of 4 named queries, 10 blocks of 2
        Assert.Equal(20 * 6, clientParses);                         // 6 names per client
        Assert.Equal(20 * 10, s.GetProperty("transactions").GetInt64());
        // the clients really shared the pool's servers and moved between them
        Assert.InRange(pids.Length, 2, poolSize);
        Assert.True(s.GetProperty("clientsOnSeveralServers").GetInt32() > 0, $"no client ran on more than one server: {s}");

        // SHOW STATS: every Parse and named Bind counted; one server statement per text and server (shared names)
        var stats = await StatsAsync(p, r => r.ClientParses >= clientParses && r.Binds >= executions,
            $"SHOW STATS to count {clientParses} client parses and {executions} binds");
        Assert.Equal(clientParses, stats.ClientParses);
        Assert.Equal(executions, stats.Binds);
        Assert.InRange(stats.ServerParses, distinctTexts, (long)distinctTexts * poolSize);

        // each server holds only renamed statements, at most one per distinct text (well under max-prepared-statements = 200)
        var servers = await ServerStatementsAsync(p, poolSize);
        foreach (var sv in servers)
        {
            Assert.True(sv.All == sv.Renamed, $"server {sv.Pid} has statements not named PLR_*: {sv.Names}");
            Assert.True(sv.Renamed <= Math.Min(200, distinctTexts), $"server {sv.Pid} keeps {sv.Renamed} statements for {distinctTexts} texts: {sv.Names}");
        }
        Assert.True(servers.Sum(sv => sv.Renamed) >= distinctTexts, $"fewer server statements than texts: {string.Join("; ", servers)}");

        await p.AssertDrainedAsync(servers: poolSize, "after the node clients ended");
    }

    // ---------------- 2. errors ----------------

    [Fact]
    public async Task A_named_query_with_invalid_sql_fails_with_42601_and_the_client_goes_on_and_can_reuse_the_name()
    {
        var env = new Dictionary<string, string> { ["CLIENTS"] = "4", ["ROUNDS"] = "8" };
        // the script's expectations are PostgreSQL's own answers: check them directly first
        var direct = await RunNodeAsync("named-errors.js", pg.Port, env);
        var expected = direct.EnsureSuccess("named-errors.js directly against PostgreSQL (control run)");

        await using var p = await PoolerHarness.StartAsync(pg, Settings(poolSize: 2));
        var run = await RunNodeAsync("named-errors.js", p.Port, env);
        var s = run.EnsureSuccess("named-errors.js through the pooler");

        Assert.Equal(4 * 8, s.GetProperty("completedRounds").GetInt32());
        Assert.Equal(Errors(expected), Errors(s));
        Assert.Equal(new Dictionary<string, int> { ["42601"] = 64, ["25P02"] = 32, ["22012"] = 32 }, Errors(s));
        Assert.Equal(expected.GetProperty("namedExecutions").GetInt64(), s.GetProperty("namedExecutions").GetInt64());

        var servers = await ServerStatementsAsync(p, 2);
        Assert.All(servers, sv => Assert.True(sv.All == sv.Renamed, $"server {sv.Pid} has statements not named PLR_*: {sv.Names}"));
        await p.AssertDrainedAsync(servers: 2, "after the node clients ended");
    }

    private static Dictionary<string, int> Errors(JsonElement summary)
        => summary.GetProperty("errors").EnumerateObject().ToDictionary(e => e.Name, e => e.Value.GetInt32());

    // ---------------- 3. names are per client ----------------

    [Fact]
    public async Task The_same_name_in_different_pg_clients_means_each_clients_own_statement()
    {
        var env = new Dictionary<string, string> { ["CLIENTS"] = "8", ["ITERATIONS"] = "30" };
        var direct = await RunNodeAsync("named-same-name.js", pg.Port, env);
        direct.EnsureSuccess("named-same-name.js directly against PostgreSQL (control run)");

        await using var p = await PoolerHarness.StartAsync(pg, Settings(poolSize: 2));
        var run = await RunNodeAsync("named-same-name.js", p.Port, env);
        var s = run.EnsureSuccess("named-same-name.js through the pooler");
        Assert.Equal(8 * 30 * 3, s.GetProperty("namedExecutions").GetInt64());
        Assert.Equal(8 * 3, s.GetProperty("clientParses").GetInt64());

        // 4 texts under 'q', plus the 2 texts swapped between 'x' and 'y': at most 6 statements per server
        var servers = await ServerStatementsAsync(p, 2);
        foreach (var sv in servers)
        {
            Assert.True(sv.All == sv.Renamed, $"server {sv.Pid} has statements not named PLR_*: {sv.Names}");
            Assert.True(sv.Renamed <= 6, $"server {sv.Pid} keeps {sv.Renamed} statements for 6 texts: {sv.Names}");
        }
        await p.AssertDrainedAsync(servers: 2, "after the node clients ended");
    }

    // ---------------- 4. more texts than max-prepared-statements ----------------

    [Fact]
    public async Task With_more_texts_than_max_prepared_statements_servers_evict_and_results_stay_correct()
    {
        const int poolSize = 3, max = 4, texts = 8;
        await using var p = await PoolerHarness.StartAsync(pg, Settings(poolSize, $"max-prepared-statements = {max}"));

        var run = await RunNodeAsync("named-evict.js", p.Port, new Dictionary<string, string>
        {
            ["CLIENTS"] = "10", ["ITERATIONS"] = "40", ["TEXTS"] = texts.ToString(CultureInfo.InvariantCulture), ["WIDE"] = "6",
        });
        var s = run.EnsureSuccess("named-evict.js through the pooler with max-prepared-statements = 4");
        var executions = s.GetProperty("namedExecutions").GetInt64();
        Assert.Equal(10 * (30 * 2 + 10 * 6), executions);

        var stats = await StatsAsync(p, r => r.Binds >= executions, $"SHOW STATS to count {executions} binds");
        Assert.Equal(executions, stats.Binds);
        Assert.Equal(s.GetProperty("clientParses").GetInt64(), stats.ClientParses);
        Assert.True(stats.ServerParses > texts, $"servers capped at {max} statements prepared only {stats.ServerParses} times for {texts} texts");

        foreach (var sv in await ServerStatementsAsync(p, poolSize))
        {
            Assert.True(sv.All == sv.Renamed, $"server {sv.Pid} has statements not named PLR_*: {sv.Names}");
            Assert.True(sv.Renamed <= max, $"server {sv.Pid} keeps {sv.Renamed} statements, more than max-prepared-statements = {max}: {sv.Names}");
        }
        await p.AssertDrainedAsync(servers: poolSize, "after the node clients ended");
    }

    // ---------------- helpers ----------------

    private sealed record StatsRow(long ClientParses, long ServerParses, long Binds);

    /// <summary>The database's SHOW STATS counters once <paramref name="ready"/> holds (they may trail the traffic).</summary>
    private async Task<StatsRow> StatsAsync(PoolerHarness p, Func<StatsRow, bool> ready, string what)
    {
        await using var console = await ConsoleClient.ConnectAsync(p.Port, PostgresFixture.AdminUser, PostgresFixture.AdminPassword, "pgbouncer");
        var row = await Eventually.Value(async () =>
        {
            var r = (await console.QueryAsync("SHOW STATS")).EnsureOk().Maps().Single(m => m["database"] == Db);
            long L(string c) => long.Parse(r[c] ?? throw new Xunit.Sdk.XunitException($"SHOW STATS has no {c}"), CultureInfo.InvariantCulture);
            return new StatsRow(L("total_client_parse_count"), L("total_server_parse_count"), L("total_bind_count"));
        }, ready, what, TimeSpan.FromSeconds(30));
        output.WriteLine($"SHOW STATS {Db}: {row}");
        Assert.True(row.ClientParses > 0 && row.ServerParses > 0 && row.Binds > 0, $"SHOW STATS counters: {row}");
        return row;
    }

    private sealed record ServerStatements(int Pid, long All, long Renamed, string Names);

    /// <summary>
    /// pg_prepared_statements of every server of the pool: <paramref name="servers"/> Npgsql connections through the
    /// pooler each open a transaction, which pins one server per connection, and look at that session's statements.
    /// </summary>
    private async Task<IReadOnlyList<ServerStatements>> ServerStatementsAsync(PoolerHarness p, int servers)
    {
        var conns = new List<NpgsqlConnection>();
        var result = new List<ServerStatements>();
        try
        {
            for (var i = 0; i < servers; i++)
            {
                var c = await p.OpenAsync();
                conns.Add(c);
                var tx = await c.BeginTransactionAsync();
                await using var cmd = new NpgsqlCommand("""
                    select pg_backend_pid(), count(*), count(*) filter (where name like 'PLR\_%'),
                           coalesce(string_agg(name || ' = ' || left(statement, 60), '; ' order by name), '')
                    from pg_prepared_statements
                    """, c, tx);
                await using var reader = await cmd.ExecuteReaderAsync();
                Assert.True(await reader.ReadAsync());
                result.Add(new ServerStatements(reader.GetInt32(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetString(3)));
            }
        }
        finally
        {
            foreach (var c in conns) await c.DisposeAsync();
        }
        foreach (var sv in result) output.WriteLine($"server {sv.Pid}: {sv.Renamed} PLR_* of {sv.All} prepared statements");
        Assert.Equal(servers, result.Select(r => r.Pid).Distinct().Count()); // one transaction per server
        return result;
    }
}
