using Npgsql;
using Pooler.Actors.Pooling;
using Pooler.Tests.Infrastructure;
using Xunit;

namespace Pooler.Tests.Integration;

/// <summary>Session, transaction and statement pooling, and the per-database pool-mode override.</summary>
[Collection(PostgresCollection.Name)]
public class PoolModeTests(PostgresFixture pg)
{
    private const string PoolKey = PostgresFixture.Database + "/" + PostgresFixture.ScramUser;

    private static async Task<Pool.Stats> StatsAsync(PoolerHarness p, string key = PoolKey)
    {
        var all = await p.PoolStatsAsync();
        Assert.True(all.TryGetValue(key, out var s), $"no pool {key}; pools: {string.Join(", ", all.Keys)}");
        return s!;
    }

    private static async Task<object?> ScalarAsync(NpgsqlConnection c, string sql, NpgsqlTransaction? tx = null)
    {
        await using var cmd = new NpgsqlCommand(sql, c, tx);
        return await cmd.ExecuteScalarAsync();
    }

    private static async Task<int> PidAsync(NpgsqlConnection c, NpgsqlTransaction? tx = null)
        => (int)(await ScalarAsync(c, "select pg_backend_pid()", tx))!;

    // ---------------- session ----------------

    [Fact]
    public async Task Session_mode_keeps_one_server_for_the_whole_client_session()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "pool-mode = session\ndefault-pool-size = 2");
        await using var a = await p.OpenAsync();
        await using var b = await p.OpenAsync();
        var pidA = await PidAsync(a);
        await ScalarAsync(a, "SET work_mem = '7MB'"); // a setting the pooler does not track
        for (var i = 0; i < 10; i++)
        {
            await using (var tx = await a.BeginTransactionAsync())
            {
                Assert.Equal(pidA, await PidAsync(a, tx));
                await tx.CommitAsync();
            }
            // another client working between a's transactions never gets a's server
            Assert.NotEqual(pidA, await PidAsync(b));
            Assert.Equal(pidA, await PidAsync(a));
            Assert.Equal("7MB", await ScalarAsync(a, "show work_mem"));
        }
        // both clients are idle, both servers stay assigned
        var s = await StatsAsync(p);
        Assert.Equal(2, s.Active);
        Assert.Equal(0, s.Idle);
    }

    [Fact]
    public async Task Session_mode_runs_the_reset_query_before_the_next_client_gets_the_server()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "pool-mode = session\ndefault-pool-size = 1");
        var defaultWorkMem = (string)(await pg.ScalarAsync("show work_mem", PostgresFixture.Database))!;
        var defaultZone = (string)(await pg.ScalarAsync("show TimeZone", PostgresFixture.Database))!;
        Assert.NotEqual("Asia/Tokyo", defaultZone);
        int firstPid;
        await using (var first = await p.OpenAsync())
        {
            firstPid = await PidAsync(first);
            await ScalarAsync(first, "create temp table session_leftover (x int)");
            await ScalarAsync(first, "insert into session_leftover values (1)");
            await ScalarAsync(first, "SET work_mem = '7MB'");
            await ScalarAsync(first, "SET TimeZone = 'Asia/Tokyo'"); // a tracked setting too
            await ScalarAsync(first, "PREPARE leftover_stmt AS select 1");
            Assert.Equal(1L, await ScalarAsync(first, "select count(*) from session_leftover"));
        }

        await using var next = await p.OpenAsync();
        Assert.Equal(firstPid, await PidAsync(next)); // pool size 1: the same server, so the reset is what cleaned it
        Assert.Equal(DBNull.Value, await ScalarAsync(next, "select to_regclass('pg_temp.session_leftover')::text"));
        var e = await Assert.ThrowsAsync<PostgresException>(() => ScalarAsync(next, "select count(*) from session_leftover"));
        Assert.Equal("42P01", e.SqlState);
        Assert.Equal(defaultWorkMem, await ScalarAsync(next, "show work_mem"));
        Assert.Equal(defaultZone, await ScalarAsync(next, "show TimeZone"));
        Assert.Equal(0L, await ScalarAsync(next, "select count(*) from pg_prepared_statements"));
    }

    // ---------------- transaction ----------------

    [Fact]
    public async Task Transaction_mode_interleaves_two_clients_on_one_server()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "default-pool-size = 1");
        await using var a = await p.OpenAsync();
        await using var b = await p.OpenAsync();

        // a holds the only server inside a transaction: b waits for it, and gets it at a's COMMIT
        var txA = await a.BeginTransactionAsync();
        var pidA = await PidAsync(a, txA);
        var bQuery = PidAsync(b);
        await Eventually.Value(() => StatsAsync(p), s => s.Waiting == 1, "b waits for the server a holds");
        Assert.False(bQuery.IsCompleted);
        await txA.CommitAsync();
        await txA.DisposeAsync();
        Assert.Equal(pidA, await bQuery.WaitAsync(TimeSpan.FromSeconds(15)));

        // both loop over transactions at once: each makes progress, always on the same single server
        async Task<HashSet<int>> Work(NpgsqlConnection c, string who)
        {
            var pids = new HashSet<int>();
            for (var i = 0; i < 30; i++)
            {
                await using var tx = await c.BeginTransactionAsync();
                var pid = await PidAsync(c, tx);
                Assert.Equal(pid, await PidAsync(c, tx)); // a transaction never moves
                Assert.Equal($"{who}{i}", await ScalarAsync(c, $"select '{who}' || {i}", tx));
                pids.Add(pid);
                await tx.CommitAsync();
            }
            return pids;
        }
        var results = await Task.WhenAll(Work(a, "a"), Work(b, "b")).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal([pidA], results[0]);
        Assert.Equal([pidA], results[1]);
        var stats = await Eventually.Value(() => StatsAsync(p), s => s.Active == 0, "the server is back in the pool");
        Assert.Equal(1, stats.Total);
    }

    [Fact]
    public async Task Transaction_mode_reapplies_each_clients_tracked_settings_on_a_shared_server()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "default-pool-size = 1");
        await using var a = await p.OpenAsync(applicationName: "client-a");
        var bBuilder = new NpgsqlConnectionStringBuilder(p.ConnectionString(applicationName: "client-b")) { Timezone = "America/New_York" };
        await using var b = new NpgsqlConnection(bBuilder.ConnectionString);
        await b.OpenAsync();

        var pid = await PidAsync(a);
        var defaultIntervalStyle = (string)(await ScalarAsync(a, "show IntervalStyle"))!;
        await ScalarAsync(a, "SET TimeZone = 'Asia/Tokyo'");              // outside a transaction
        await using (var tx = await a.BeginTransactionAsync())             // session-level SET inside a transaction
        {
            await ScalarAsync(a, "SET IntervalStyle = 'postgres_verbose'", tx);
            await ScalarAsync(a, "SET application_name = 'client-a-renamed'", tx);
            await tx.CommitAsync();
        }

        for (var round = 0; round < 5; round++)
        {
            Assert.Equal(pid, await PidAsync(b)); // pool size 1: one server for both
            Assert.Equal("America/New_York", await ScalarAsync(b, "show TimeZone"));
            Assert.Equal(defaultIntervalStyle, await ScalarAsync(b, "show IntervalStyle"));
            Assert.Equal("client-b", await ScalarAsync(b, "select current_setting('application_name')"));

            Assert.Equal(pid, await PidAsync(a));
            Assert.Equal("Asia/Tokyo", await ScalarAsync(a, "show TimeZone"));
            Assert.Equal("@ 1 hour", await ScalarAsync(a, "select interval '1 hour'::text"));
            Assert.Equal("client-a-renamed", await ScalarAsync(a, "select current_setting('application_name')"));
            // the setting is in force for the query itself, not only for SHOW
            Assert.Equal("2024-01-01 09:00:00+09", await ScalarAsync(a, "select (timestamptz '2024-01-01 00:00:00+00')::text"));
            Assert.Equal("2023-12-31 19:00:00-05", await ScalarAsync(b, "select (timestamptz '2024-01-01 00:00:00+00')::text"));
        }

        // b changes its own zone later: a is unaffected, b keeps the new one
        await ScalarAsync(b, "SET TimeZone = 'Europe/Paris'");
        Assert.Equal("Asia/Tokyo", await ScalarAsync(a, "show TimeZone"));
        Assert.Equal("Europe/Paris", await ScalarAsync(b, "show TimeZone"));
        Assert.Equal("Asia/Tokyo", await ScalarAsync(a, "show TimeZone"));
    }

    [Fact]
    public async Task Transaction_mode_set_local_does_not_leak_past_the_transaction()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "default-pool-size = 1");
        await using var a = await p.OpenAsync();
        await using var b = await p.OpenAsync();
        var zone = (string)(await ScalarAsync(b, "show TimeZone"))!;
        await using (var tx = await a.BeginTransactionAsync())
        {
            await ScalarAsync(a, "SET LOCAL TimeZone = 'Asia/Tokyo'", tx);
            Assert.Equal("Asia/Tokyo", await ScalarAsync(a, "show TimeZone", tx));
            await tx.CommitAsync();
        }
        Assert.Equal(zone, await ScalarAsync(b, "show TimeZone"));
        Assert.Equal(zone, await ScalarAsync(a, "show TimeZone"));
    }

    // ---------------- statement ----------------

    [Fact]
    public async Task Statement_mode_runs_autocommit_statements_and_refuses_transaction_blocks()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "pool-mode = statement\ndefault-pool-size = 1");
        await using var other = await p.OpenAsync();
        await using var c = await p.OpenAsync();
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(i, await ScalarAsync(c, $"select {i}"));
            Assert.Equal(i + 1, await ScalarAsync(other, $"select {i + 1}"));
        }
        // several statements in one Query are one implicit transaction: allowed
        await using (var cmd = new NpgsqlCommand("select 1; select 2", c)) await cmd.ExecuteNonQueryAsync();

        var e = await Assert.ThrowsAsync<PostgresException>(() => ScalarAsync(c, "BEGIN"));
        Assert.Equal("0A000", e.SqlState);
        Assert.Equal("transaction blocks not allowed in statement pooling mode", e.MessageText);
        Assert.NotEqual(System.Data.ConnectionState.Open, c.State); // only this client is closed

        // the other client goes on, on a (new) server
        for (var i = 0; i < 5; i++) Assert.Equal("fine", await ScalarAsync(other, "select 'fine'"));
        await using var again = await p.OpenAsync();
        Assert.Equal(3, await ScalarAsync(again, "select 3"));
        await Eventually.Value(() => StatsAsync(p), s => s.Active == 0, "no server stays linked");
    }

    [Fact]
    public async Task Statement_mode_refuses_Npgsql_transactions_too()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "pool-mode = statement");
        await using var c = await p.OpenAsync();
        await using var tx = await c.BeginTransactionAsync(); // Npgsql sends BEGIN with the next command
        var e = await Assert.ThrowsAsync<PostgresException>(() => ScalarAsync(c, "select 1", tx));
        Assert.Equal("0A000", e.SqlState);
        await using var d = await p.OpenAsync();
        Assert.Equal(1, await ScalarAsync(d, "select 1"));
    }

    // ---------------- per-database override ----------------

    [Fact]
    public async Task Database_entry_pool_mode_overrides_the_global_mode()
    {
        await using var p = await PoolerHarness.StartAsync(pg, $$"""
            pool-mode = transaction
            default-pool-size = 2
            databases {
              sessdb { host = "127.0.0.1", port = {{pg.Port}}, dbname = "{{PostgresFixture.Database}}", pool-mode = session }
            }
            """);

        // sessdb: session pooling, the idle first client keeps its server
        await using var s1 = await p.OpenAsync(database: "sessdb");
        await using var s2 = await p.OpenAsync(database: "sessdb");
        var sPid1 = await PidAsync(s1);
        var sPid2 = await PidAsync(s2);
        Assert.NotEqual(sPid1, sPid2);
        Assert.Equal(sPid1, await PidAsync(s1));
        Assert.Equal(2, (await StatsAsync(p, "sessdb/" + PostgresFixture.ScramUser)).Active);

        // pooler_test: transaction pooling (global), the server is shared between idle clients
        await using var t1 = await p.OpenAsync();
        await using var t2 = await p.OpenAsync();
        var tPid1 = await PidAsync(t1);
        await Eventually.Value(() => StatsAsync(p), st => st.Active == 0, "the transaction-mode server is released");
        Assert.Equal(tPid1, await PidAsync(t2));
        Assert.Equal(tPid1, await PidAsync(t1));
        Assert.Equal(2, (await StatsAsync(p, "sessdb/" + PostgresFixture.ScramUser)).Active);
    }
}
