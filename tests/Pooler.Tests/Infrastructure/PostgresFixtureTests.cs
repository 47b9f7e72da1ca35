using Npgsql;
using Xunit;

namespace Pooler.Tests.Infrastructure;

[Collection(PostgresCollection.Name)]
public sealed class PostgresFixtureTests
{
    private readonly PostgresFixture _pg;

    public PostgresFixtureTests(PostgresFixture pg) => _pg = pg;

    [Theory]
    [InlineData(PostgresFixture.ScramUser)]
    [InlineData(PostgresFixture.Md5User)]
    [InlineData(PostgresFixture.TrustUser)]
    [InlineData(PostgresFixture.AdminUser)]
    public async Task Users_can_connect_with_npgsql(string user)
    {
        await using var conn = new NpgsqlConnection(_pg.ConnectionString(user));
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT current_user, current_database()", conn);
        await using var reader = await cmd.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        Assert.Equal(user, reader.GetString(0));
        Assert.Equal(PostgresFixture.Database, reader.GetString(1));
    }

    [Theory]
    [InlineData(PostgresFixture.ScramUser, "SCRAM-SHA-256$")]
    [InlineData(PostgresFixture.Md5User, "md5")]
    public async Task Passwords_are_stored_with_the_intended_method(string user, string prefix)
    {
        var stored = (string?)await _pg.ScalarAsync($"SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'");
        Assert.NotNull(stored);
        Assert.StartsWith(prefix, stored);
    }

    [Fact]
    public async Task Wrong_password_is_rejected()
    {
        await using var conn = new NpgsqlConnection(_pg.ConnectionString(PostgresFixture.ScramUser, "wrong"));
        var e = await Assert.ThrowsAsync<PostgresException>(() => conn.OpenAsync());
        Assert.Equal("28P01", e.SqlState);
    }

    [Theory]
    [InlineData(PostgresFixture.ScramUser)]
    [InlineData(PostgresFixture.Md5User)]
    [InlineData(PostgresFixture.TrustUser)]
    public async Task Test_users_can_create_tables_in_pooler_test(string user)
    {
        var table = $"t_{user}_{Guid.NewGuid():N}"[..40];
        await using var conn = new NpgsqlConnection(_pg.ConnectionString(user));
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand($"CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1); SELECT count(*) FROM {table}; DROP TABLE {table}", conn);
        Assert.Equal(1L, await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public async Task Other_db_is_reachable()
    {
        await using var conn = new NpgsqlConnection(_pg.ConnectionString(PostgresFixture.ScramUser, database: PostgresFixture.OtherDatabase));
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT current_database()", conn);
        Assert.Equal(PostgresFixture.OtherDatabase, await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public void Psql_runs_against_the_server()
    {
        var result = _pg.RunPsqlCommand("SELECT current_user || ':' || current_setting('max_connections') || ':' || current_setting('fsync')",
            user: PostgresFixture.ScramUser);
        result.EnsureSuccess("psql");
        Assert.Equal("scram_user:1200:off", result.StdOut.Trim());
    }

    [Fact]
    public void Psql_with_wrong_password_fails()
    {
        var result = _pg.RunPsqlCommand("SELECT 1", user: PostgresFixture.Md5User, password: "nope");
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("password authentication failed", result.StdErr);
    }

    [Fact]
    public async Task Pgbench_initializes_and_runs_select_only()
    {
        var db = "bench_" + Guid.NewGuid().ToString("N")[..8];
        await _pg.CreateDatabaseAsync(db, PostgresFixture.ScramUser);
        try
        {
            _pg.RunPgbench(new[] { "-i", "-s", "1", "-q" }, PostgresFixture.ScramUser, database: db, timeout: TimeSpan.FromMinutes(3))
                .EnsureSuccess("pgbench -i");
            var run = _pg.RunPgbench(new[] { "-S", "-c", "4", "-j", "2", "-t", "100", "-n" }, PostgresFixture.ScramUser, database: db,
                timeout: TimeSpan.FromMinutes(3)).EnsureSuccess("pgbench -S");
            Assert.Contains("number of transactions actually processed: 400/400", run.StdOut);
        }
        finally
        {
            await _pg.DropDatabaseAsync(db);
        }
    }

    [Fact]
    public async Task ActiveConnections_counts_client_backends()
    {
        var app = "probe-" + Guid.NewGuid().ToString("N")[..8];
        Assert.Equal(0, await _pg.ActiveConnectionsAsync(app));
        var conns = new List<NpgsqlConnection>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var c = new NpgsqlConnection(_pg.ConnectionString(PostgresFixture.TrustUser, applicationName: app));
                await c.OpenAsync();
                conns.Add(c);
            }
            Assert.Equal(3, _pg.ActiveConnections(app));
            Assert.Equal(3, _pg.ActiveConnections(app, PostgresFixture.TrustUser));
            Assert.Equal(0, _pg.ActiveConnections(app, PostgresFixture.ScramUser));
        }
        finally
        {
            foreach (var c in conns) await c.DisposeAsync();
        }
        await Eventually.True(() => _pg.ActiveConnections(app) == 0, "backends gone after close");
    }

    [Fact]
    public async Task Restart_keeps_the_port_and_drops_connections()
    {
        var port = _pg.Port;
        await using var conn = new NpgsqlConnection(_pg.ConnectionString(PostgresFixture.ScramUser));
        await conn.OpenAsync();
        _pg.Restart();
        Assert.Equal(port, _pg.Port);
        await using (var cmd = new NpgsqlCommand("SELECT 1", conn))
            await Assert.ThrowsAnyAsync<Exception>(() => cmd.ExecuteScalarAsync());

        await using var again = new NpgsqlConnection(_pg.ConnectionString(PostgresFixture.ScramUser));
        await again.OpenAsync();
        await using var cmd2 = new NpgsqlCommand("SELECT 1", again);
        Assert.Equal(1, await cmd2.ExecuteScalarAsync());
    }

    [Fact]
    public void Users_file_has_pgbouncer_format()
    {
        using var file = PostgresFixture.CreateUsersFile(new Dictionary<string, string>
        {
            ["plain"] = "pw",
            ["md5"] = UsersFile.Md5Secret("md5", "pw"),
            ["q\"uote"] = "x",
        });
        var lines = File.ReadAllLines(file.Path);
        Assert.Equal("\"plain\" \"pw\"", lines[0]);
        Assert.Equal($"\"md5\" \"md5{Convert.ToHexStringLower(System.Security.Cryptography.MD5.HashData("pwmd5"u8))}\"", lines[1]);
        Assert.Equal("\"q\"\"uote\" \"x\"", lines[2]);
        var dir = file.Directory;
        file.Dispose();
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public async Task Scram_secret_matches_what_postgres_computes()
    {
        var stored = (string)(await _pg.ScalarAsync($"SELECT rolpassword FROM pg_authid WHERE rolname = '{PostgresFixture.ScramUser}'"))!;
        // SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>
        var parts = stored.Split('$');
        var iterations = int.Parse(parts[1].Split(':')[0]);
        var salt = Convert.FromBase64String(parts[1].Split(':')[1]);
        Assert.Equal(stored, UsersFile.ScramSecret(PostgresFixture.ScramPassword, salt, iterations));
    }

    [Fact]
    public async Task Eventually_fails_with_the_message_and_last_value()
    {
        var e = await Assert.ThrowsAsync<Xunit.Sdk.XunitException>(() =>
            Eventually.Value(() => 42, v => v == 0, "answer is zero", TimeSpan.FromMilliseconds(200)));
        Assert.Contains("answer is zero", e.Message);
        Assert.Contains("42", e.Message);
    }

    [Fact]
    public void FreePort_gives_distinct_ports()
    {
        var a = FreePort.Next();
        var b = FreePort.Next();
        Assert.NotEqual(a, b);
        Assert.False(FreePort.IsAccepting(a));
        Assert.True(FreePort.IsAccepting(_pg.Port));
    }
}
