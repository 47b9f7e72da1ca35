using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;

namespace Pooler.Tests.Integration;

[Collection(PostgresCollection.Name)]
public class BasicsTests(PostgresFixture pg)
{
    [Fact]
    public async Task Npgsql_queries_through_transaction_pooling()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using (var c = await p.OpenAsync())
        {
            await using var cmd = new NpgsqlCommand("select 40 + @x", c);
            cmd.Parameters.AddWithValue("x", 2);
            Assert.Equal(42, await cmd.ExecuteScalarAsync());
            await using var tx = await c.BeginTransactionAsync();
            var pid1 = await new NpgsqlCommand("select pg_backend_pid()", c, tx).ExecuteScalarAsync();
            var pid2 = await new NpgsqlCommand("select pg_backend_pid()", c, tx).ExecuteScalarAsync();
            Assert.Equal(pid1, pid2); // a transaction stays on one server
            await tx.CommitAsync();
        }
        await p.AssertDrainedAsync(servers: 5);
    }

    [Theory]
    [InlineData(PostgresFixture.ScramUser, "scram-sha-256")]
    [InlineData(PostgresFixture.Md5User, "md5")]
    [InlineData(PostgresFixture.ScramUser, "plain")]
    [InlineData(PostgresFixture.ScramUser, "md5")]
    public async Task Clients_authenticate_with_each_method(string user, string type)
    {
        await using var p = await PoolerHarness.StartAsync(pg, $"auth.type = {type}");
        await using var c = await p.OpenAsync(user);
        Assert.Equal(user, await new NpgsqlCommand("select current_user", c).ExecuteScalarAsync());
    }

    [Fact]
    public async Task Trust_lets_listed_users_in_without_a_password()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "auth.type = trust");
        await using var c = await p.OpenAsync(PostgresFixture.TrustUser, password: "");
        Assert.Equal(PostgresFixture.TrustUser, await new NpgsqlCommand("select current_user", c).ExecuteScalarAsync());
    }

    [Theory]
    [InlineData("scram-sha-256")]
    [InlineData("md5")]
    [InlineData("plain")]
    public async Task Wrong_password_and_unknown_user_get_28P01(string type)
    {
        await using var p = await PoolerHarness.StartAsync(pg, $"auth.type = {type}");
        var e1 = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(PostgresFixture.ScramUser, "wrong"));
        Assert.Equal("28P01", e1.SqlState);
        Assert.Equal($"password authentication failed for user \"{PostgresFixture.ScramUser}\"", e1.MessageText);
        var e2 = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync("nobody", "x"));
        Assert.Equal("28P01", e2.SqlState);
        // other clients are unharmed
        await using var ok = await p.OpenAsync();
        Assert.Equal(1, await new NpgsqlCommand("select 1", ok).ExecuteScalarAsync());
    }

    [Fact]
    public async Task Unknown_database_gets_3D000()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var e = await Assert.ThrowsAsync<PostgresException>(() => p.OpenAsync(database: "no_such_db"));
        Assert.Equal("3D000", e.SqlState);
    }

    [Fact]
    public async Task Star_database_falls_back_to_the_same_host_with_the_asked_name()
    {
        await using var p = await PoolerHarness.StartAsync(pg, $$"""databases { "*" { host = "127.0.0.1", port = {{pg.Port}} } }""");
        await using var c = await p.OpenAsync(PostgresFixture.AdminUser, database: "postgres");
        Assert.Equal("postgres", await new NpgsqlCommand("select current_database()", c).ExecuteScalarAsync());
    }

    [Fact]
    public async Task Psql_and_pgbench_run_through_the_pooler()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var r = pg.RunPsqlCommand("select 'hello ' || current_user", PostgresFixture.ScramUser, port: p.Port);
        Assert.True(r.Succeeded, r.ToString());
        Assert.Equal($"hello {PostgresFixture.ScramUser}", r.StdOut.Trim());
    }

    [Fact]
    public async Task Application_name_and_startup_settings_pass_through()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var b = new NpgsqlConnectionStringBuilder(p.ConnectionString(applicationName: "my-app")) { Timezone = "Asia/Tokyo" };
        await using var c = new NpgsqlConnection(b.ConnectionString);
        await c.OpenAsync();
        Assert.Equal("my-app", await new NpgsqlCommand("select current_setting('application_name')", c).ExecuteScalarAsync());
        Assert.Equal("Asia/Tokyo", await new NpgsqlCommand("show timezone", c).ExecuteScalarAsync());
    }

    [Fact]
    public async Task Unsupported_startup_parameter_gets_a_clear_error_unless_ignored()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var b = new NpgsqlConnectionStringBuilder(p.ConnectionString()) { Options = "-c work_mem=64MB" };
        var e = await Assert.ThrowsAsync<PostgresException>(async () => { await using var c = new NpgsqlConnection(b.ConnectionString); await c.OpenAsync(); });
        Assert.Contains("unsupported startup parameter: options", e.MessageText);
        await using var p2 = await PoolerHarness.StartAsync(pg, "ignore-startup-parameters = [extra_float_digits, options]");
        await using var c2 = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(p2.ConnectionString()) { Options = "-c work_mem=64MB" }.ConnectionString);
        await c2.OpenAsync();
    }
}
