using System.Globalization;
using System.Text;
using Npgsql;

namespace Pooler.Tests.Infrastructure;

/// <summary>Settings for a throwaway PostgreSQL cluster.</summary>
public sealed record PostgresServerOptions
{
    /// <summary>Folder with initdb/pg_ctl/psql/pgbench; null = <see cref="PostgresServer.FindBinDir"/>.</summary>
    public string? BinDir { get; init; }

    public int MaxConnections { get; init; } = 1200;
    public string SharedBuffers { get; init; } = "128MB";

    /// <summary>pg_hba.conf lines; null = <see cref="PostgresServer.DefaultHba"/>.</summary>
    public IReadOnlyList<string>? HbaLines { get; init; }

    /// <summary>More postgresql.conf settings (value written verbatim, quote strings yourself).</summary>
    public IReadOnlyDictionary<string, string> Settings { get; init; } = new Dictionary<string, string>();
}

/// <summary>
/// One throwaway PostgreSQL cluster: initdb into a scratch folder under /tmp, a free port on 127.0.0.1,
/// start/stop/restart through pg_ctl, deleted on dispose. When the tests run as root every server-side
/// binary runs as the OS user <c>postgres</c> via <c>runuser</c> (initdb and postgres refuse root).
/// </summary>
public sealed class PostgresServer : IDisposable
{
    /// <summary>The bootstrap superuser made by initdb; trusted on the unix socket only.</summary>
    public const string SuperUser = "postgres";

    private const string ProbeApplicationName = "pooler-tests-probe";
    private static readonly TimeSpan PgCtlTimeout = TimeSpan.FromSeconds(90);

    private readonly TestDirectory _dir;
    private readonly object _gate = new();
    private bool _disposed;
    private bool _everStarted;

    public string BinDir { get; }
    public string Host => "127.0.0.1";
    public int Port { get; private set; }

    /// <summary>Scratch folder holding data/, the unix socket and the log.</summary>
    public string BaseDir => _dir.Path;
    public string DataDir => Path.Combine(BaseDir, "data");
    /// <summary>unix_socket_directories (the socket is <c>.s.PGSQL.{Port}</c> in it).</summary>
    public string SocketDir => BaseDir;
    public string LogFile => Path.Combine(BaseDir, "postgres.log");
    public bool IsRunning { get; private set; }

    private PostgresServer(TestDirectory dir, string binDir)
    {
        _dir = dir;
        BinDir = binDir;
    }

    /// <summary>pg_hba.conf used unless the options give other lines.</summary>
    public static IReadOnlyList<string> DefaultHba { get; } = new[]
    {
        "# TYPE  DATABASE  USER        ADDRESS        METHOD",
        "local   all       postgres                   trust",
        "local   all       all                        scram-sha-256",
        "host    all       trust_user  127.0.0.1/32   trust",
        "host    all       md5_user    127.0.0.1/32   md5",
        "host    all       scram_user  127.0.0.1/32   scram-sha-256",
        "host    all       all         127.0.0.1/32   scram-sha-256",
    };

    /// <summary>
    /// Folder of the PostgreSQL server binaries: $PG_BIN, else the newest /usr/lib/postgresql/N/bin,
    /// else the folder of <c>initdb</c> (or <c>pg_ctl</c>) on PATH.
    /// </summary>
    public static string FindBinDir()
    {
        var env = Environment.GetEnvironmentVariable("PG_BIN");
        if (!string.IsNullOrWhiteSpace(env))
        {
            if (File.Exists(Path.Combine(env, "initdb"))) return env;
            throw new InvalidOperationException($"PG_BIN={env} has no initdb");
        }

        const string debianRoot = "/usr/lib/postgresql";
        if (Directory.Exists(debianRoot))
        {
            var newest = Directory.GetDirectories(debianRoot)
                .Select(d => (Dir: Path.Combine(d, "bin"), Version: ParseVersion(Path.GetFileName(d))))
                .Where(x => x.Version != null && File.Exists(Path.Combine(x.Dir, "initdb")))
                .OrderByDescending(x => x.Version)
                .FirstOrDefault();
            if (newest.Dir != null) return newest.Dir;
        }

        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            if (File.Exists(Path.Combine(dir, "initdb")) && File.Exists(Path.Combine(dir, "pg_ctl")))
                return dir;
        }
        throw new InvalidOperationException(
            "PostgreSQL server binaries not found: set PG_BIN, or install them (Debian: apt-get install postgresql)");
    }

    private static Version? ParseVersion(string name) =>
        Version.TryParse(name.Contains('.') ? name : name + ".0", out var v) ? v : null;

    /// <summary>Runs initdb and writes the configuration; the server is not started yet.</summary>
    public static PostgresServer Create(PostgresServerOptions? options = null)
    {
        options ??= new PostgresServerOptions();
        var binDir = options.BinDir ?? FindBinDir();
        var dir = TestDirectory.Create("pg", forServiceUser: true);
        var server = new PostgresServer(dir, binDir);
        try
        {
            server.InitDb(options);
            return server;
        }
        catch
        {
            dir.Dispose();
            throw;
        }
    }

    private void InitDb(PostgresServerOptions options)
    {
        RunServerTool("initdb", new[]
        {
            "-D", DataDir, "-U", SuperUser, "-E", "UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions",
        }, TimeSpan.FromMinutes(3)).EnsureSuccess("initdb");

        var conf = new StringBuilder();
        conf.AppendLine();
        conf.AppendLine("# --- Pooler test fixture ---");
        var settings = new Dictionary<string, string>
        {
            ["listen_addresses"] = "'127.0.0.1'",
            ["unix_socket_directories"] = Quote(SocketDir),
            ["max_connections"] = options.MaxConnections.ToString(CultureInfo.InvariantCulture),
            ["shared_buffers"] = options.SharedBuffers,
            ["fsync"] = "off",
            ["synchronous_commit"] = "off",
            ["full_page_writes"] = "off",
            ["password_encryption"] = "'scram-sha-256'",
            ["logging_collector"] = "off",
            ["log_destination"] = "'stderr'",
            ["log_line_prefix"] = "'%m [%p] %q%u@%d/%a '",
            ["log_timezone"] = "'UTC'",
            ["timezone"] = "'UTC'",
            ["max_wal_size"] = "'1GB'",
        };
        foreach (var (k, v) in options.Settings) settings[k] = v;
        foreach (var (k, v) in settings) conf.AppendLine($"{k} = {v}");
        conf.AppendLine("include 'pooler_port.conf'");
        File.AppendAllText(Path.Combine(DataDir, "postgresql.conf"), conf.ToString());

        File.WriteAllText(Path.Combine(DataDir, "pg_hba.conf"),
            string.Join('\n', options.HbaLines ?? DefaultHba) + "\n");
        Port = FreePort.Next();
        WritePortFile();
    }

    private void WritePortFile()
    {
        var file = Path.Combine(DataDir, "pooler_port.conf");
        File.WriteAllText(file, $"port = {Port}\n");
        ProcessRunner.GiveToServiceUser(file);
        ProcessRunner.GiveToServiceUser(Path.Combine(DataDir, "postgresql.conf"));
        ProcessRunner.GiveToServiceUser(Path.Combine(DataDir, "pg_hba.conf"));
    }

    private static string Quote(string s) => "'" + s.Replace("'", "''") + "'";

    /// <summary>
    /// Starts the server (pg_ctl start -w). On the first start only, picks another port if the chosen one got taken meanwhile.
    /// </summary>
    public void Start()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (IsRunning) return;
            for (var attempt = 1; ; attempt++)
            {
                var logLengthBefore = File.Exists(LogFile) ? new FileInfo(LogFile).Length : 0;
                var result = RunServerTool("pg_ctl", new[]
                {
                    "start", "-w", "-t", "60", "-D", DataDir, "-l", LogFile, "-s",
                }, PgCtlTimeout);
                if (result.Succeeded)
                {
                    IsRunning = true;
                    _everStarted = true;
                    return;
                }

                var log = ReadLogFrom(logLengthBefore);
                var portTaken = log.Contains("could not bind", StringComparison.OrdinalIgnoreCase)
                                || log.Contains("already in use", StringComparison.OrdinalIgnoreCase);
                // Only before the first start: afterwards clients (a pooler's config) already know the port.
                if (portTaken && attempt < 5 && !_everStarted)
                {
                    Port = FreePort.Next();
                    WritePortFile();
                    continue;
                }
                throw new InvalidOperationException($"PostgreSQL did not start on port {Port}: {result}\n--- log ---\n{log}");
            }
        }
    }

    /// <summary>Stops the server (pg_ctl stop -m fast; -m immediate if that does not finish).</summary>
    public void Stop()
    {
        lock (_gate)
        {
            if (!IsRunning) return;
            var result = RunServerTool("pg_ctl", new[] { "stop", "-w", "-t", "60", "-D", DataDir, "-m", "fast", "-s" }, PgCtlTimeout);
            if (!result.Succeeded)
                RunServerTool("pg_ctl", new[] { "stop", "-w", "-t", "30", "-D", DataDir, "-m", "immediate", "-s" }, PgCtlTimeout)
                    .EnsureSuccess("pg_ctl stop -m immediate");
            IsRunning = false;
        }
    }

    /// <summary>Stops and starts again on the same port (every server connection is dropped).</summary>
    public void Restart()
    {
        lock (_gate)
        {
            Stop();
            Start();
        }
    }

    /// <summary>The whole server log so far.</summary>
    public string ReadLog() => ReadLogFrom(0);

    private string ReadLogFrom(long offset)
    {
        try
        {
            using var stream = new FileStream(LogFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            if (offset > 0 && offset <= stream.Length) stream.Seek(offset, SeekOrigin.Begin);
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        }
        catch (IOException)
        {
            return "";
        }
    }

    /// <summary>Runs a server-side binary from <see cref="BinDir"/> (as the postgres OS user when root).</summary>
    public ProcessResult RunServerTool(string tool, IEnumerable<string> args, TimeSpan? timeout = null) =>
        ProcessRunner.Run(Path.Combine(BinDir, tool), args, timeout: timeout, workingDirectory: BaseDir, asServiceUser: true);

    /// <summary>
    /// Runs a client binary (psql, pgbench, ...) from <see cref="BinDir"/> as the current user. PG* variables
    /// of the test process are not passed on; give PGPASSWORD etc. in <paramref name="environment"/>.
    /// </summary>
    public ProcessResult RunClientTool(string tool, IEnumerable<string> args,
        IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? timeout = null) =>
        ProcessRunner.Run(Path.Combine(BinDir, tool), args, environment, timeout, workingDirectory: BaseDir);

    /// <summary>Npgsql connection string for the superuser over the unix socket (trusted, no password).</summary>
    public string SuperuserConnectionString(string database = "postgres", string? applicationName = null) =>
        new NpgsqlConnectionStringBuilder
        {
            Host = SocketDir,
            Port = Port,
            Username = SuperUser,
            Database = database,
            Pooling = false,
            Timeout = 15,
            CommandTimeout = 60,
            ApplicationName = applicationName,
        }.ConnectionString;

    /// <summary>Runs SQL as the superuser (over the unix socket) and returns the first column of the first row.</summary>
    public async Task<object?> ScalarAsync(string sql, string database = "postgres", params (string Name, object? Value)[] parameters)
    {
        await using var conn = new NpgsqlConnection(SuperuserConnectionString(database, ProbeApplicationName));
        await conn.OpenAsync().ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand(sql, conn);
        foreach (var (name, value) in parameters)
            cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        var result = await cmd.ExecuteScalarAsync().ConfigureAwait(false);
        return result is DBNull ? null : result;
    }

    /// <summary>Runs SQL statements as the superuser (over the unix socket).</summary>
    public async Task ExecuteAsync(string sql, string database = "postgres")
    {
        await using var conn = new NpgsqlConnection(SuperuserConnectionString(database, ProbeApplicationName));
        await conn.OpenAsync().ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand(sql, conn);
        await cmd.ExecuteNonQueryAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Number of client backends in pg_stat_activity, optionally only those with this application_name,
    /// user name and/or database; the probe's own connection is never counted.
    /// </summary>
    public async Task<int> ActiveConnectionsAsync(string? applicationName = null, string? user = null, string? database = null)
    {
        const string sql = """
            SELECT count(*)::int FROM pg_stat_activity
            WHERE backend_type = 'client backend'
              AND pid <> pg_backend_pid()
              AND application_name IS DISTINCT FROM 'pooler-tests-probe'
              AND ($1::text IS NULL OR application_name = $1)
              AND ($2::text IS NULL OR usename = $2)
              AND ($3::text IS NULL OR datname = $3)
            """;
        await using var conn = new NpgsqlConnection(SuperuserConnectionString("postgres", ProbeApplicationName));
        await conn.OpenAsync().ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand(sql, conn);
        cmd.Parameters.Add(new NpgsqlParameter { Value = (object?)applicationName ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        cmd.Parameters.Add(new NpgsqlParameter { Value = (object?)user ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        cmd.Parameters.Add(new NpgsqlParameter { Value = (object?)database ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        return (int)(await cmd.ExecuteScalarAsync().ConfigureAwait(false))!;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            try
            {
                Stop();
            }
            catch (Exception)
            {
                // Leave the folder: TestDirectory.CleanupStale stops the server on the next run.
                return;
            }
            _dir.Dispose();
        }
    }
}
