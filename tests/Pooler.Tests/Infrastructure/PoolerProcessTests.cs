using Npgsql;
using Xunit;

namespace Pooler.Tests.Infrastructure;

/// <summary>The <see cref="PoolerProcess"/> helper itself: start, port discovery, output, signals, exit codes.</summary>
[Collection(PostgresCollection.Name)]
public sealed class PoolerProcessTests(PostgresFixture pg)
{
    [Fact]
    public async Task Starts_on_a_port_read_from_its_output_serves_queries_and_stops_on_SIGTERM()
    {
        await using var host = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg, port: 0));
        Assert.True(host.Port > 0);
        Assert.False(host.HasExited);
        Assert.True(host.RssBytes() > 0);
        await using (var c = await host.OpenAsync(pg))
        {
            await using var cmd = new NpgsqlCommand("select current_user", c);
            Assert.Equal(PostgresFixture.ScramUser, await cmd.ExecuteScalarAsync());
        }
        Assert.Contains(host.OutputLines, l => l.Contains($"listening on 127.0.0.1:{host.Port}", StringComparison.Ordinal));

        Assert.True(host.Terminate());
        Assert.Equal(0, await host.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(host.HasExited);
        Assert.Equal(0, host.ExitCode);
        Assert.Contains(host.OutputLines, l => l.Contains("SIGTERM: shutting down", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Extra_arguments_reach_the_host_and_SIGHUP_reloads()
    {
        var configured = FreePort.Next();
        var port = FreePort.Next();
        await using var host = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg, port: configured),
            port: port, extraArgs: ["--set", $"pooler.listen.port={port}"]);
        Assert.Equal(port, host.Port);
        Assert.Contains(host.OutputLines, l => l.Contains($"listening on 127.0.0.1:{port}", StringComparison.Ordinal));
        Assert.DoesNotContain(host.OutputLines, l => l.Contains($":{configured}", StringComparison.Ordinal));
        Assert.True(host.Reload());
        await host.WaitForOutputAsync(l => l.Contains("SIGHUP: configuration reloaded", StringComparison.Ordinal), "reload logged");
        Assert.True(FreePort.IsAccepting(port));
    }

    [Fact]
    public async Task A_bad_config_or_environment_makes_start_fail_with_the_output()
    {
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => PoolerProcess.StartAsync("pooler { pool-mode = nonsense }", port: FreePort.Next()));
        Assert.Contains("exited with 2", e.Message);
        Assert.Contains("invalid configuration", e.Message);

        var e2 = await Assert.ThrowsAsync<InvalidOperationException>(() => PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg, port: 0),
            extraEnv: new Dictionary<string, string?> { ["POOLER__POOL_MODE"] = "nonsense" }));
        Assert.Contains("exited with 2", e2.Message);
        Assert.Contains("pool-mode", e2.Message);
    }
}
