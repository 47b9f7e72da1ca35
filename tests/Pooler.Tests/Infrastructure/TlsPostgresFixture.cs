using System.Globalization;
using Npgsql;
using Xunit;

namespace Pooler.Tests.Infrastructure;

/// <summary>
/// Test classes marked <c>[Collection("postgres-tls")]</c> share one <see cref="TlsPostgresFixture"/> (one PostgreSQL
/// server with TLS for the whole run; the classes of the collection run one after another).
/// </summary>
[CollectionDefinition(Name)]
public sealed class PostgresTlsCollection : ICollectionFixture<TlsPostgresFixture>
{
    public const string Name = "postgres-tls";
}

/// <summary>
/// A throwaway PostgreSQL server with <c>ssl = on</c> that accepts TCP connections over TLS only, with its own
/// <see cref="TestCertificates"/> (server.crt/server.key, ca.crt for client certificates). Same users and databases as
/// <see cref="PostgresFixture"/>, plus <c>cert_user</c> (no password) that logs in with a client certificate whose CN is
/// its name. pg_hba.conf: <see cref="HbaLines"/>.
/// </summary>
public sealed class TlsPostgresFixture : IAsyncLifetime, IDisposable
{
    public const string ScramUser = PostgresFixture.ScramUser;
    public const string ScramPassword = PostgresFixture.ScramPassword;
    public const string Md5User = PostgresFixture.Md5User;
    public const string Md5Password = PostgresFixture.Md5Password;
    public const string TrustUser = PostgresFixture.TrustUser;
    public const string AdminUser = PostgresFixture.AdminUser;
    public const string AdminPassword = PostgresFixture.AdminPassword;
    public const string SuperUser = PostgresFixture.SuperUser;
    public const string Database = PostgresFixture.Database;
    public const string OtherDatabase = PostgresFixture.OtherDatabase;

    /// <summary>LOGIN role without a password: only a client certificate with CN=cert_user gets in.</summary>
    public const string CertUser = "cert_user";

    private PostgresServer? _server;
    private TestCertificates? _certs;

    /// <summary>
    /// TLS-only rules: certificate login for cert_user, the users' usual methods for the others (md5_user's password
    /// is stored as md5, so it needs its own md5 line), and nothing in plaintext over TCP.
    /// </summary>
    public static IReadOnlyList<string> HbaLines { get; } = new[]
    {
        "# TYPE     DATABASE  USER        ADDRESS        METHOD",
        "local      all       postgres                   trust",
        "local      all       all                        scram-sha-256",
        $"hostssl    all       {CertUser}   127.0.0.1/32   cert clientcert=verify-full",
        $"hostssl    all       {Md5User}    127.0.0.1/32   md5",
        $"hostssl    all       {TrustUser}  127.0.0.1/32   trust",
        "hostssl    all       all         127.0.0.1/32   scram-sha-256",
        "hostnossl  all       all         127.0.0.1/32   reject",
    };

    public PostgresServer Server => _server ?? throw new InvalidOperationException("TlsPostgresFixture is not initialized");
    public TestCertificates Certs => _certs ?? throw new InvalidOperationException("TlsPostgresFixture is not initialized");
    public string Host => Server.Host;
    public int Port => Server.Port;
    public string BinDir => Server.BinDir;

    public async Task InitializeAsync()
    {
        await Task.Run(() =>
        {
            _certs = TestCertificates.Create();
            try
            {
                _server = StartServer(_certs);
            }
            catch
            {
                _certs.Dispose();
                _certs = null;
                throw;
            }
        }).ConfigureAwait(false);
        try
        {
            await CreateUsersAndDatabasesAsync().ConfigureAwait(false);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private static PostgresServer StartServer(TestCertificates certs)
    {
        var settings = new Dictionary<string, string>
        {
            ["ssl"] = "on",
            // Copies the postgres OS user owns with mode 0600: PostgreSQL refuses a key others may read.
            ["ssl_cert_file"] = Quote(certs.ServiceUserCopy(certs.ServerCert)),
            ["ssl_key_file"] = Quote(certs.ServiceUserCopy(certs.ServerKey)),
            // Needed for clientcert/cert auth; it also makes the server ask every client for a certificate (optional).
            ["ssl_ca_file"] = Quote(certs.ServiceUserCopy(certs.CaCert)),
        };
        var server = PostgresServer.Create(new PostgresServerOptions { HbaLines = HbaLines, Settings = settings });
        try
        {
            server.Start();
            return server;
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    private static string Quote(string s) => "'" + s.Replace("'", "''") + "'";

    private Task CreateUsersAndDatabasesAsync() => PostgresFixture.CreateUsersAndDatabasesAsync(Server, CertUser);

    /// <summary>The known plain password of a test user, or null (trust_user, cert_user, unknown users).</summary>
    public static string? PasswordOf(string user) => PostgresFixture.PasswordOf(user);

    /// <summary>
    /// Npgsql settings (Pooling=false unless asked). <paramref name="password"/> null = the user's known password.
    /// <paramref name="rootCertificate"/> null = ca.crt for VerifyCA/VerifyFull (none otherwise);
    /// <paramref name="clientCertificate"/>/<paramref name="clientKey"/> are PEM paths, e.g. from
    /// <see cref="TestCertificates.ClientCert"/>. <paramref name="host"/>/<paramref name="port"/> point it elsewhere,
    /// e.g. at a pooler in front of this server (use host "localhost" or "127.0.0.1": both are in server.crt).
    /// </summary>
    public NpgsqlConnectionStringBuilder ConnectionStringBuilder(string user, string? password = null, string database = Database,
        SslMode sslMode = SslMode.VerifyFull, string? rootCertificate = null, string? clientCertificate = null, string? clientKey = null,
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
            SslMode = sslMode,
        };
        var root = rootCertificate ?? (sslMode is SslMode.VerifyCA or SslMode.VerifyFull ? Certs.CaCert : null);
        if (root != null) b.RootCertificate = root;
        if (clientCertificate != null) b.SslCertificate = clientCertificate;
        if (clientKey != null) b.SslKey = clientKey;
        var pw = password ?? PasswordOf(user);
        if (!string.IsNullOrEmpty(pw)) b.Password = pw;
        if (applicationName != null) b.ApplicationName = applicationName;
        return b;
    }

    /// <inheritdoc cref="ConnectionStringBuilder"/>
    public string ConnectionString(string user, string? password = null, string database = Database,
        SslMode sslMode = SslMode.VerifyFull, string? rootCertificate = null, string? clientCertificate = null, string? clientKey = null,
        string? applicationName = null, bool pooling = false, int? port = null, string? host = null) =>
        ConnectionStringBuilder(user, password, database, sslMode, rootCertificate, clientCertificate, clientKey,
            applicationName, pooling, port, host).ConnectionString;

    /// <summary>VerifyFull with the client certificate of <paramref name="user"/> (CN = user) and no password.</summary>
    public string CertConnectionString(string user = CertUser, string database = Database, string? applicationName = null,
        bool pooling = false, int? port = null, string? host = null)
    {
        var (cert, key) = Certs.ClientCert(user);
        return ConnectionString(user, password: "", database, SslMode.VerifyFull, clientCertificate: cert, clientKey: key,
            applicationName: applicationName, pooling: pooling, port: port, host: host);
    }

    /// <summary>pooler_admin (superuser, SCRAM over verify-full TLS) on pooler_test.</summary>
    public string AdminConnectionString => ConnectionString(AdminUser, AdminPassword);

    /// <summary>OS superuser postgres over the unix socket (trust, no TLS).</summary>
    public string SuperuserConnectionString(string database = Database) => Server.SuperuserConnectionString(database);

    /// <summary>
    /// libpq TLS variables for <see cref="RunPsql"/>'s <c>environment</c>: PGSSLMODE, PGSSLROOTCERT (null = ca.crt),
    /// and PGSSLCERT/PGSSLKEY when given (libpq wants the key 0600 and owned by the caller, as the files of
    /// <see cref="Certs"/> are).
    /// </summary>
    public Dictionary<string, string?> SslEnvironment(string sslMode = "verify-full", string? rootCertificate = null,
        string? clientCertificate = null, string? clientKey = null)
    {
        var env = new Dictionary<string, string?>
        {
            ["PGSSLMODE"] = sslMode,
            ["PGSSLROOTCERT"] = rootCertificate ?? Certs.CaCert,
        };
        if (clientCertificate != null) env["PGSSLCERT"] = clientCertificate;
        if (clientKey != null) env["PGSSLKEY"] = clientKey;
        return env;
    }

    /// <summary><see cref="SslEnvironment"/> (verify-full) with the client certificate and key of CN=<paramref name="cn"/>.</summary>
    public Dictionary<string, string?> ClientCertEnvironment(string cn, bool expired = false, bool otherCa = false)
    {
        var (cert, key) = Certs.ClientCert(cn, expired, otherCa);
        return SslEnvironment(clientCertificate: cert, clientKey: key);
    }

    /// <summary>
    /// Runs psql (from <see cref="BinDir"/>, with -X). Where to connect goes through PGHOST/PGPORT/PGUSER/PGDATABASE/
    /// PGPASSWORD (defaults: this server, pooler_admin, pooler_test); TLS defaults to PGSSLMODE=verify-full with
    /// PGSSLROOTCERT=ca.crt. <paramref name="environment"/> overrides any of them (e.g. <see cref="SslEnvironment"/>;
    /// a null value removes the variable). <paramref name="password"/> null = the user's known password.
    /// </summary>
    public ProcessResult RunPsql(IEnumerable<string> args, string user = AdminUser, string? password = null,
        string database = Database, int? port = null, string? host = null, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string?>? environment = null) =>
        Server.RunClientTool("psql", new[] { "-X" }.Concat(args), ClientEnvironment(user, password, database, port, host, environment), timeout);

    /// <summary>Runs one SQL string through psql with -v ON_ERROR_STOP=1 -At (unaligned, tuples only).</summary>
    public ProcessResult RunPsqlCommand(string sql, string user = AdminUser, string? password = null,
        string database = Database, int? port = null, string? host = null, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string?>? environment = null) =>
        RunPsql(new[] { "-v", "ON_ERROR_STOP=1", "-At", "-c", sql }, user, password, database, port, host, timeout, environment);

    /// <inheritdoc cref="RunPsql"/>
    public Task<ProcessResult> RunPsqlAsync(IEnumerable<string> args, string user = AdminUser, string? password = null,
        string database = Database, int? port = null, string? host = null, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string?>? environment = null)
    {
        var list = args.ToList();
        return Task.Run(() => RunPsql(list, user, password, database, port, host, timeout, environment));
    }

    /// <summary>Runs pgbench (from <see cref="BinDir"/>); connection and TLS settings as for <see cref="RunPsql"/>.</summary>
    public ProcessResult RunPgbench(IEnumerable<string> args, string user = AdminUser, string? password = null,
        string database = Database, int? port = null, string? host = null, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string?>? environment = null) =>
        Server.RunClientTool("pgbench", args, ClientEnvironment(user, password, database, port, host, environment), timeout);

    private Dictionary<string, string?> ClientEnvironment(string user, string? password, string database, int? port, string? host,
        IReadOnlyDictionary<string, string?>? extra)
    {
        var env = new Dictionary<string, string?>
        {
            ["PGHOST"] = host ?? Host,
            ["PGPORT"] = (port ?? Port).ToString(CultureInfo.InvariantCulture),
            ["PGUSER"] = user,
            ["PGDATABASE"] = database,
            ["PGSSLMODE"] = "verify-full",
            ["PGSSLROOTCERT"] = Certs.CaCert,
            ["PGCONNECT_TIMEOUT"] = "15",
            // No client certificate etc. inherited from the test process's environment.
            ["PGSSLCERT"] = null,
            ["PGSSLKEY"] = null,
            ["PGSSLCRL"] = null,
            ["PGSSLCRLDIR"] = null,
            ["PGGSSENCMODE"] = "disable",
        };
        var pw = password ?? PasswordOf(user);
        if (!string.IsNullOrEmpty(pw)) env["PGPASSWORD"] = pw;
        if (extra != null)
            foreach (var (k, v) in extra) env[k] = v;
        return env;
    }

    /// <summary>Runs SQL as the OS superuser postgres (unix socket).</summary>
    public Task ExecuteAsync(string sql, string database = Database) => Server.ExecuteAsync(sql, database);

    /// <summary>First column of the first row, as the OS superuser postgres.</summary>
    public Task<object?> ScalarAsync(string sql, string database = Database) => Server.ScalarAsync(sql, database);

    /// <inheritdoc cref="PostgresFixture.ActiveConnectionsAsync"/>
    public Task<int> ActiveConnectionsAsync(string? applicationName = null, string? user = null, string? database = null) =>
        Server.ActiveConnectionsAsync(applicationName, user, database);

    /// <summary>The server log so far (authentication failures are explained there, not to the client).</summary>
    public string ReadLog() => Server.ReadLog();

    /// <summary>Stops and starts PostgreSQL on the same port (drops every server connection).</summary>
    public void Restart() => Server.Restart();

    public Task DisposeAsync()
    {
        Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        _server?.Dispose();
        _server = null;
        _certs?.Dispose();
        _certs = null;
    }
}
