using Npgsql;
using Xunit;

namespace Pooler.Tests.Infrastructure;

[Collection(PostgresCollection.Name)]
public sealed class PgBouncerServerTests
{
    private readonly PostgresFixture _pg;

    public PgBouncerServerTests(PostgresFixture pg) => _pg = pg;

    [Fact]
    public async Task Transaction_pool_shares_server_connections()
    {
        var app = "pgb-" + Guid.NewGuid().ToString("N")[..8];
        using var bouncer = PgBouncerServer.Start(_pg, new PgBouncerOptions { PoolMode = "transaction", DefaultPoolSize = 2 });
        Assert.True(bouncer.IsRunning);
        Assert.NotNull(bouncer.Pid);

        var clients = new List<NpgsqlConnection>();
        try
        {
            for (var i = 0; i < 6; i++)
            {
                var c = new NpgsqlConnection(bouncer.ConnectionString(PostgresFixture.ScramUser, applicationName: app));
                await c.OpenAsync();
                await using var cmd = new NpgsqlCommand("SELECT current_user", c);
                Assert.Equal(PostgresFixture.ScramUser, await cmd.ExecuteScalarAsync());
                clients.Add(c);
            }
            // Six clients, at most two server connections for (pooler_test, scram_user).
            var backends = await _pg.ActiveConnectionsAsync(user: PostgresFixture.ScramUser, database: PostgresFixture.Database);
            Assert.InRange(backends, 1, 2);

            var pools = bouncer.Admin("SHOW POOLS").EnsureSuccess("SHOW POOLS");
            Assert.Contains("pooler_test|scram_user", pools.StdOut);
        }
        finally
        {
            foreach (var c in clients) await c.DisposeAsync();
        }

        var pid = bouncer.Pid!.Value;
        bouncer.Stop();
        Assert.False(bouncer.IsRunning);
        Assert.False(ProcessRunner.IsAlive(pid));
        await Eventually.True(() => _pg.ActiveConnections(user: PostgresFixture.ScramUser, database: PostgresFixture.Database) == 0,
            "server connections closed after PgBouncer stopped");
    }

    [Theory]
    [InlineData("md5", PostgresFixture.Md5User)]
    [InlineData("scram-sha-256", PostgresFixture.ScramUser)]
    [InlineData("trust", PostgresFixture.TrustUser)]
    public async Task Auth_types_work_through_pgbouncer(string authType, string user)
    {
        using var bouncer = PgBouncerServer.Start(_pg, new PgBouncerOptions { AuthType = authType, PoolMode = "session" });
        await using var c = new NpgsqlConnection(bouncer.ConnectionString(user));
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT current_user", c);
        Assert.Equal(user, await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public void Pgbench_runs_through_pgbouncer()
    {
        using var bouncer = PgBouncerServer.Start(_pg);
        var script = Path.Combine(bouncer.Directory, "select1.sql");
        File.WriteAllText(script, "SELECT 1;\n");
        var run = _pg.RunPgbench(new[] { "-c", "4", "-j", "2", "-t", "50", "-n", "-f", script },
            PostgresFixture.ScramUser, port: bouncer.Port, timeout: TimeSpan.FromMinutes(2));
        run.EnsureSuccess("pgbench through pgbouncer");
        Assert.Contains("number of transactions actually processed: 200/200", run.StdOut);
    }

    [Fact]
    public void Pgbouncer_gets_the_hard_open_files_limit_as_soft_limit()
    {
        using var bouncer = PgBouncerServer.Start(_pg);
        var ownHard = OpenFilesLimit("self").Hard;
        var (soft, _) = OpenFilesLimit(bouncer.Pid!.Value.ToString());
        // runuser's pam_limits would leave 1024, too few for 1000 clients.
        Assert.True(soft >= Math.Min(ownHard, 4096), $"pgbouncer soft open-files limit {soft}, ours (hard) {ownHard}");
    }

    private static (long Soft, long Hard) OpenFilesLimit(string pid)
    {
        var line = File.ReadAllLines($"/proc/{pid}/limits").Single(l => l.StartsWith("Max open files", StringComparison.Ordinal));
        var parts = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        static long Parse(string v) => v == "unlimited" ? long.MaxValue : long.Parse(v);
        return (Parse(parts[0]), Parse(parts[1]));
    }
}
