using System.Diagnostics;
using Npgsql;
using Pooler.Actors.Pooling;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Integration;

/// <summary>CancelRequests through the pooler: real ones cancel quickly, forged or misdirected ones do nothing.</summary>
[Collection(PostgresCollection.Name)]
public class CancelTests(PostgresFixture pg, ITestOutputHelper output)
{
    private const string PoolKey = PostgresFixture.Database + "/" + PostgresFixture.ScramUser;
    // well under a second on a quiet machine; CI runs other test processes beside these, so allow 2 s (a cancel
    // that does not reach PostgreSQL takes the full pg_sleep(30))
    private static readonly TimeSpan CancelLimit = TimeSpan.FromSeconds(2);

    private static async Task<Pool.Stats> StatsAsync(PoolerHarness p, string key = PoolKey)
    {
        var all = await p.PoolStatsAsync();
        Assert.True(all.TryGetValue(key, out var s), $"no pool {key}; pools: {string.Join(", ", all.Keys)}");
        return s!;
    }

    private static async Task<object?> ScalarAsync(NpgsqlConnection c, string sql)
    {
        await using var cmd = new NpgsqlCommand(sql, c);
        return await cmd.ExecuteScalarAsync();
    }

    /// <summary>Waits until PostgreSQL runs the query (so a cancel cannot arrive before it).</summary>
    private Task WaitUntilRunningAsync(string marker)
        => Eventually.True(async () => (long)(await pg.ScalarAsync(
                $"select count(*) from pg_stat_activity where state = 'active' and query like '%{marker}%' and pid <> pg_backend_pid()",
                PostgresFixture.Database))! == 1,
            $"the query {marker} runs on the server");

    [Fact]
    public async Task Npgsql_Cancel_ends_a_running_query_with_57014_quickly_and_the_connection_stays_usable()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using var c = await p.OpenAsync();
        for (var round = 0; round < 3; round++)
        {
            var marker = $"cancel_me_{round}";
            await using var cmd = new NpgsqlCommand($"select pg_sleep(30) /* {marker} */", c);
            var query = cmd.ExecuteNonQueryAsync();
            await WaitUntilRunningAsync(marker);

            var watch = Stopwatch.StartNew();
            cmd.Cancel();
            // Npgsql reports a cancel it asked for as OperationCanceledException around the server's 57014
            var oce = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => query.WaitAsync(TimeSpan.FromSeconds(20)));
            watch.Stop();
            output.WriteLine($"round {round}: cancelled after {watch.ElapsedMilliseconds} ms");
            Assert.Equal("57014", Assert.IsType<PostgresException>(oce.InnerException).SqlState);
            Assert.True(watch.Elapsed < CancelLimit, $"the cancel took {watch.ElapsedMilliseconds} ms");

            Assert.Equal(System.Data.ConnectionState.Open, c.State);
            Assert.Equal(round, await ScalarAsync(c, $"select {round}"));
            await Eventually.Value(() => StatsAsync(p), s => s.Active == 0, "the server goes back to the pool after the cancel");
        }
    }

    [Fact]
    public async Task CancellationToken_cancels_a_running_query_quickly_and_the_connection_stays_usable()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using var c = await p.OpenAsync();
        await using var cmd = new NpgsqlCommand("select pg_sleep(30) /* token_cancel */", c);
        using var cts = new CancellationTokenSource();
        var query = cmd.ExecuteNonQueryAsync(cts.Token);
        await WaitUntilRunningAsync("token_cancel");

        var watch = Stopwatch.StartNew();
        await cts.CancelAsync();
        var e = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => query.WaitAsync(TimeSpan.FromSeconds(20)));
        watch.Stop();
        output.WriteLine($"cancelled after {watch.ElapsedMilliseconds} ms");
        var pgError = Assert.IsType<PostgresException>(e.InnerException);
        Assert.Equal("57014", pgError.SqlState);
        Assert.True(watch.Elapsed < CancelLimit, $"the cancel took {watch.ElapsedMilliseconds} ms");
        Assert.Equal(System.Data.ConnectionState.Open, c.State);
        Assert.Equal("usable", await ScalarAsync(c, "select 'usable'"));
    }

    [Fact]
    public async Task Cancel_inside_a_transaction_aborts_it_and_rollback_recovers()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using var c = await p.OpenAsync();
        await using var tx = await c.BeginTransactionAsync();
        await using var cmd = new NpgsqlCommand("select pg_sleep(30) /* tx_cancel */", c, tx);
        var query = cmd.ExecuteNonQueryAsync();
        await WaitUntilRunningAsync("tx_cancel");
        var watch = Stopwatch.StartNew();
        cmd.Cancel();
        var oce = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => query.WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal("57014", Assert.IsType<PostgresException>(oce.InnerException).SqlState);
        Assert.True(watch.Elapsed < CancelLimit, $"the cancel took {watch.ElapsedMilliseconds} ms");
        var aborted = await Assert.ThrowsAsync<PostgresException>(() => new NpgsqlCommand("select 1", c, tx).ExecuteScalarAsync());
        Assert.Equal("25P02", aborted.SqlState);
        Assert.Equal(1, (await StatsAsync(p)).Active); // the aborted transaction still holds its server
        await tx.RollbackAsync();
        Assert.Equal(2, await ScalarAsync(c, "select 2"));
        await Eventually.Value(() => StatsAsync(p), s => s.Active == 0, "the server goes back to the pool after ROLLBACK");
    }

    [Fact]
    public async Task Forged_cancel_keys_do_nothing()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using var c = await p.OpenAsync();
        await using var cmd = new NpgsqlCommand("select 'completed', pg_sleep(2) /* forged_target */", c);
        var watch = Stopwatch.StartNew();
        var query = cmd.ExecuteScalarAsync();
        await WaitUntilRunningAsync("forged_target");

        var pid = c.ProcessID; // the key the pooler gave this client (not the server's)
        var rnd = new Random();
        // the right pid with wrong secrets, and random pids; the pooler closes each cancel connection
        for (var i = 0; i < 5; i++)
            Assert.True(await RawPgConnection.SendCancelAsync(p.Port, pid, rnd.Next(int.MinValue, int.MaxValue)), "the pooler closes the cancel connection");
        for (var i = 0; i < 5; i++)
            Assert.True(await RawPgConnection.SendCancelAsync(p.Port, rnd.Next(1, int.MaxValue), rnd.Next(int.MinValue, int.MaxValue)), "the pooler closes the cancel connection");
        // a CancelRequest carrying the server's own key is not the client's key either: the pooler must not forward it
        var backendPid = (int)(await pg.ScalarAsync(
            "select pid from pg_stat_activity where query like '%forged_target%' and pid <> pg_backend_pid()", PostgresFixture.Database))!;
        Assert.True(await RawPgConnection.SendCancelAsync(p.Port, backendPid, 0));

        Assert.Equal("completed", await query.WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.True(watch.Elapsed >= TimeSpan.FromSeconds(1.9), $"pg_sleep(2) ended after {watch.ElapsedMilliseconds} ms");
        Assert.Equal(1, await ScalarAsync(c, "select 1"));
    }

    [Fact]
    public async Task Cancel_for_an_idle_client_does_nothing_even_while_its_last_server_serves_another_client()
    {
        // trust + a raw client: it sees the secret of its BackendKeyData
        await using var p = await PoolerHarness.StartAsync(pg, "auth.type = trust\ndefault-pool-size = 1");
        await using var idle = await RawPgConnection.ConnectAsync(p.Port, PostgresFixture.TrustUser, PostgresFixture.Database);
        var serverPid = await idle.ScalarAsync("select pg_backend_pid()"); // idle client's last transaction used the only server

        // a busy client now runs on that same server
        await using var busy = await RawPgConnection.ConnectAsync(p.Port, PostgresFixture.TrustUser, PostgresFixture.Database);
        var watch = Stopwatch.StartNew();
        await busy.SendQueryAsync("select pg_sleep(2) /* idle_cancel_target */, pg_backend_pid()");
        await WaitUntilRunningAsync("idle_cancel_target");

        // the idle client's own (valid) key: nothing of it runs, so nothing is cancelled
        for (var i = 0; i < 3; i++)
            Assert.True(await RawPgConnection.SendCancelAsync(p.Port, idle.ProcessId, idle.SecretKey));

        var answer = await busy.ReadUntilReadyAsync();
        Assert.DoesNotContain(answer, m => m.Type == 'E');
        var row = Assert.Single(answer, m => m.Type == 'D');
        Assert.True(watch.Elapsed >= TimeSpan.FromSeconds(1.9), $"the busy client's pg_sleep(2) ended after {watch.ElapsedMilliseconds} ms");
        Assert.Equal(serverPid, row.Columns()[1]); // it really ran on the idle client's last server

        // and the idle client is not broken, nor is its next query cancelled by a stale request
        Assert.Equal("alive", await idle.ScalarAsync("select 'alive'"));
        var next = await idle.QueryAsync("select pg_sleep(0.3), 'not cancelled'");
        Assert.Equal("", string.Join("; ", next.Where(m => m.Type == 'E').Select(m => $"{m.Fields()['C']}: {m.Fields()['M']}")));
        Assert.Equal("not cancelled", Assert.Single(next, m => m.Type == 'D').Columns()[1]);

        await busy.TerminateAsync();
        await idle.TerminateAsync();
    }

    /// <summary>
    /// A cancel sent while the client has nothing running must not hit its next query, even when that query follows at
    /// once: PostgreSQL ignores a cancel for an idle backend, and libpq's PQcancel returns only after the server has acted
    /// on it (closed the cancel connection), so "cancel, then run the next query" is safe against PostgreSQL.
    /// </summary>
    [Theory]
    [InlineData("session", false)]
    [InlineData("transaction", true)]
    public async Task Cancel_for_an_idle_linked_client_does_not_hit_its_next_query(string mode, bool insideTransaction)
    {
        await using var p = await PoolerHarness.StartAsync(pg, $"auth.type = trust\npool-mode = {mode}");
        await using var c = await RawPgConnection.ConnectAsync(p.Port, PostgresFixture.TrustUser, PostgresFixture.Database);
        if (insideTransaction) Assert.DoesNotContain(await c.QueryAsync("BEGIN"), m => m.Type == 'E'); // idle in transaction: still linked
        var pid = await c.ScalarAsync("select pg_backend_pid()");
        var errors = new List<string>();
        for (var round = 0; round < 40; round++)
        {
            Assert.True(await RawPgConnection.SendCancelAsync(p.Port, c.ProcessId, c.SecretKey), "the pooler closes the cancel connection");
            var answer = await c.QueryAsync($"select pg_sleep(0.05), 'round {round}'");
            errors.AddRange(answer.Where(m => m.Type == 'E').Select(m => $"round {round}: {m.Fields()['C']} {m.Fields()['M']}"));
            if (answer.Any(m => m.Type == 'E') && insideTransaction) break; // the transaction is aborted now
        }
        Assert.Empty(errors);
        Assert.Equal(pid, await c.ScalarAsync("select pg_backend_pid()"));
        if (insideTransaction) Assert.DoesNotContain(await c.QueryAsync("COMMIT"), m => m.Type == 'E');

        // the same key does cancel a query that runs
        await c.SendQueryAsync("select pg_sleep(30) /* linked_cancel */");
        await WaitUntilRunningAsync("linked_cancel");
        var watch = Stopwatch.StartNew();
        Assert.True(await RawPgConnection.SendCancelAsync(p.Port, c.ProcessId, c.SecretKey));
        var cancelled = await c.ReadUntilReadyAsync();
        watch.Stop();
        var error = Assert.Single(cancelled, m => m.Type == 'E');
        Assert.Equal("57014", error.Fields()['C']);
        Assert.True(watch.Elapsed < CancelLimit, $"the cancel took {watch.ElapsedMilliseconds} ms");
        Assert.Equal("alive", await c.ScalarAsync("select 'alive'"));
        await c.TerminateAsync();
    }

    [Fact]
    public async Task Psql_interrupted_with_SIGINT_cancels_its_query_through_the_pooler()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var psi = ProcessRunner.CreateStartInfo(Path.Combine(pg.BinDir, "psql"),
            ["-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", "select pg_sleep(30) /* psql_cancel */"],
            new Dictionary<string, string?>
            {
                ["PGHOST"] = "127.0.0.1",
                ["PGPORT"] = p.Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["PGUSER"] = PostgresFixture.ScramUser,
                ["PGPASSWORD"] = PostgresFixture.ScramPassword,
                ["PGDATABASE"] = PostgresFixture.Database,
                ["PGSSLMODE"] = "disable",
            });
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = true;
        using var psql = Process.Start(psi)!;
        try
        {
            psql.StandardInput.Close();
            var stderr = psql.StandardError.ReadToEndAsync();
            var stdout = psql.StandardOutput.ReadToEndAsync();
            await WaitUntilRunningAsync("psql_cancel");
            var watch = Stopwatch.StartNew();
            Assert.True(ProcessRunner.Signal(psql.Id, ProcessRunner.SigInt)); // psql sends a CancelRequest with the pooler's key
            using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20))) await psql.WaitForExitAsync(cts.Token);
            watch.Stop();
            var err = await stderr;
            await stdout;
            Assert.NotEqual(0, psql.ExitCode);
            Assert.Contains("canceling statement due to user request", err);
            Assert.True(watch.Elapsed < CancelLimit + TimeSpan.FromSeconds(1), $"psql ended {watch.ElapsedMilliseconds} ms after SIGINT");
        }
        finally
        {
            if (!psql.HasExited) psql.Kill(entireProcessTree: true);
        }
        await Eventually.Value(() => StatsAsync(p), s => s.Active == 0, "the server goes back to the pool");
    }
}
