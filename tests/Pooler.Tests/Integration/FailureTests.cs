using System.Diagnostics;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;

namespace Pooler.Tests.Integration;

/// <summary>
/// What clients see when the backend is down, restarts under them, or the pooler runs out of room.
/// Destructive tests use their own throwaway PostgreSQL (<see cref="PostgresServer"/>), never the fixture's.
/// </summary>
[Collection(PostgresCollection.Name)]
public class FailureTests(PostgresFixture pg)
{
    private const string Scram = PostgresFixture.ScramUser;

    /// <summary>A throwaway PostgreSQL with scram_user and a table t(x int) in database postgres.</summary>
    private static async Task<PostgresServer> DedicatedServerAsync()
    {
        var server = await Task.Run(() =>
        {
            // synchronous commits: an immediate (crash) restart must not lose the table made below
            var s = PostgresServer.Create(new PostgresServerOptions
            {
                MaxConnections = 40,
                SharedBuffers = "16MB",
                Settings = new Dictionary<string, string> { ["synchronous_commit"] = "on" },
            });
            try
            {
                s.Start();
            }
            catch
            {
                s.Dispose();
                throw;
            }
            return s;
        });
        await server.ExecuteAsync($"create role {Scram} login password '{PostgresFixture.ScramPassword}'");
        await server.ExecuteAsync($"create table t (x int); grant all on table t to {Scram}");
        return server;
    }

    private static string DedicatedEntry(int port) => $$"""databases { ded { host = "127.0.0.1", port = {{port}}, dbname = "postgres" } }""";

    private static void RestartImmediately(PostgresServer s)
    {
        s.RunServerTool("pg_ctl", ["stop", "-w", "-t", "60", "-D", s.DataDir, "-m", "immediate", "-s"], TimeSpan.FromSeconds(90))
            .EnsureSuccess("pg_ctl stop -m immediate");
        s.RunServerTool("pg_ctl", ["start", "-w", "-t", "60", "-D", s.DataDir, "-l", s.LogFile, "-s"], TimeSpan.FromSeconds(90))
            .EnsureSuccess("pg_ctl start");
    }

    [Fact]
    public async Task Backend_down_at_connect_fails_clients_with_08001_and_a_clear_message()
    {
        var closedPort = FreePort.Next(); // nothing listens there
        await using var p = await PoolerHarness.StartAsync(pg, $$"""
            server-connect-timeout = 1s
            databases { down { host = "127.0.0.1", port = {{closedPort}}, dbname = "down" } }
            """);
        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(database: "down"));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(3), $"took {watch.Elapsed.TotalSeconds:0.00}s with server-connect-timeout 1s");
        Assert.Contains(e.SqlState, new[] { "08001", "08006" });
        Assert.Contains($"127.0.0.1:{closedPort}", e.MessageText);
        Assert.Contains("connect", e.MessageText);
        await Eventually.True(() => p.Runtime.ClientCount == 0 && p.Runtime.ServerCount == 0, "nothing left behind");
        // other databases of the same pooler are unaffected
        await using var ok = await p.OpenAsync();
        Assert.Equal(1, await new NpgsqlCommand("select 1", ok).ExecuteScalarAsync());
    }

    [Fact]
    public async Task Pool_tries_again_after_server_login_retry_once_the_backend_is_back()
    {
        using var server = await DedicatedServerAsync();
        server.Stop();
        await using var p = await PoolerHarness.StartAsync(pg, $"""
            server-login-retry = 3s
            server-connect-timeout = 1s
            {DedicatedEntry(server.Port)}
            """);
        var e = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(database: "ded"));
        var failedAt = DateTime.UtcNow;
        Assert.Contains(e.SqlState, new[] { "08001", "08006" });
        Assert.Contains($"127.0.0.1:{server.Port}", e.MessageText);

        server.Start();
        var startedAt = DateTime.UtcNow;
        if (startedAt < failedAt + TimeSpan.FromSeconds(2.3))
        {
            // the backend is back, but server-login-retry has not elapsed: the pool has not tried again yet
            var early = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(database: "ded"));
            Assert.Equal(e.SqlState, early.SqlState);
        }

        DateTime? okAt = null;
        for (var i = 0; i < 60 && okAt == null && DateTime.UtcNow < startedAt + TimeSpan.FromSeconds(20); i++)
        {
            try
            {
                await using var c = await p.OpenAsync(database: "ded");
                Assert.Equal(1, await new NpgsqlCommand("select 1", c).ExecuteScalarAsync());
                okAt = DateTime.UtcNow;
            }
            catch (PostgresException)
            {
                await Task.Delay(250);
            }
        }
        Assert.True(okAt != null, "the pool never reconnected to the restarted backend");
        Assert.True(okAt.Value - failedAt >= TimeSpan.FromSeconds(2.7),
            $"reconnected {(okAt.Value - failedAt).TotalSeconds:0.00}s after the failure, before server-login-retry (3s)");
    }

    [Theory]
    [InlineData("fast")]
    [InlineData("immediate")]
    public async Task Backend_restart_mid_flight_fails_the_open_transaction_and_the_pool_recovers(string mode)
    {
        using var server = await DedicatedServerAsync();
        await using var p = await PoolerHarness.StartAsync(pg, $"""
            default-pool-size = 3
            {DedicatedEntry(server.Port)}
            """);
        await using var a = await p.OpenAsync(database: "ded");
        var tx = await a.BeginTransactionAsync();
        await new NpgsqlCommand("insert into t values (1)", a, tx).ExecuteNonQueryAsync();
        await using var idle = await p.OpenAsync(database: "ded");
        Assert.Equal(1, await new NpgsqlCommand("select 1", idle).ExecuteScalarAsync()); // a second server, now idle
        Assert.Equal(2, p.Runtime.ServerCount);

        if (mode == "fast") server.Restart();
        else RestartImmediately(server);

        await Assert.ThrowsAnyAsync<NpgsqlException>(() => tx.CommitAsync());
        Assert.Equal(0L, await server.ScalarAsync("select count(*) from t"));
        await Eventually.True(() => p.Runtime.ServerCount == 0, "the old servers (linked and idle) are dropped");
        await Eventually.True(() => p.Runtime.ClientCount == 1, "the client whose transaction broke is closed, the idle one stays");

        // without restarting the pooler: the idle client goes on, new clients get in
        Assert.Equal(2, await new NpgsqlCommand("select 2", idle).ExecuteScalarAsync());
        await using var fresh = await p.OpenAsync(database: "ded");
        await new NpgsqlCommand("insert into t values (2)", fresh).ExecuteNonQueryAsync();
        Assert.Equal(1L, await server.ScalarAsync("select count(*) from t where x = 2"));
    }

    [Fact]
    public async Task Max_client_conn_reached_answers_53300_and_keeps_the_others_working()
    {
        await using var p = await PoolerHarness.StartAsync(pg, """
            auth.type = trust
            max-client-conn = 3
            """);
        var conns = new List<RawConnection>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var c = await RawConnection.ConnectAsync(p.Port);
                conns.Add(c);
                await c.LoginAsync(PostgresFixture.TrustUser, PostgresFixture.Database);
            }
            await using (var extra = await RawConnection.ConnectAsync(p.Port))
            {
                await extra.SendAsync(PgBytes.Startup(("user", PostgresFixture.TrustUser), ("database", PostgresFixture.Database)));
                var outcome = await extra.ReadUntilClosedAsync(TimeSpan.FromSeconds(5));
                Assert.True(outcome.Closed, outcome.ToString());
                Assert.Equal("53300", outcome.FirstError?.SqlState);
                Assert.Equal("no more connections allowed (max_client_conn)", outcome.FirstError!.Fields()['M']);
            }
            foreach (var c in conns)
            {
                await c.SendAsync(PgBytes.Query("select 1"));
                Assert.DoesNotContain(await c.ReadUntilReadyAsync(TimeSpan.FromSeconds(5)), m => m.IsError);
            }
            await conns[0].SendAsync(PgBytes.Terminate);
            await Eventually.True(() => p.Runtime.ClientCount == 2, "a client left");
            await using var next = await RawConnection.ConnectAsync(p.Port);
            await next.LoginAsync(PostgresFixture.TrustUser, PostgresFixture.Database);
        }
        finally
        {
            foreach (var c in conns) await c.DisposeAsync();
        }
    }

    [Fact]
    public async Task Query_wait_timeout_sends_the_error_then_closes_the_waiting_client()
    {
        await using var p = await PoolerHarness.StartAsync(pg, """
            auth.type = trust
            default-pool-size = 1
            query-wait-timeout = 1s
            """);
        await using var holder = await RawConnection.ConnectAsync(p.Port);
        await holder.LoginAsync(PostgresFixture.TrustUser, PostgresFixture.Database);
        await holder.SendAsync(PgBytes.Query("begin; select 1"));
        await holder.ReadUntilReadyAsync(TimeSpan.FromSeconds(5));

        await using var waiter = await RawConnection.ConnectAsync(p.Port);
        await waiter.LoginAsync(PostgresFixture.TrustUser, PostgresFixture.Database);
        await waiter.SendAsync(PgBytes.Query("select 2"));
        var outcome = await waiter.ReadUntilClosedAsync(TimeSpan.FromSeconds(6));
        Assert.True(outcome.Closed, outcome.ToString());
        Assert.InRange(outcome.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(5));
        Assert.Single(outcome.Messages); // the error and nothing else: the query never ran
        Assert.Equal("08P01", outcome.FirstError?.SqlState);
        Assert.Equal("query_wait_timeout", outcome.FirstError!.Fields()['M']);
        await Eventually.True(() => p.Runtime.ClientCount == 1, "the waiter is gone");

        // the holder was not disturbed and the pool serves again once it commits
        await holder.SendAsync(PgBytes.Query("commit"));
        Assert.DoesNotContain(await holder.ReadUntilReadyAsync(TimeSpan.FromSeconds(5)), m => m.IsError);
        await using var after = await RawConnection.ConnectAsync(p.Port);
        await after.LoginAsync(PostgresFixture.TrustUser, PostgresFixture.Database);
        await after.SendAsync(PgBytes.Query("select 3"));
        Assert.DoesNotContain(await after.ReadUntilReadyAsync(TimeSpan.FromSeconds(5)), m => m.IsError);
    }
}
