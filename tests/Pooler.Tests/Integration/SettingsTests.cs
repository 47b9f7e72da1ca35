using System.Collections.Concurrent;
using System.Data;
using System.Diagnostics;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;

namespace Pooler.Tests.Integration;

/// <summary>
/// Each pooler setting exercised end to end (Npgsql or raw sockets through a real pooler in front of the
/// fixture's PostgreSQL), so that a setting the code ignored would fail its test.
/// </summary>
[Collection(PostgresCollection.Name)]
public class SettingsTests(PostgresFixture pg)
{
    private const string Db = PostgresFixture.Database;
    private const string Scram = PostgresFixture.ScramUser;

    /// <summary>Backends of pooler_test as <paramref name="user"/> (any user when null) that PostgreSQL sees.</summary>
    private Task<int> BackendsAsync(string? user = Scram, string database = Db) => pg.ActiveConnectionsAsync(user: user, database: database);

    /// <summary>Waits until earlier tests' backends are gone, so counts below start from zero.</summary>
    private Task NoBackendsAsync(string? user = Scram, string database = Db)
        => Eventually.True(async () => await BackendsAsync(user, database) == 0, $"no leftover backends of {user ?? "any user"} on {database}");

    private static async Task<int> PidAsync(NpgsqlConnection c, NpgsqlTransaction? tx = null)
        => (int)(await new NpgsqlCommand("select pg_backend_pid()", c, tx).ExecuteScalarAsync())!;

    private static async Task<long> CountAsync(PostgresFixture pg, string table)
        => (long)(await pg.ScalarAsync($"select count(*) from {table}"))!;

    private async Task<string> LogTableAsync(string prefix)
    {
        var name = $"{prefix}_{Guid.NewGuid():N}"[..30];
        await pg.ExecuteAsync($"create table {name} (n int); grant all on table {name} to public");
        return name;
    }

    // ------------------------------------------------------------------ pool sizes

    [Fact]
    public async Task Default_pool_size_caps_backends_and_the_other_clients_wait_then_complete()
    {
        await NoBackendsAsync();
        await using var p = await PoolerHarness.StartAsync(pg, "default-pool-size = 2");
        var pids = new ConcurrentBag<int>();
        var maxBackends = 0;
        var maxServers = 0;
        using var stop = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            for (var i = 0; i < 600 && !stop.IsCancellationRequested; i++)
            {
                maxBackends = Math.Max(maxBackends, await BackendsAsync());
                maxServers = Math.Max(maxServers, p.Runtime.ServerCount);
                await Task.Delay(50);
            }
        });
        var clients = Enumerable.Range(0, 6).Select(async _ =>
        {
            await using var c = await p.OpenAsync();
            await using var tx = await c.BeginTransactionAsync();
            pids.Add(await PidAsync(c, tx));
            await new NpgsqlCommand("select pg_sleep(0.3)", c, tx).ExecuteNonQueryAsync();
            await tx.CommitAsync();
        }).ToArray();
        await Task.WhenAll(clients).WaitAsync(TimeSpan.FromSeconds(30)); // every client completed
        await stop.CancelAsync();
        await sampler;

        Assert.Equal(6, pids.Count);
        Assert.InRange(pids.Distinct().Count(), 1, 2);
        Assert.InRange(maxBackends, 1, 2);
        Assert.InRange(maxServers, 1, 2);
        await p.AssertDrainedAsync(servers: 2);
    }

    [Fact]
    public async Task Min_pool_size_opens_servers_that_no_client_asked_for()
    {
        await NoBackendsAsync();
        await using var p = await PoolerHarness.StartAsync(pg, "min-pool-size = 3");
        await using (var c = await p.OpenAsync()) { } // creates the pool, then leaves
        await Eventually.True(() => p.Runtime.ClientCount == 0, "the client left");
        await Eventually.Value(() => BackendsAsync(), n => n == 3, "min-pool-size servers open with no client");
        var stats = await p.PoolStatsAsync();
        Assert.Equal(3, stats[$"{Db}/{Scram}"].Idle);
        Assert.Equal(3, p.Runtime.ServerCount);
    }

    [Fact]
    public async Task Reserve_pool_gives_a_waiter_an_extra_server_only_after_reserve_pool_timeout()
    {
        await NoBackendsAsync();
        await using var p = await PoolerHarness.StartAsync(pg, """
            default-pool-size = 1
            reserve-pool-size = 1
            reserve-pool-timeout = 1s
            """);
        await using var a = await p.OpenAsync();
        await using var ta = await a.BeginTransactionAsync();
        await PidAsync(a, ta); // a holds the only regular server

        await using var b = await p.OpenAsync();
        var watch = Stopwatch.StartNew();
        await using var tb = await b.BeginTransactionAsync();
        await PidAsync(b, tb).WaitAsync(TimeSpan.FromSeconds(10)); // served by the reserve while a still holds its server
        var waited = watch.Elapsed;
        Assert.True(waited >= TimeSpan.FromSeconds(0.9), $"reserve used after {waited.TotalSeconds:0.00}s, before reserve-pool-timeout");
        Assert.Equal(2, await BackendsAsync());

        // the reserve is spent: a third client waits until a server comes back
        await using var c = await p.OpenAsync();
        var third = new NpgsqlCommand("select 3", c).ExecuteScalarAsync();
        await Task.Delay(TimeSpan.FromSeconds(1.5)); // past reserve-pool-timeout again
        Assert.False(third.IsCompleted, "a third server was opened beyond pool size + reserve");
        Assert.Equal(2, p.Runtime.ServerCount);
        Assert.Equal(2, await BackendsAsync());
        await ta.CommitAsync();
        Assert.Equal(3, await third.WaitAsync(TimeSpan.FromSeconds(10)));
        await tb.CommitAsync();
    }

    [Fact]
    public async Task Max_client_conn_refuses_the_next_client_with_53300()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "max-client-conn = 2");
        var c1 = await p.OpenAsync();
        await using var c2 = await p.OpenAsync();
        var e = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync());
        Assert.Equal("53300", e.SqlState);
        Assert.Equal("no more connections allowed (max_client_conn)", e.MessageText);
        // the clients already in are unharmed, and a slot that frees up can be taken again
        Assert.Equal(1, await new NpgsqlCommand("select 1", c2).ExecuteScalarAsync());
        await c1.DisposeAsync();
        await Eventually.True(() => p.Runtime.ClientCount == 1, "the first client and the refused one are gone");
        await using var c3 = await p.OpenAsync();
        Assert.Equal(1, await new NpgsqlCommand("select 1", c3).ExecuteScalarAsync());
    }

    [Fact]
    public async Task Max_db_connections_is_shared_by_the_pools_of_one_database()
    {
        await NoBackendsAsync(user: null);
        await using var p = await PoolerHarness.StartAsync(pg, """
            max-db-connections = 2
            server-idle-timeout = 1s
            """);
        var a = await p.OpenAsync(Scram);
        var ta = await a.BeginTransactionAsync();
        await PidAsync(a, ta);
        await using var b = await p.OpenAsync(PostgresFixture.Md5User);
        await using var tb = await b.BeginTransactionAsync();
        await PidAsync(b, tb);
        Assert.Equal(2, await BackendsAsync(user: null));

        // md5_user's pool may open up to default-pool-size (5), but the database is at its cap
        await using var c = await p.OpenAsync(PostgresFixture.Md5User);
        var waiting = new NpgsqlCommand("select 42", c).ExecuteScalarAsync();
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.False(waiting.IsCompleted, "a third server was opened for the database");
        Assert.Equal(2, await BackendsAsync(user: null));
        Assert.Equal(2, p.Runtime.ServerCount);

        // a's server goes idle in scram_user's pool and closes after server-idle-timeout: then md5_user's pool may open one
        await ta.CommitAsync();
        await a.DisposeAsync();
        Assert.Equal(42, await waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(await BackendsAsync(user: null) <= 2);
        await tb.CommitAsync();
    }

    [Fact]
    public async Task Max_db_connections_lets_a_new_pool_log_in_once_the_other_pool_frees_a_server()
    {
        await NoBackendsAsync(user: null);
        await using var p = await PoolerHarness.StartAsync(pg, """
            max-db-connections = 1
            server-idle-timeout = 1s
            client-login-timeout = 30s
            """);
        var a = await p.OpenAsync(Scram);
        var ta = await a.BeginTransactionAsync();
        await PidAsync(a, ta); // the database's only server, linked to a

        // md5_user's pool has no server yet: its first login needs one, and must wait for the cap
        var login = p.OpenAsync(PostgresFixture.Md5User);
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.False(login.IsCompleted, "md5_user's pool opened a server beyond max-db-connections");
        Assert.Equal(1, await BackendsAsync(user: null));

        await ta.CommitAsync();
        await a.DisposeAsync(); // its server idles, then closes after server-idle-timeout
        await using var b = await login.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(PostgresFixture.Md5User, await new NpgsqlCommand("select current_user", b).ExecuteScalarAsync());
        Assert.Equal(1, await BackendsAsync(user: null));
    }

    [Fact]
    public async Task Max_user_connections_is_shared_by_the_pools_of_one_user()
    {
        await NoBackendsAsync(database: Db);
        await NoBackendsAsync(database: PostgresFixture.OtherDatabase);
        await using var p = await PoolerHarness.StartAsync(pg, """
            max-user-connections = 2
            server-idle-timeout = 1s
            """);
        await using var a = await p.OpenAsync(Scram);
        await using var ta = await a.BeginTransactionAsync();
        await PidAsync(a, ta);
        var b = await p.OpenAsync(Scram, database: PostgresFixture.OtherDatabase);
        var tb = await b.BeginTransactionAsync();
        await PidAsync(b, tb);

        await using var c = await p.OpenAsync(Scram);
        var waiting = new NpgsqlCommand("select 7", c).ExecuteScalarAsync();
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.False(waiting.IsCompleted, "a third server was opened for the user");
        Assert.Equal(2, await pg.ActiveConnectionsAsync(user: Scram));

        // b's server (other_db's pool) idles and closes after server-idle-timeout: then pooler_test's pool may open one
        await tb.CommitAsync();
        await b.DisposeAsync();
        Assert.Equal(7, await waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(await pg.ActiveConnectionsAsync(user: Scram) <= 2);
        await ta.CommitAsync();
    }

    // ------------------------------------------------------------------ server lifetime and idling

    [Fact]
    public async Task Server_lifetime_closes_an_old_idle_server_and_replaces_it()
    {
        await NoBackendsAsync();
        await using var p = await PoolerHarness.StartAsync(pg, """
            default-pool-size = 1
            server-lifetime = 1s
            """);
        await using var c = await p.OpenAsync();
        var first = await PidAsync(c);
        var next = await Eventually.Value(() => PidAsync(c), pid => pid != first, "a new backend after server-lifetime",
            timeout: TimeSpan.FromSeconds(8), interval: TimeSpan.FromMilliseconds(200));
        Assert.NotEqual(first, next);
        await Eventually.True(async () => (long)(await pg.ScalarAsync($"select count(*) from pg_stat_activity where pid = {first}"))! == 0,
            "the old backend is closed");
        Assert.True(await BackendsAsync() <= 1);
    }

    [Fact]
    public async Task Server_lifetime_zero_uses_each_server_only_once()
    {
        // reference.conf: "Close an unused server connection once it has been open this long (0 = use each only once)"
        await NoBackendsAsync();
        await using var p = await PoolerHarness.StartAsync(pg, """
            default-pool-size = 1
            server-lifetime = 0
            """);
        await using var c = await p.OpenAsync();
        var pids = new List<int>();
        for (var i = 0; i < 3; i++) pids.Add(await PidAsync(c));
        Assert.Equal(3, pids.Distinct().Count());
    }

    [Fact]
    public async Task Server_idle_timeout_closes_idle_servers_down_to_min_pool_size()
    {
        await NoBackendsAsync();
        await using var p = await PoolerHarness.StartAsync(pg, """
            default-pool-size = 4
            min-pool-size = 1
            server-idle-timeout = 1s
            """);
        var conns = new List<NpgsqlConnection>();
        var txs = new List<NpgsqlTransaction>();
        try
        {
            for (var i = 0; i < 4; i++)
            {
                var c = await p.OpenAsync();
                conns.Add(c);
                var tx = await c.BeginTransactionAsync();
                txs.Add(tx);
                await PidAsync(c, tx);
            }
            Assert.Equal(4, await BackendsAsync());
            foreach (var tx in txs) await tx.CommitAsync();
        }
        finally
        {
            foreach (var c in conns) await c.DisposeAsync();
        }
        var watch = Stopwatch.StartNew();
        await Eventually.Value(() => BackendsAsync(), n => n == 1, "idle servers closed down to min-pool-size", timeout: TimeSpan.FromSeconds(8));
        Assert.True(watch.Elapsed >= TimeSpan.FromSeconds(0.5), $"idle servers closed after {watch.Elapsed.TotalSeconds:0.00}s, before server-idle-timeout");
        await Task.Delay(TimeSpan.FromSeconds(1.5)); // another idle timeout: min-pool-size must stay open
        Assert.Equal(1, await BackendsAsync());
        Assert.Equal(1, p.Runtime.ServerCount);
    }

    // ------------------------------------------------------------------ connecting to servers

    [Fact]
    public async Task Server_connect_timeout_fails_the_client_when_the_server_never_answers()
    {
        await using var fake = FakeBackend.Start(FakeBackendMode.Silent);
        await using var p = await PoolerHarness.StartAsync(pg, $$"""
            server-connect-timeout = 1s
            databases { hung { host = "127.0.0.1", port = {{fake.Port}}, dbname = "hung" } }
            """);
        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(database: "hung"));
        var took = watch.Elapsed;
        Assert.Equal("08001", e.SqlState);
        Assert.Contains("server-connect-timeout", e.MessageText);
        Assert.InRange(took, TimeSpan.FromSeconds(0.8), TimeSpan.FromSeconds(5));
        Assert.True(fake.Accepted >= 1, "the pooler never connected to the hung server");
        await Eventually.True(() => p.Runtime.ServerCount == 0, "the timed-out server session is gone");
    }

    [Fact]
    public async Task Server_login_retry_keeps_the_pool_from_retrying_a_failed_login_before_the_delay()
    {
        await using var fake = FakeBackend.Start(FakeBackendMode.RejectLogin);
        await using var p = await PoolerHarness.StartAsync(pg, $$"""
            server-login-retry = 2s
            databases { refusing { host = "127.0.0.1", port = {{fake.Port}}, dbname = "refusing" } }
            """);
        var e1 = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(database: "refusing"));
        var failedAt = DateTime.UtcNow;
        Assert.Equal(FakeBackend.RejectSqlState, e1.SqlState);
        Assert.Contains(FakeBackend.RejectMessage, e1.MessageText);
        Assert.Equal(1, fake.Accepted);

        // within server-login-retry: the next client gets the same error without a new attempt
        var e2 = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(database: "refusing"));
        Assert.Contains(FakeBackend.RejectMessage, e2.MessageText);
        Assert.Equal(1, fake.Accepted);

        var wait = failedAt + TimeSpan.FromSeconds(2.2) - DateTime.UtcNow;
        if (wait > TimeSpan.Zero) await Task.Delay(wait); // let server-login-retry elapse
        Assert.Equal(1, fake.Accepted);
        await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(database: "refusing"));
        Assert.Equal(2, fake.Accepted);
    }

    [Fact]
    public async Task Server_login_retry_paces_the_attempts_of_min_pool_size()
    {
        await using var fake = FakeBackend.Start(FakeBackendMode.RejectLogin);
        await using var p = await PoolerHarness.StartAsync(pg, $$"""
            server-login-retry = 1s
            databases { refusing { host = "127.0.0.1", port = {{fake.Port}}, dbname = "refusing", min-pool-size = 1 } }
            """);
        await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(database: "refusing")); // creates the pool
        var start = DateTime.UtcNow;
        await Task.Delay(TimeSpan.FromSeconds(4.5)); // let the pool retry on its own (about 4 retries; every pool tick would be 22)
        var times = fake.AcceptedAt;
        var recent = times.Count(t => t >= start);
        Assert.InRange(recent, 2, 6);
        for (var i = 1; i < times.Count; i++)
            Assert.True(times[i] - times[i - 1] >= TimeSpan.FromSeconds(0.8),
                $"attempts {i} and {i + 1} only {(times[i] - times[i - 1]).TotalSeconds:0.00}s apart: [{string.Join(", ", times.Select(t => t.ToString("ss.fff")))}]");
    }

    // ------------------------------------------------------------------ timeouts

    [Fact]
    public async Task Query_timeout_stops_a_long_query_and_the_client_gets_57014()
    {
        var marker = "qt_" + Guid.NewGuid().ToString("N")[..12];
        await using var p = await PoolerHarness.StartAsync(pg, "query-timeout = 1s");
        try
        {
            await using var c = await p.OpenAsync();
            var watch = Stopwatch.StartNew();
            var e = await Assert.ThrowsAsync<PostgresException>(() => new NpgsqlCommand($"select pg_sleep(20) /* {marker} */", c).ExecuteScalarAsync());
            var took = watch.Elapsed;
            Assert.Equal("57014", e.SqlState);
            Assert.Equal("query_timeout", e.MessageText);
            Assert.InRange(took, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(5));
            Assert.NotEqual(ConnectionState.Open, c.State);
            // the query itself is stopped on PostgreSQL, not left sleeping behind a closed socket
            await Eventually.True(async () => (long)(await pg.ScalarAsync(
                    $"select count(*) from pg_stat_activity where query like '%{marker}%' and state = 'active' and pid <> pg_backend_pid()"))! == 0,
                "the timed-out query no longer runs on PostgreSQL", timeout: TimeSpan.FromSeconds(5));
        }
        finally
        {
            await pg.ExecuteAsync($"select pg_terminate_backend(pid) from pg_stat_activity where query like '%{marker}%' and pid <> pg_backend_pid()");
        }
    }

    [Fact]
    public async Task Query_wait_timeout_fails_and_closes_a_client_that_waited_too_long()
    {
        await using var p = await PoolerHarness.StartAsync(pg, """
            default-pool-size = 1
            query-wait-timeout = 1s
            """);
        await using var a = await p.OpenAsync();
        await using var ta = await a.BeginTransactionAsync();
        await PidAsync(a, ta);
        await using var b = await p.OpenAsync();
        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<PostgresException>(() => new NpgsqlCommand("select 1", b).ExecuteScalarAsync());
        var took = watch.Elapsed;
        Assert.Equal("query_wait_timeout", e.MessageText);
        Assert.Equal("08P01", e.SqlState);
        Assert.InRange(took, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(5));
        Assert.NotEqual(ConnectionState.Open, b.State);
        await Eventually.True(() => p.Runtime.ClientCount == 1, "the waiting client is closed");
        Assert.Equal(2, await new NpgsqlCommand("select 2", a, ta).ExecuteScalarAsync());
        await ta.CommitAsync();
    }

    [Fact]
    public async Task Client_idle_timeout_closes_an_idle_client()
    {
        await using var p = await PoolerHarness.StartAsync(pg, """
            auth.type = trust
            client-idle-timeout = 1s
            """);
        await using var raw = await RawConnection.ConnectAsync(p.Port);
        await raw.LoginAsync(PostgresFixture.TrustUser, Db);
        await raw.SendAsync(PgBytes.Query("select 1"));
        await raw.ReadUntilReadyAsync(TimeSpan.FromSeconds(5));
        var outcome = await raw.ReadUntilClosedAsync(TimeSpan.FromSeconds(6));
        Assert.True(outcome.Closed, outcome.ToString());
        Assert.InRange(outcome.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(5));
        var error = outcome.FirstError;
        Assert.NotNull(error);
        Assert.Equal("08P01", error.SqlState);
        Assert.Equal("client_idle_timeout", error.Fields()['M']);
        await p.AssertDrainedAsync(servers: 5);
    }

    [Fact]
    public async Task Client_idle_timeout_leaves_an_active_client_alone()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "client-idle-timeout = 1s");
        await using var c = await p.OpenAsync();
        // a client busy in one long query is not idle
        Assert.Equal(1, await new NpgsqlCommand("select 1 from pg_sleep(1.8)", c).ExecuteScalarAsync());
        Assert.Equal(2, await new NpgsqlCommand("select 2", c).ExecuteScalarAsync());
    }

    [Fact]
    public async Task Client_login_timeout_closes_a_client_that_sends_half_a_startup_packet()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "client-login-timeout = 1s");
        await using var raw = await RawConnection.ConnectAsync(p.Port);
        var startup = PgBytes.Startup(("user", Scram), ("database", Db));
        await raw.SendAsync(startup[..(startup.Length / 2)]);
        var outcome = await raw.ReadUntilClosedAsync(TimeSpan.FromSeconds(6));
        Assert.True(outcome.Closed, outcome.ToString());
        Assert.InRange(outcome.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(5));
        Assert.NotNull(outcome.FirstError);
        Assert.Equal("08P01", outcome.FirstError.SqlState);
        Assert.Equal("client_login_timeout", outcome.FirstError.Fields()['M']);
        await p.AssertDrainedAsync();
    }

    [Fact]
    public async Task Idle_transaction_timeout_closes_the_client_with_25P03_and_its_server()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "idle-transaction-timeout = 1s");
        await using var c = await p.OpenAsync();
        await using var tx = await c.BeginTransactionAsync();
        var pid = await PidAsync(c, tx);
        await Eventually.True(async () => (long)(await pg.ScalarAsync($"select count(*) from pg_stat_activity where pid = {pid}"))! == 0,
            "the server idle in transaction is closed", timeout: TimeSpan.FromSeconds(6));
        await Eventually.True(() => p.Runtime.ClientCount == 0, "the client is closed");
        var e = await Assert.ThrowsAnyAsync<NpgsqlException>(() => new NpgsqlCommand("select 1", c, tx).ExecuteScalarAsync());
        var pe = Assert.IsType<PostgresException>(e);
        Assert.Equal("25P03", pe.SqlState);
    }

    // ------------------------------------------------------------------ reset and check queries

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Server_reset_query_always_decides_if_transaction_mode_resets_the_server(bool always)
    {
        await using var p = await PoolerHarness.StartAsync(pg, $"""
            default-pool-size = 1
            server-reset-query-always = {(always ? "on" : "off")}
            """);
        var table = "tmp_" + Guid.NewGuid().ToString("N")[..12];
        int pid1;
        await using (var c1 = await p.OpenAsync())
        {
            pid1 = await PidAsync(c1);
            await new NpgsqlCommand($"create temp table {table} (i int)", c1).ExecuteNonQueryAsync(); // no explicit transaction
        }
        await using var c2 = await p.OpenAsync();
        Assert.Equal(pid1, await PidAsync(c2)); // same server (pool size 1)
        var exists = (bool)(await new NpgsqlCommand($"select to_regclass('pg_temp.{table}') is not null", c2).ExecuteScalarAsync())!;
        Assert.Equal(!always, exists);
    }

    [Theory]
    [InlineData("session", false, true)]
    [InlineData("transaction", false, false)]
    [InlineData("transaction", true, true)]
    public async Task Server_reset_query_runs_the_configured_query_when_a_server_is_released(string mode, bool always, bool expectRun)
    {
        var table = await LogTableAsync("reset_log");
        try
        {
            await using var p = await PoolerHarness.StartAsync(pg, $"""
                pool-mode = {mode}
                default-pool-size = 1
                server-reset-query = "insert into {table} values (1)"
                server-reset-query-always = {(always ? "on" : "off")}
                """);
            await using (var c1 = await p.OpenAsync())
            {
                for (var i = 0; i < 3; i++) Assert.Equal(i, await new NpgsqlCommand($"select {i}", c1).ExecuteScalarAsync());
            }
            // the next client runs on the same server, after whatever reset ran on it
            await using var c2 = await p.OpenAsync();
            Assert.Equal(1, await new NpgsqlCommand("select 1", c2).ExecuteScalarAsync());
            var runs = await CountAsync(pg, table);
            if (expectRun) Assert.True(runs >= 1, $"the reset query ran {runs} times");
            else Assert.Equal(0, runs);
            if (mode == "transaction" && always) Assert.True(runs >= 3, $"reset after each of 3 transactions, ran {runs} times");
        }
        finally
        {
            await pg.ExecuteAsync($"drop table if exists {table}");
        }
    }

    [Theory]
    [InlineData("0", true)]
    [InlineData("30s", false)]
    public async Task Server_check_query_runs_before_reuse_unless_the_server_was_used_within_server_check_delay(string delay, bool expectChecks)
    {
        var table = await LogTableAsync("check_log");
        try
        {
            await using var p = await PoolerHarness.StartAsync(pg, $"""
                default-pool-size = 1
                server-check-query = "insert into {table} values (1)"
                server-check-delay = {delay}
                """);
            await using var c = await p.OpenAsync();
            for (var i = 0; i < 4; i++) Assert.Equal(i, await new NpgsqlCommand($"select {i}", c).ExecuteScalarAsync());
            var checks = await CountAsync(pg, table);
            if (expectChecks) Assert.True(checks >= 3, $"server-check-query ran {checks} times for 4 reuses");
            else Assert.Equal(0, checks);
        }
        finally
        {
            await pg.ExecuteAsync($"drop table if exists {table}");
        }
    }

    // ------------------------------------------------------------------ startup parameters

    [Fact]
    public async Task Ignore_startup_parameters_lets_a_listed_parameter_through_without_applying_it()
    {
        await using (var strict = await PoolerHarness.StartAsync(pg))
        {
            var b = new NpgsqlConnectionStringBuilder(strict.ConnectionString()) { SearchPath = "pg_catalog" };
            var e = await Assert.ThrowsAsync<PostgresException>(async () =>
            {
                await using var c = new NpgsqlConnection(b.ConnectionString);
                await c.OpenAsync();
            });
            Assert.Equal("0A000", e.SqlState);
            Assert.Contains("search_path", e.MessageText);
        }
        await using var p = await PoolerHarness.StartAsync(pg, "ignore-startup-parameters = [extra_float_digits, search_path]");
        var ok = new NpgsqlConnectionStringBuilder(p.ConnectionString()) { SearchPath = "pg_catalog" };
        await using var conn = new NpgsqlConnection(ok.ConnectionString);
        await conn.OpenAsync();
        Assert.NotEqual("pg_catalog", await new NpgsqlCommand("show search_path", conn).ExecuteScalarAsync());
    }

    [Theory]
    [InlineData(null, true)] // the default list holds extra_float_digits
    [InlineData("[]", false)]
    [InlineData("\"\"", false)] // PgBouncer style: an empty comma-separated list
    [InlineData("[search_path, extra_float_digits]", true)]
    public async Task Ignore_startup_parameters_default_and_override(string? list, bool accepted)
    {
        await using var p = await PoolerHarness.StartAsync(pg, "auth.type = trust\n" + (list == null ? "" : $"ignore-startup-parameters = {list}"));
        await using var raw = await RawConnection.ConnectAsync(p.Port);
        await raw.SendAsync(PgBytes.Startup(("user", PostgresFixture.TrustUser), ("database", Db), ("extra_float_digits", "3")));
        if (accepted)
        {
            await raw.ReadUntilReadyAsync(TimeSpan.FromSeconds(10));
            await raw.SendAsync(PgBytes.Query("show extra_float_digits"));
            var reply = await raw.ReadUntilReadyAsync(TimeSpan.FromSeconds(5));
            Assert.DoesNotContain(reply, m => m.IsError);
        }
        else
        {
            var outcome = await raw.ReadUntilClosedAsync(TimeSpan.FromSeconds(5));
            Assert.True(outcome.Closed, outcome.ToString());
            Assert.Equal("0A000", outcome.FirstError?.SqlState);
            Assert.Contains("extra_float_digits", outcome.FirstError!.Fields()['M']);
        }
    }
}
