using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;
using static Pooler.Tests.Infrastructure.ExtendedProtocol;

namespace Pooler.Tests.Prepared;

/// <summary>
/// Named prepared statements through transaction pooling, end to end: real PostgreSQL, the in-process pooler,
/// raw protocol clients, Npgsql and pgbench. Each client's statements must work on whichever server its next
/// transaction lands on, with PostgreSQL's own answers and errors, and each server must keep at most
/// max-prepared-statements of them.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class PreparedPoolingTests(PostgresFixture pg, ITestOutputHelper output)
{
    private const string Trust = "auth.type = trust\npool-mode = transaction\n";

    private Task<RawPgConnection> RawAsync(PoolerHarness p) => RawPgConnection.ConnectAsync(p.Port, PostgresFixture.TrustUser, PostgresFixture.Database);

    private static async Task<List<RawPgMessage>> RunAsync(RawPgConnection c, params byte[][] messages)
    {
        await c.WriteRawAsync(messages.SelectMany(m => m).ToArray());
        return await c.ReadUntilReadyAsync();
    }

    private static string DataRow(List<RawPgMessage> reply) => reply.Single(m => m.Type == 'D').FirstColumn()!;

    [Fact]
    public async Task A_client_moved_to_another_server_between_Parse_and_Bind_runs_its_statement_there()
    {
        await using var p = await PoolerHarness.StartAsync(pg, Trust + "default-pool-size = 2");
        await using var c = await RawAsync(p);

        // transaction 1: only the Parse, on server A
        Assert.Equal("CZ", Types(await c.QueryAsync("BEGIN")));
        Assert.Equal("1Z", Types(await RunAsync(c, Parse("double", "select $1::int * 2", 23), Sync)));
        var serverA = await c.ScalarAsync("select pg_backend_pid()");
        Assert.Equal("CZ", Types(await c.QueryAsync("COMMIT")));

        // another client holds A in a transaction, so the next transaction can only get B
        var holders = new List<NpgsqlConnection>();
        NpgsqlTransaction? holdingA = null;
        try
        {
            while (holdingA == null)
            {
                Assert.True(holders.Count < 2, "with a pool of 2, one of two held servers is A");
                var h = await p.OpenAsync(PostgresFixture.TrustUser); // the same pool (database and user) as the raw client
                holders.Add(h);
                var tx = await h.BeginTransactionAsync();
                await using var cmd = new NpgsqlCommand("select pg_backend_pid()", h, tx);
                if (((int)(await cmd.ExecuteScalarAsync())!).ToString(CultureInfo.InvariantCulture) == serverA) holdingA = tx;
            }
            foreach (var h in holders.Where(h => h != holdingA.Connection)) await h.CloseAsync(); // B is free again

            // transaction 2: Bind and Execute land on B, where the pooler prepares the statement first
            var reply = await RunAsync(c, Bind("double", "21"), Execute, Sync);
            Assert.Equal("2DCZ", Types(reply)); // no ParseComplete the client did not ask for
            Assert.Equal("42", DataRow(reply));
            var serverB = await c.ScalarAsync("select pg_backend_pid()");
            Assert.NotEqual(serverA, serverB);

            // Describe of the statement also works there, and the statement keeps working
            reply = await RunAsync(c, Describe("double"), Bind("double", "4"), Execute, Sync);
            Assert.Equal("tT2DCZ", Types(reply));
            Assert.Equal("8", DataRow(reply));
        }
        finally
        {
            foreach (var h in holders) await h.DisposeAsync();
        }

        // back on A (it has the statement already): nothing is prepared twice
        var again = await RunAsync(c, Bind("double", "50"), Execute, Sync);
        Assert.Equal("100", DataRow(again));
        await c.TerminateAsync();
        await p.AssertDrainedAsync(servers: 2);
    }

    [Fact]
    public async Task Each_server_keeps_at_most_max_prepared_statements_under_a_thousand_distinct_ones()
    {
        const int Bound = 50, Statements = 1000;
        await using var p = await PoolerHarness.StartAsync(pg, Trust + $"default-pool-size = 2\nmax-prepared-statements = {Bound}");
        await using var c = await RawAsync(p);

        // one pipeline: 1000 statements prepared, bound and run, each in its own unit
        var pipeline = new List<byte[]>();
        for (var i = 0; i < Statements; i++) pipeline.AddRange([Parse($"s{i}", $"select {i} + $1::int", 23), Bind($"s{i}", "1"), Execute, Sync]);
        await c.WriteRawAsync(pipeline.SelectMany(m => m).ToArray());
        for (var i = 0; i < Statements; i++)
        {
            var reply = await c.ReadUntilReadyAsync();
            Assert.Equal("12DCZ", Types(reply));
            Assert.Equal((i + 1).ToString(CultureInfo.InvariantCulture), DataRow(reply));
        }

        // every statement still works: the evicted ones are prepared again where they run
        for (var i = 0; i < Statements; i += 37)
        {
            var reply = await RunAsync(c, Bind($"s{i}", "2"), Execute, Sync);
            Assert.Equal((i + 2).ToString(CultureInfo.InvariantCulture), DataRow(reply));
        }

        // on every server PostgreSQL itself holds no more than the bound (both servers, several looks)
        var seen = new Dictionary<string, int>();
        for (var i = 0; i < 20 && seen.Count < 2; i++)
        {
            await using var other = await RawAsync(p); // new clients spread over both servers
            var pid = await other.ScalarAsync("select pg_backend_pid()");
            seen[pid!] = int.Parse((await other.ScalarAsync("select count(*) from pg_prepared_statements"))!, CultureInfo.InvariantCulture);
        }
        output.WriteLine($"pg_prepared_statements per server: {string.Join(", ", seen.Select(kv => $"{kv.Key}={kv.Value}"))}");
        Assert.All(seen.Values, n => Assert.InRange(n, 1, Bound));

        await c.TerminateAsync();
        await p.AssertDrainedAsync(servers: 2);
    }

    [Fact]
    public async Task Errors_are_PostgreSQLs_and_leave_nothing_stale()
    {
        await using var p = await PoolerHarness.StartAsync(pg, Trust + "default-pool-size = 1");
        await using var c = await RawAsync(p);

        // a Parse error reaches the client as PostgreSQL sent it; the name is not kept
        var reply = await RunAsync(c, Parse("bad", "selec 1"), Bind("bad"), Execute, Sync);
        Assert.Equal("EZ", Types(reply));
        Assert.Equal(("42601", "syntax error at or near \"selec\""), (reply[0].Fields()['C'], reply[0].Fields()['M']));
        reply = await RunAsync(c, Bind("bad"), Execute, Sync);
        Assert.Equal("26000", reply[0].Fields()['C']);
        Assert.Equal("prepared statement \"bad\" does not exist", reply[0].Fields()['M']); // the client's own name
        // the name can be used again with a good query
        Assert.Equal("7", DataRow(await RunAsync(c, Parse("bad", "select 7"), Bind("bad"), Execute, Sync)));

        // a name in use: PostgreSQL's 42P05 for the client's name, the rest of the unit skipped, the first statement kept
        Assert.Equal("1Z", Types(await RunAsync(c, Parse("dup", "select 1"), Sync)));
        reply = await RunAsync(c, Parse("dup", "select 2"), Bind("dup"), Execute, Sync);
        Assert.Equal("EZ", Types(reply));
        Assert.Equal(("ERROR", "42P05", "prepared statement \"dup\" already exists"), (reply[0].Fields()['S'], reply[0].Fields()['C'], reply[0].Fields()['M']));
        Assert.Equal("1", DataRow(await RunAsync(c, Bind("dup"), Execute, Sync)));

        // a statement whose result type changed after DDL: PostgreSQL's error once, then prepared again
        await pg.ExecuteAsync("drop table if exists prep_ddl; create table prep_ddl(a int); insert into prep_ddl values (1); grant all on prep_ddl to public");
        Assert.Equal("1", DataRow(await RunAsync(c, Parse("all_rows", "select * from prep_ddl"), Bind("all_rows"), Execute, Sync)));
        await pg.ExecuteAsync("alter table prep_ddl add column b int default 2");
        reply = await RunAsync(c, Bind("all_rows"), Execute, Sync);
        Assert.Equal("EZ", Types(reply));
        Assert.Equal(("0A000", "cached plan must not change result type"), (reply[0].Fields()['C'], reply[0].Fields()['M']));
        reply = await RunAsync(c, Bind("all_rows"), Execute, Sync);
        Assert.Equal("2DCZ", Types(reply));
        Assert.Equal(["1", "2"], reply.Single(m => m.Type == 'D').Columns());

        // an error in the middle of a pipeline: the statements after it in the same unit are skipped, later units work
        reply = await RunAsync(c, Parse("p1", "select 1/0"), Bind("p1"), Execute, Parse("p2", "select 2"), Sync);
        Assert.Equal("1EZ", Types(reply));
        Assert.Equal("22012", reply[1].Fields()['C']);
        reply = await RunAsync(c, Bind("p2"), Execute, Sync);
        Assert.Equal("26000", reply[0].Fields()['C']); // skipped by PostgreSQL, so unknown, as it would be there
        Assert.Equal("2", DataRow(await RunAsync(c, Parse("p2", "select 2"), Bind("p2"), Execute, Sync)));
        await c.TerminateAsync();
    }

    [Fact]
    public async Task Discard_and_deallocate_all_drop_the_clients_statements_and_a_failed_one_leaves_the_server_clean()
    {
        await using var p = await PoolerHarness.StartAsync(pg, Trust + "default-pool-size = 1");
        await using var c = await RawAsync(p);
        Assert.Equal("1", DataRow(await RunAsync(c, Parse("one", "select 1"), Bind("one"), Execute, Sync)));
        Assert.Equal("CZ", Types(await c.QueryAsync("DISCARD ALL")));
        Assert.Equal("26000", (await RunAsync(c, Bind("one"), Execute, Sync))[0].Fields()['C']);
        Assert.Equal("1", DataRow(await RunAsync(c, Parse("one", "select 1"), Bind("one"), Execute, Sync)));
        Assert.Equal("CZ", Types(await c.QueryAsync("DEALLOCATE ALL")));
        Assert.Equal("26000", (await RunAsync(c, Bind("one"), Execute, Sync))[0].Fields()['C']);

        // DISCARD ALL inside a transaction fails: the server still has the statement, the pooler cleans it up after
        Assert.Equal("1", DataRow(await RunAsync(c, Parse("one", "select 1"), Bind("one"), Execute, Sync)));
        Assert.Equal("CZ", Types(await c.QueryAsync("BEGIN")));
        var failed = await c.QueryAsync("DISCARD ALL");
        Assert.Equal("25001", failed[0].Fields()['C']);
        Assert.Equal("CZ", Types(await c.QueryAsync("ROLLBACK")));
        // the same query prepared again on the only server: no "already exists"
        Assert.Equal("1", DataRow(await RunAsync(c, Parse("one", "select 1"), Bind("one"), Execute, Sync)));

        // SQL-level PREPARE/EXECUTE pass through untouched, bound to the server (here: within a transaction)
        Assert.Equal("CZ", Types(await c.QueryAsync("BEGIN")));
        Assert.Equal("CZ", Types(await c.QueryAsync("PREPARE sql_level AS select 5")));
        Assert.Equal("5", await c.ScalarAsync("EXECUTE sql_level"));
        Assert.Equal("CZ", Types(await c.QueryAsync("DEALLOCATE sql_level")));
        Assert.Equal("CZ", Types(await c.QueryAsync("COMMIT")));
        await c.TerminateAsync();
    }

    [Fact]
    public async Task Zero_turns_renaming_off_and_session_pooling_never_renames()
    {
        // off: names reach PostgreSQL as sent, so a second client on the same server collides (as with PgBouncer 1.18)
        await using (var p = await PoolerHarness.StartAsync(pg, Trust + "default-pool-size = 1\nmax-prepared-statements = 0"))
        {
            await using var a = await RawAsync(p);
            await using var b = await RawAsync(p);
            Assert.Equal("1Z", Types(await RunAsync(a, Parse("s", "select 1"), Sync)));
            var clash = await RunAsync(b, Parse("s", "select 2"), Sync);
            Assert.Equal(("42P05", "prepared statement \"s\" already exists"), (clash[0].Fields()['C'], clash[0].Fields()['M']));
            Assert.Equal("s", await a.ScalarAsync("select string_agg(name, ',') from pg_prepared_statements"));
        }
        // session pooling: the server is the client's, its names are its own
        await using (var p = await PoolerHarness.StartAsync(pg, "auth.type = trust\npool-mode = session\ndefault-pool-size = 2"))
        {
            await using var a = await RawAsync(p);
            Assert.Equal("1Z", Types(await RunAsync(a, Parse("mine", "select 1"), Sync)));
            Assert.Equal("mine", await a.ScalarAsync("select string_agg(name, ',') from pg_prepared_statements"));
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(200)]
    public async Task A_header_cut_at_a_transaction_boundary_goes_to_the_next_server_with_its_message(int maxPrepared)
    {
        await using var p = await PoolerHarness.StartAsync(pg, Trust + $"default-pool-size = 1\nmax-prepared-statements = {maxPrepared}");
        await using var a = await RawAsync(p);
        await using var b = await RawAsync(p);
        var next = Query("select 'a2'");
        // a's query and the first 3 bytes of its next one's header, in one write
        await a.WriteRawAsync([.. Query("select 'a1'"), .. next[..3]]);
        Assert.Equal("a1", DataRow(await a.ReadUntilReadyAsync()));
        // the only server went back to the pool after a1: b's query runs on it, and must find it clean
        Assert.Equal("b1", await b.ScalarAsync("select 'b1'"));
        await a.WriteRawAsync(next[3..]);
        Assert.Equal("a2", DataRow(await a.ReadUntilReadyAsync()));
        Assert.Equal("b2", await b.ScalarAsync("select 'b2'"));
    }

    [Fact]
    public async Task Statement_pooling_renames_too()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "auth.type = trust\npool-mode = statement\ndefault-pool-size = 2");
        await using var a = await RawAsync(p);
        await using var b = await RawAsync(p);
        // the same name for two clients on two shared servers: each has its own statement
        Assert.Equal("1Z", Types(await RunAsync(a, Parse("s", "select $1::int * 3", 23), Sync)));
        Assert.Equal("1Z", Types(await RunAsync(b, Parse("s", "select $1::int * 5", 23), Sync)));
        var pids = new HashSet<string?>();
        for (var i = 0; i < 10; i++)
        {
            var (ra, rb) = (RunAsync(a, Bind("s", i.ToString(CultureInfo.InvariantCulture)), Execute, Sync),
                            RunAsync(b, Bind("s", i.ToString(CultureInfo.InvariantCulture)), Execute, Sync));
            Assert.Equal((3 * i).ToString(CultureInfo.InvariantCulture), DataRow(await ra));
            Assert.Equal((5 * i).ToString(CultureInfo.InvariantCulture), DataRow(await rb));
            pids.Add(await a.ScalarAsync("select pg_backend_pid()"));
        }
        output.WriteLine($"client a ran on {pids.Count} servers");
        await a.TerminateAsync();
        await b.TerminateAsync();
        await p.AssertDrainedAsync(servers: 2);
    }

    [Fact]
    public async Task Npgsql_auto_prepare_and_explicit_Prepare_work_across_servers()
    {
        await using var p = await PoolerHarness.StartAsync(pg, Admin + "pool-mode = transaction\ndefault-pool-size = 3");
        var auto = p.ConnectionString() + ";Max Auto Prepare=10;Auto Prepare Min Usages=2";
        var pids = new System.Collections.Concurrent.ConcurrentDictionary<int, byte>();

        async Task Client(int id)
        {
            await using var conn = new NpgsqlConnection(auto);
            await conn.OpenAsync();
            await using var explicitCmd = new NpgsqlCommand("select $1::int * 10 + $2::int", conn);
            explicitCmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Integer });
            explicitCmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Integer });
            await explicitCmd.PrepareAsync();
            Assert.True(explicitCmd.IsPrepared);
            for (var i = 0; i < 40; i++)
            {
                await using var tx = await conn.BeginTransactionAsync();
                await using (var autoCmd = new NpgsqlCommand("select $1::int + 1, pg_backend_pid()", conn, tx))
                {
                    autoCmd.Parameters.AddWithValue(i);
                    await using var r = await autoCmd.ExecuteReaderAsync();
                    Assert.True(await r.ReadAsync());
                    Assert.Equal(i + 1, r.GetInt32(0));
                    pids.TryAdd(r.GetInt32(1), 0);
                }
                explicitCmd.Transaction = tx;
                explicitCmd.Parameters[0].Value = id;
                explicitCmd.Parameters[1].Value = i % 10;
                Assert.Equal(id * 10 + i % 10, (int)(await explicitCmd.ExecuteScalarAsync())!);
                await tx.CommitAsync();
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 12).Select(Client)).WaitAsync(TimeSpan.FromMinutes(3));
        Assert.True(pids.Count > 1, "the transactions ran on more than one server");

        var stats = await StatsAsync(p);
        output.WriteLine($"client parses {stats.ClientParses}, server parses {stats.ServerParses}, binds {stats.Binds}");
        Assert.True(stats.ClientParses >= 24, $"each client prepared two statements: {stats.ClientParses}");
        Assert.True(stats.Binds >= 12 * 40 * 2 - 12 * 2, $"binds {stats.Binds}"); // auto-prepare starts at its second use
        Assert.InRange(stats.ServerParses, 1, stats.ClientParses + 3 * 2 * 12); // shared by clients on each server
        await p.AssertDrainedAsync(servers: 3);
    }

    [Fact]
    public async Task Pgbench_prepared_at_50_clients_through_transaction_pooling_has_no_failed_transactions()
    {
        const string User = PostgresFixture.ScramUser;
        var db = $"prep_{Guid.NewGuid().ToString("N")[..12]}";
        await pg.CreateDatabaseAsync(db, owner: User);
        try
        {
            var verifier = (string)(await pg.ScalarAsync($"select rolpassword from pg_authid where rolname = '{User}'"))!;
            await using var p = await PoolerHarness.StartAsync(pg, Admin + $$"""
                pool-mode = transaction
                default-pool-size = 10
                databases { {{db}} { host = "127.0.0.1", port = {{pg.Port}}, dbname = "{{db}}" } }
                """, usersFile: $"\"{User}\" \"{verifier}\"\n\"{PostgresFixture.AdminUser}\" \"{PostgresFixture.AdminPassword}\"\n");
            var init = await pg.RunPgbenchAsync(["-i", "-s", "1", "-q"], User, database: db, port: p.Port, host: "127.0.0.1", timeout: TimeSpan.FromMinutes(5));
            Assert.True(init.Succeeded, $"pgbench -i failed: {init}");

            // -S: one statement per transaction. (The TPC-B script would deadlock any transaction pooler with more
            // clients than servers: pgbench prepares synchronously, inside the open transaction.)
            var run = await pg.RunPgbenchAsync(["-S", "-M", "prepared", "-n", "-c", "50", "-j", "2", "-t", "200"], User, database: db,
                port: p.Port, host: "127.0.0.1", timeout: TimeSpan.FromMinutes(5));
            output.WriteLine(run.StdOut);
            Assert.True(run.Succeeded, $"pgbench failed: {run}");
            Assert.Equal("0", Field(run.StdOut, @"^number of failed transactions: (\d+)"));
            Assert.Equal("10000", Field(run.StdOut, @"^number of transactions actually processed: (\d+)"));

            var stats = await StatsAsync(p, db);
            Assert.True(stats.ClientParses >= 50, $"client parses {stats.ClientParses}");
            Assert.True(stats.Binds >= 10000, $"binds {stats.Binds}");
            Assert.InRange(stats.ServerParses, 1, 10 * 2 + 50); // each server prepares each statement about once
            await p.AssertDrainedAsync(servers: 10);
        }
        finally
        {
            await pg.DropDatabaseAsync(db);
        }
    }

    private static string? Field(string text, string pattern)
    {
        var m = Regex.Match(text, pattern, RegexOptions.Multiline);
        return m.Success ? m.Groups[1].Value : null;
    }

    private const string Admin = $"admin-users = [{PostgresFixture.AdminUser}]\n";

    /// <summary>SHOW STATS' prepared-statement counters of <paramref name="db"/>, from the admin console.</summary>
    private static async Task<(long ClientParses, long ServerParses, long Binds)> StatsAsync(PoolerHarness p, string db = PostgresFixture.Database)
    {
        await using var console = await Ops.ConsoleClient.ConnectAsync(p.Port, PostgresFixture.AdminUser, PostgresFixture.AdminPassword, "pgbouncer");
        var row = (await console.QueryAsync("SHOW STATS")).EnsureOk().Maps().Single(r => r["database"] == db);
        long L(string column) => long.Parse(row[column]!, CultureInfo.InvariantCulture);
        return (L("total_client_parse_count"), L("total_server_parse_count"), L("total_bind_count"));
    }
}
