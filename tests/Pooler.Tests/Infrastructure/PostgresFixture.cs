using Npgsql;
using Xunit;

namespace Pooler.Tests.Infrastructure;

/// <summary>
/// Test classes marked <c>[Collection("postgres")]</c> share one <see cref="PostgresFixture"/> (one
/// PostgreSQL server for the whole run; the classes of the collection run one after another).
/// </summary>
[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresFixture>
{
    public const string Name = "postgres";
}

/// <summary>
/// A throwaway PostgreSQL server with the test users and databases:
/// <list type="bullet">
/// <item><c>scram_user</c>/<c>scram_pass</c> (SCRAM-SHA-256), owner of <c>pooler_test</c></item>
/// <item><c>md5_user</c>/<c>md5_pass</c> (password stored as md5, pg_hba md5)</item>
/// <item><c>trust_user</c> (no password, pg_hba trust)</item>
/// <item><c>pooler_admin</c>/<c>admin_pass</c> superuser (SCRAM)</item>
/// <item>databases <c>pooler_test</c> (everyone may connect and create tables) and <c>other_db</c></item>
/// </list>
/// Reached over TCP at <see cref="Host"/>:<see cref="Port"/>; the OS-level superuser <c>postgres</c> is trusted on the unix socket only.
/// </summary>
public sealed class PostgresFixture : IAsyncLifetime, IDisposable
{
    public const string ScramUser = "scram_user";
    public const string ScramPassword = "scram_pass";
    public const string Md5User = "md5_user";
    public const string Md5Password = "md5_pass";
    public const string TrustUser = "trust_user";
    public const string AdminUser = "pooler_admin";
    public const string AdminPassword = "admin_pass";
    public const string SuperUser = PostgresServer.SuperUser;
    public const string Database = "pooler_test";
    public const string OtherDatabase = "other_db";

    private PostgresServer? _server;

    /// <summary>Plain passwords of the test users (trust_user maps to the empty string).</summary>
    public static IReadOnlyDictionary<string, string> Passwords { get; } = new Dictionary<string, string>
    {
        [ScramUser] = ScramPassword,
        [Md5User] = Md5Password,
        [TrustUser] = "",
        [AdminUser] = AdminPassword,
    };

    public PostgresServer Server => _server ?? throw new InvalidOperationException("PostgresFixture is not initialized");
    public string Host => Server.Host;
    public int Port => Server.Port;
    public string BinDir => Server.BinDir;

    public async Task InitializeAsync()
    {
        _server = await Task.Run(() =>
        {
            var server = PostgresServer.Create();
            try
            {
                server.Start();
            }
            catch
            {
                server.Dispose();
                throw;
            }
            return server;
        }).ConfigureAwait(false);
        try
        {
            await CreateUsersAndDatabasesAsync().ConfigureAwait(false);
        }
        catch
        {
            _server.Dispose();
            _server = null;
            throw;
        }
    }

    private Task CreateUsersAndDatabasesAsync() => CreateUsersAndDatabasesAsync(Server);

    /// <summary>The test users and databases on <paramref name="s"/> (also used by the TLS fixture), plus
    /// <paramref name="extraRoles"/>: LOGIN roles without a password that may connect to pooler_test.</summary>
    internal static async Task CreateUsersAndDatabasesAsync(PostgresServer s, params string[] extraRoles)
    {
        var extra = string.Concat(extraRoles.Select(r => $"CREATE ROLE {r} LOGIN;\n"));
        await s.ExecuteAsync($"""
            SET password_encryption = 'md5';
            CREATE ROLE {Md5User} LOGIN PASSWORD '{Md5Password}';
            SET password_encryption = 'scram-sha-256';
            CREATE ROLE {ScramUser} LOGIN PASSWORD '{ScramPassword}';
            CREATE ROLE {TrustUser} LOGIN;
            CREATE ROLE {AdminUser} LOGIN SUPERUSER PASSWORD '{AdminPassword}';
            {extra}
            """).ConfigureAwait(false);
        // CREATE DATABASE cannot run inside the implicit transaction of a multi-statement command.
        await s.ExecuteAsync($"CREATE DATABASE {Database} OWNER {ScramUser}").ConfigureAwait(false);
        await s.ExecuteAsync($"CREATE DATABASE {OtherDatabase}").ConfigureAwait(false);
        var grantees = string.Join(", ", new[] { Md5User, TrustUser, ScramUser }.Concat(extraRoles));
        await s.ExecuteAsync($"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {Database} TO {grantees}").ConfigureAwait(false);
        await s.ExecuteAsync($"GRANT CONNECT, TEMPORARY ON DATABASE {OtherDatabase} TO PUBLIC").ConfigureAwait(false);
        await s.ExecuteAsync("GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC", Database).ConfigureAwait(false);
        await s.ExecuteAsync("GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC", OtherDatabase).ConfigureAwait(false);
    }

    /// <summary>The known plain password of a test user, or null.</summary>
    public static string? PasswordOf(string user) =>
        Passwords.TryGetValue(user, out var p) && p.Length > 0 ? p : null;

    /// <summary>
    /// Npgsql connection string (Pooling=false unless asked). <paramref name="password"/> null = the user's known
    /// password. <paramref name="host"/>/<paramref name="port"/> point it elsewhere, e.g. at a pooler in front of this server.
    /// </summary>
    public string ConnectionString(string user, string? password = null, string database = Database,
        string? applicationName = null, bool pooling = false, int? port = null, string? host = null)
    {
        var b = new NpgsqlConnectionStringBuilder
        {
            Host = host ?? Host,
            Port = port ?? Port,
            Username = user,
            Database = database,
            Pooling = pooling,
            Timeout = 15,
            CommandTimeout = 60,
            IncludeErrorDetail = true,
            GssEncryptionMode = GssEncryptionMode.Disable,
        };
        var pw = password ?? PasswordOf(user);
        if (!string.IsNullOrEmpty(pw)) b.Password = pw;
        if (applicationName != null) b.ApplicationName = applicationName;
        return b.ConnectionString;
    }

    /// <summary>pooler_admin (superuser, SCRAM over TCP) on pooler_test.</summary>
    public string AdminConnectionString => ConnectionString(AdminUser, AdminPassword);

    /// <summary>OS superuser postgres over the unix socket (trust).</summary>
    public string SuperuserConnectionString(string database = Database) => Server.SuperuserConnectionString(database);

    /// <summary>
    /// Runs psql (from <see cref="BinDir"/>, with -X) with the given arguments. Where to connect goes through
    /// PGHOST/PGPORT/PGUSER/PGDATABASE/PGPASSWORD (defaults: this server, pooler_admin, pooler_test), so
    /// <paramref name="args"/> need only the rest. <paramref name="password"/> null = the user's known password.
    /// </summary>
    public ProcessResult RunPsql(IEnumerable<string> args, string user = AdminUser, string? password = null,
        string database = Database, int? port = null, string? host = null, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string?>? environment = null) =>
        Server.RunClientTool("psql", new[] { "-X" }.Concat(args), ClientEnvironment(user, password, database, port, host, environment), timeout);

    /// <summary>Runs one SQL string through psql with -v ON_ERROR_STOP=1 -At (unaligned, tuples only).</summary>
    public ProcessResult RunPsqlCommand(string sql, string user = AdminUser, string? password = null,
        string database = Database, int? port = null, string? host = null, TimeSpan? timeout = null) =>
        RunPsql(new[] { "-v", "ON_ERROR_STOP=1", "-At", "-c", sql }, user, password, database, port, host, timeout);

    /// <summary>Runs pgbench (from <see cref="BinDir"/>); connection settings as for <see cref="RunPsql"/>.</summary>
    public ProcessResult RunPgbench(IEnumerable<string> args, string user = AdminUser, string? password = null,
        string database = Database, int? port = null, string? host = null, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string?>? environment = null) =>
        Server.RunClientTool("pgbench", args, ClientEnvironment(user, password, database, port, host, environment), timeout);

    /// <inheritdoc cref="RunPsql"/>
    public Task<ProcessResult> RunPsqlAsync(IEnumerable<string> args, string user = AdminUser, string? password = null,
        string database = Database, int? port = null, string? host = null, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string?>? environment = null)
    {
        var list = args.ToList();
        return Task.Run(() => RunPsql(list, user, password, database, port, host, timeout, environment));
    }

    /// <inheritdoc cref="RunPgbench"/>
    public Task<ProcessResult> RunPgbenchAsync(IEnumerable<string> args, string user = AdminUser, string? password = null,
        string database = Database, int? port = null, string? host = null, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string?>? environment = null)
    {
        var list = args.ToList();
        return Task.Run(() => RunPgbench(list, user, password, database, port, host, timeout, environment));
    }

    private Dictionary<string, string?> ClientEnvironment(string user, string? password, string database, int? port, string? host,
        IReadOnlyDictionary<string, string?>? extra)
    {
        var env = new Dictionary<string, string?>
        {
            ["PGHOST"] = host ?? Host,
            ["PGPORT"] = (port ?? Port).ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["PGUSER"] = user,
            ["PGDATABASE"] = database,
            ["PGSSLMODE"] = "disable",
            ["PGCONNECT_TIMEOUT"] = "15",
        };
        var pw = password ?? PasswordOf(user);
        if (!string.IsNullOrEmpty(pw)) env["PGPASSWORD"] = pw;
        if (extra != null)
            foreach (var (k, v) in extra) env[k] = v;
        return env;
    }

    /// <summary>
    /// Client backends in pg_stat_activity (what a pooler holds open), optionally filtered by application_name,
    /// user and database. The probe's own connection is not counted.
    /// </summary>
    public int ActiveConnections(string? applicationName = null, string? user = null, string? database = null) =>
        Server.ActiveConnectionsAsync(applicationName, user, database).GetAwaiter().GetResult();

    /// <inheritdoc cref="ActiveConnections"/>
    public Task<int> ActiveConnectionsAsync(string? applicationName = null, string? user = null, string? database = null) =>
        Server.ActiveConnectionsAsync(applicationName, user, database);

    /// <summary>Runs SQL as the OS superuser postgres (unix socket).</summary>
    public Task ExecuteAsync(string sql, string database = Database) => Server.ExecuteAsync(sql, database);

    /// <summary>First column of the first row, as the OS superuser postgres.</summary>
    public Task<object?> ScalarAsync(string sql, string database = Database) => Server.ScalarAsync(sql, database);

    /// <summary>Creates a database (e.g. a throwaway one for pgbench), everyone may connect and create tables.</summary>
    public async Task CreateDatabaseAsync(string name, string? owner = null)
    {
        await Server.ExecuteAsync($"CREATE DATABASE \"{name}\"" + (owner != null ? $" OWNER \"{owner}\"" : "")).ConfigureAwait(false);
        await Server.ExecuteAsync("GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC", name).ConfigureAwait(false);
    }

    /// <summary>Drops a database, closing its connections (WITH (FORCE)).</summary>
    public Task DropDatabaseAsync(string name) =>
        Server.ExecuteAsync($"DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");

    /// <summary>Stops and starts PostgreSQL on the same port (drops every server connection).</summary>
    public void Restart() => Server.Restart();

    public void Stop() => Server.Stop();

    public void Start() => Server.Start();

    /// <summary>
    /// A users file (PgBouncer userlist format) in its own scratch folder; dispose it when done.
    /// Null entries = the test users with their plain passwords.
    /// </summary>
    public static UsersFile CreateUsersFile(IEnumerable<KeyValuePair<string, string>>? entries = null, bool forServiceUser = false) =>
        UsersFile.Create(entries ?? Passwords, forServiceUser: forServiceUser);

    public Task DisposeAsync()
    {
        Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        _server?.Dispose();
        _server = null;
    }
}
