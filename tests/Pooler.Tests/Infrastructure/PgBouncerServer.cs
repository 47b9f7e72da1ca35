using System.Diagnostics;
using System.Globalization;
using System.Text;
using Npgsql;

namespace Pooler.Tests.Infrastructure;

/// <summary>Settings for a PgBouncer instance started by <see cref="PgBouncerServer"/>.</summary>
public sealed record PgBouncerOptions
{
    /// <summary>session | transaction | statement.</summary>
    public string PoolMode { get; init; } = "transaction";
    public int DefaultPoolSize { get; init; } = 20;
    public int MaxClientConn { get; init; } = 1000;

    /// <summary>auth_type: trust | plain | md5 | scram-sha-256 | any | hba ...</summary>
    public string AuthType { get; init; } = "scram-sha-256";

    /// <summary>auth_file entries (user, secret); null = the test users with their plain passwords.</summary>
    public IReadOnlyDictionary<string, string>? Users { get; init; }

    /// <summary>
    /// [databases] lines verbatim (e.g. <c>pooler_test = host=127.0.0.1 port=5432</c>);
    /// null = one fallback line <c>* = host=… port=…</c> pointing at the backend.
    /// </summary>
    public IReadOnlyList<string>? Databases { get; init; }

    /// <summary>More [pgbouncer] settings, written after (so overriding) the generated ones.</summary>
    public IReadOnlyDictionary<string, string> Settings { get; init; } = new Dictionary<string, string>();

    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// Debian's PgBouncer in front of a PostgreSQL server, for comparisons with the pooler. Runs in the foreground in its own
/// scratch folder (pgbouncer.ini, userlist.txt, pgbouncer.log, pgbouncer.pid) on a free port of 127.0.0.1; as the postgres OS
/// user (runuser) when the tests run as root, since PgBouncer refuses root. <c>pooler_admin</c> is admin_users and stats_users,
/// so <c>SHOW POOLS</c> etc. work through <see cref="Admin"/>.
/// </summary>
public sealed class PgBouncerServer : IDisposable
{
    private readonly TestDirectory _dir;
    private readonly string? _psqlBinDir;
    private readonly Queue<string> _output = new();
    private Process? _process;
    private bool _disposed;

    public string Host => "127.0.0.1";
    public int Port { get; private set; }
    public string BackendHost { get; }
    public int BackendPort { get; }
    public PgBouncerOptions Options { get; }
    public string Directory => _dir.Path;
    public string IniFile => Path.Combine(Directory, "pgbouncer.ini");
    public string UsersFile => Path.Combine(Directory, "userlist.txt");
    public string LogFile => Path.Combine(Directory, "pgbouncer.log");
    public string PidFile => Path.Combine(Directory, "pgbouncer.pid");

    /// <summary>Process id of pgbouncer itself (from its pidfile), or null.</summary>
    public int? Pid
    {
        get
        {
            try
            {
                return int.TryParse(File.ReadAllText(PidFile).Trim(), out var pid) ? pid : null;
            }
            catch (IOException)
            {
                return null;
            }
        }
    }

    public bool IsRunning => _process is { HasExited: false };

    private PgBouncerServer(TestDirectory dir, string backendHost, int backendPort, PgBouncerOptions options, string? psqlBinDir)
    {
        _dir = dir;
        BackendHost = backendHost;
        BackendPort = backendPort;
        Options = options;
        _psqlBinDir = psqlBinDir;
    }

    /// <summary>$PGBOUNCER_BIN, else pgbouncer on PATH, else /usr/sbin/pgbouncer.</summary>
    public static string FindBinary()
    {
        var env = Environment.GetEnvironmentVariable("PGBOUNCER_BIN");
        if (!string.IsNullOrWhiteSpace(env)) return env;
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, "pgbouncer");
            if (File.Exists(candidate)) return candidate;
        }
        if (File.Exists("/usr/sbin/pgbouncer")) return "/usr/sbin/pgbouncer";
        throw new InvalidOperationException("pgbouncer not found: set PGBOUNCER_BIN or install it (Debian: apt-get install pgbouncer)");
    }

    /// <summary>Starts PgBouncer in front of the fixture's PostgreSQL and waits until it accepts connections.</summary>
    public static PgBouncerServer Start(PostgresFixture postgres, PgBouncerOptions? options = null) =>
        Start(postgres.Host, postgres.Port, options, postgres.BinDir);

    /// <summary>Starts PgBouncer in front of any PostgreSQL server and waits until it accepts connections.</summary>
    public static PgBouncerServer Start(string backendHost, int backendPort, PgBouncerOptions? options = null, string? psqlBinDir = null)
    {
        var server = new PgBouncerServer(TestDirectory.Create("pgbouncer", forServiceUser: true), backendHost, backendPort,
            options ?? new PgBouncerOptions(), psqlBinDir);
        try
        {
            server.Launch();
            return server;
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    private void Launch()
    {
        var binary = FindBinary();
        File.WriteAllText(UsersFile, Infrastructure.UsersFile.Format(Options.Users ?? PostgresFixture.Passwords));
        for (var attempt = 1; ; attempt++)
        {
            Port = FreePort.Next();
            File.WriteAllText(IniFile, BuildIni());
            ProcessRunner.GiveToServiceUser(Directory);

            var psi = ProcessRunner.CreateStartInfo(binary, new[] { IniFile }, workingDirectory: Directory, asServiceUser: true);
            psi.RedirectStandardOutput = true;
            psi.RedirectStandardError = true;
            psi.RedirectStandardInput = true;
            var process = new Process { StartInfo = psi };
            process.OutputDataReceived += (_, e) => Remember(e.Data);
            process.ErrorDataReceived += (_, e) => Remember(e.Data);
            process.Start();
            process.StandardInput.Close();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            _process = process;

            var watch = Stopwatch.StartNew();
            while (watch.Elapsed < Options.StartTimeout && !process.HasExited && !FreePort.IsAccepting(Port, Host, 200))
                Thread.Sleep(50);
            if (!process.HasExited && FreePort.IsAccepting(Port, Host, 1000))
                return;

            var output = RecentOutput();
            var log = ReadLog();
            StopProcess();
            var portTaken = (output + log).Contains("Address already in use", StringComparison.OrdinalIgnoreCase);
            if (portTaken && attempt < 5)
                continue;
            throw new InvalidOperationException(
                $"PgBouncer did not start on port {Port} within {Options.StartTimeout.TotalSeconds} s\n--- output ---\n{output}\n--- log ---\n{log}\n--- ini ---\n{File.ReadAllText(IniFile)}");
        }
    }

    private string BuildIni()
    {
        var sb = new StringBuilder();
        sb.AppendLine("[databases]");
        foreach (var line in Options.Databases ?? new[] { $"* = host={BackendHost} port={BackendPort}" })
            sb.AppendLine(line);
        sb.AppendLine();
        sb.AppendLine("[pgbouncer]");
        var settings = new Dictionary<string, string>
        {
            ["listen_addr"] = Host,
            ["listen_port"] = Port.ToString(CultureInfo.InvariantCulture),
            ["unix_socket_dir"] = Directory,
            ["auth_type"] = Options.AuthType,
            ["auth_file"] = UsersFile,
            ["pool_mode"] = Options.PoolMode,
            ["default_pool_size"] = Options.DefaultPoolSize.ToString(CultureInfo.InvariantCulture),
            ["max_client_conn"] = Options.MaxClientConn.ToString(CultureInfo.InvariantCulture),
            ["max_db_connections"] = "0",
            ["logfile"] = LogFile,
            ["pidfile"] = PidFile,
            ["admin_users"] = PostgresFixture.AdminUser,
            ["stats_users"] = PostgresFixture.AdminUser,
            ["ignore_startup_parameters"] = "extra_float_digits",
            ["server_login_retry"] = "1",
            ["syslog"] = "0",
        };
        foreach (var (k, v) in Options.Settings) settings[k] = v;
        foreach (var (k, v) in settings) sb.AppendLine($"{k} = {v}");
        return sb.ToString();
    }

    private void Remember(string? line)
    {
        if (line == null) return;
        lock (_output)
        {
            _output.Enqueue(line);
            while (_output.Count > 500) _output.Dequeue();
        }
    }

    /// <summary>The last lines PgBouncer printed on stdout/stderr.</summary>
    public string RecentOutput()
    {
        lock (_output) return string.Join('\n', _output);
    }

    /// <summary>The PgBouncer log file so far.</summary>
    public string ReadLog()
    {
        try
        {
            using var stream = new FileStream(LogFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        }
        catch (IOException)
        {
            return "";
        }
    }

    /// <summary>Npgsql connection string through PgBouncer. <paramref name="password"/> null = the test user's known password.</summary>
    public string ConnectionString(string user, string? password = null, string database = PostgresFixture.Database,
        string? applicationName = null, bool pooling = false)
    {
        var b = new NpgsqlConnectionStringBuilder
        {
            Host = Host,
            Port = Port,
            Username = user,
            Database = database,
            Pooling = pooling,
            Timeout = 15,
            CommandTimeout = 60,
        };
        var pw = password ?? PostgresFixture.PasswordOf(user);
        if (!string.IsNullOrEmpty(pw)) b.Password = pw;
        if (applicationName != null) b.ApplicationName = applicationName;
        return b.ConnectionString;
    }

    /// <summary>Runs a console command (e.g. <c>SHOW POOLS</c>) as pooler_admin through psql -At against the pgbouncer database.</summary>
    public ProcessResult Admin(string command, TimeSpan? timeout = null)
    {
        var binDir = _psqlBinDir ?? PostgresServer.FindBinDir();
        return ProcessRunner.Run(Path.Combine(binDir, "psql"), new[] { "-X", "-At", "-F", "|", "-c", command },
            new Dictionary<string, string?>
            {
                ["PGHOST"] = Host,
                ["PGPORT"] = Port.ToString(CultureInfo.InvariantCulture),
                ["PGUSER"] = PostgresFixture.AdminUser,
                ["PGPASSWORD"] = PostgresFixture.AdminPassword,
                ["PGDATABASE"] = "pgbouncer",
                ["PGSSLMODE"] = "disable",
            }, timeout ?? TimeSpan.FromSeconds(30));
    }

    /// <summary>Asks PgBouncer to re-read its ini and users file (SIGHUP).</summary>
    public void Reload()
    {
        if (Pid is { } pid) ProcessRunner.Signal(pid, 1);
    }

    /// <summary>Stops PgBouncer (SIGTERM, then SIGKILL after 5 s).</summary>
    public void Stop() => StopProcess();

    private void StopProcess()
    {
        var process = _process;
        if (process == null) return;
        try
        {
            if (!process.HasExited)
            {
                if (Pid is { } pid && ProcessRunner.IsAlive(pid))
                {
                    ProcessRunner.Signal(pid, ProcessRunner.SigTerm);
                    if (!process.WaitForExit(5000))
                        ProcessRunner.Signal(pid, ProcessRunner.SigKill);
                }
                if (!process.WaitForExit(5000))
                {
                    try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                    process.WaitForExit(5000);
                }
            }
        }
        finally
        {
            process.Dispose();
            _process = null;
            try { File.Delete(PidFile); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try { StopProcess(); }
        finally { _dir.Dispose(); }
    }
}
