using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;

namespace Pooler.Tests.Infrastructure;

/// <summary>
/// The pooler as a separate OS process (<c>dotnet Pooler.Host.dll --config FILE</c>), for what the in-process
/// <see cref="PoolerHarness"/> cannot show: memory use (RSS), signals (SIGTERM, SIGHUP), exit codes, stdout.
/// The config text (HOCON) is written to <see cref="ConfigFile"/> in a scratch folder of its own; relative paths in it
/// (e.g. <c>users-file = "userlist.txt"</c>) resolve against that folder. Dispose kills the process if it still runs.
/// </summary>
public sealed partial class PoolerProcess : IAsyncDisposable, IDisposable
{
    private readonly TestDirectory _dir;
    private readonly List<string> _args;
    private readonly Dictionary<string, string?> _env;
    private readonly string _program;
    private readonly string? _netns;
    private readonly string? _entrypoint;
    private readonly List<string> _output = new();
    private Process? _process;
    private bool _disposed;

    /// <summary>Prepares (does not start) a pooler process.</summary>
    /// <param name="configText">HOCON written to <see cref="ConfigFile"/> and passed with <c>--config</c>.</param>
    /// <param name="extraArgs">More arguments after <c>--config FILE</c> (e.g. <c>--set pooler.x=y</c>).</param>
    /// <param name="extraEnv">Environment for the process (e.g. <c>POOLER__POOL_MODE</c>); a null value removes a variable.</param>
    /// <param name="usersFileText">Content of <c>userlist.txt</c> in the same folder; null = every fixture user with its password.</param>
    /// <param name="program">The dll to run with <c>--config FILE</c>: <see cref="HostDll"/> (default) or <see cref="LighthouseDll"/>.</param>
    /// <param name="netns">A network namespace to run it in (<c>ip netns exec</c>, which execs: the pid is the program's).</param>
    /// <param name="entrypoint">A container entrypoint script to run instead of <c>dotnet PROGRAM --config FILE</c>
    /// (configuration from <paramref name="extraEnv"/> only; <paramref name="extraArgs"/> are its arguments).</param>
    public PoolerProcess(string configText, IEnumerable<string>? extraArgs = null,
        IReadOnlyDictionary<string, string?>? extraEnv = null, string? usersFileText = null, string? program = null,
        string? netns = null, string? entrypoint = null)
    {
        _program = program ?? HostDll;
        _netns = netns;
        _entrypoint = entrypoint;
        _dir = TestDirectory.Create("pooler-host");
        _args = extraArgs?.ToList() ?? new List<string>();
        _env = extraEnv?.ToDictionary(kv => kv.Key, kv => kv.Value) ?? new Dictionary<string, string?>();
        // pbm and HTTP endpoints on free ports unless a test asks for given ones (read back with PbmPortAsync/HttpPortAsync)
        _env.TryAdd("POOLER__PBM__PORT", "0");
        _env.TryAdd("POOLER__HTTP__PORT", "0");
        File.WriteAllText(UsersFile, usersFileText ?? DefaultUsersFileText());
        WriteConfig(configText);
    }

    /// <summary>The scratch folder holding the config and users file.</summary>
    public string Directory => _dir.Path;
    public string ConfigFile => _dir.Combine("pooler.conf");
    public string UsersFile => _dir.Combine("userlist.txt");

    /// <summary>The port the pooler listens on: as given to <see cref="StartAsync(int?, TimeSpan?)"/>, or read from its "listening on" line.</summary>
    public int Port { get; private set; }

    /// <summary>The OS process id (0 before start).</summary>
    public int Pid { get; private set; }

    public bool HasExited => _process is null || _process.HasExited;

    /// <summary>Exit code once the process has exited, else null.</summary>
    public int? ExitCode => _process is { HasExited: true } p ? p.ExitCode : null;

    /// <summary>Pooler.Host.dll next to the test assembly (the test project references the host, so it is copied there).</summary>
    public static string HostDll => Path.Combine(AppContext.BaseDirectory, "Pooler.Host.dll");

    /// <summary>Lighthouse.dll next to the test assembly (a seed node: no pools, no listener).</summary>
    public static string LighthouseDll => Path.Combine(AppContext.BaseDirectory, "Lighthouse.dll");

    /// <summary>The dotnet executable running the tests ($DOTNET_HOST_PATH), else <c>dotnet</c> from PATH.</summary>
    public static string DotnetExecutable =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } p && File.Exists(p) ? p : "dotnet";

    /// <summary>Users file lines (PgBouncer format) for every fixture user with its plain password (trust_user with "").</summary>
    public static string DefaultUsersFileText() => Infrastructure.UsersFile.Format(PostgresFixture.Passwords);

    /// <summary>
    /// A config like <see cref="PoolerHarness"/>'s: listen on 127.0.0.1:<paramref name="port"/> (0 = any free port, read back
    /// from stdout), scram-sha-256 with the users file of the folder, transaction pooling, pool size 5, <c>pooler_test</c> and
    /// <c>other_db</c> pointing at the fixture, INFO logging; <paramref name="settings"/> is more HOCON inside <c>pooler { }</c>.
    /// </summary>
    public static string DefaultConfig(PostgresFixture pg, int port = 0, string settings = "",
        string usersFile = "userlist.txt", string logLevel = "INFO") => DefaultConfig(pg.Port, port, settings, usersFile, logLevel);

    /// <inheritdoc cref="DefaultConfig(PostgresFixture, int, string, string, string)"/>
    public static string DefaultConfig(int pgPort, int port = 0, string settings = "",
        string usersFile = "userlist.txt", string logLevel = "INFO") => $$"""
        pooler {
          listen { host = "127.0.0.1", port = {{port.ToString(CultureInfo.InvariantCulture)}} }
          auth { type = scram-sha-256, users-file = "{{usersFile}}" }
          pool-mode = transaction
          default-pool-size = 5
          max-client-conn = 2000
          shutdown-timeout = 3s
          databases {
            {{PostgresFixture.Database}} { host = "127.0.0.1", port = {{pgPort}}, dbname = "{{PostgresFixture.Database}}" }
            {{PostgresFixture.OtherDatabase}} { host = "127.0.0.1", port = {{pgPort}}, dbname = "{{PostgresFixture.OtherDatabase}}" }
          }
          {{settings}}
        }
        akka.loglevel = {{logLevel}}
        """;

    /// <summary>Starts a pooler process with <paramref name="configText"/> and waits until it accepts connections.</summary>
    /// <param name="port">The port the config listens on; null = read it from the host's "listening on HOST:PORT" line (needs INFO logging).</param>
    public static async Task<PoolerProcess> StartAsync(string configText, int? port = null, IEnumerable<string>? extraArgs = null,
        IReadOnlyDictionary<string, string?>? extraEnv = null, string? usersFileText = null, TimeSpan? timeout = null)
    {
        var p = new PoolerProcess(configText, extraArgs, extraEnv, usersFileText);
        try
        {
            await p.StartAsync(port, timeout).ConfigureAwait(false);
            return p;
        }
        catch
        {
            await p.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Replaces the config file (before a start, or before <see cref="Reload"/>).</summary>
    public void WriteConfig(string configText)
    {
        var tmp = ConfigFile + ".tmp";
        File.WriteAllText(tmp, configText);
        File.Move(tmp, ConfigFile, overwrite: true);
    }

    /// <summary>Writes another file into the process's folder (returns its full path).</summary>
    public string WriteFile(string name, string text)
    {
        var path = _dir.Combine(name);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>Starts the process without waiting for anything.</summary>
    public void Start()
    {
        if (_process is { HasExited: false }) throw new InvalidOperationException("the pooler process is already running");
        if (!File.Exists(_program)) throw new InvalidOperationException($"{_program} not found (build the test project first)");
        List<string> command = _entrypoint is null ? [DotnetExecutable, _program, "--config", ConfigFile] : [_entrypoint];
        command.AddRange(_args);
        var psi = _netns is null
            ? ProcessRunner.CreateStartInfo(command[0], command.Skip(1), _env, workingDirectory: Directory)
            : ProcessRunner.CreateStartInfo("ip", ["netns", "exec", _netns, .. command], _env, workingDirectory: Directory);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = true;
        var process = new Process { StartInfo = psi };
        process.OutputDataReceived += (_, e) => Remember(e.Data);
        process.ErrorDataReceived += (_, e) => Remember(e.Data);
        lock (_output) _output.Clear();
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
        Pid = process.Id;
    }

    /// <summary>
    /// Starts the process and waits until it accepts TCP connections (fails with its output if it exits first). The host's
    /// "listening on HOST:PORT" line is the proof that the port is its own (not another process's that took the same free
    /// port); with quieter logging than INFO, a port that accepts while the process lives for 3 more seconds is taken instead.
    /// </summary>
    public async Task StartAsync(int? port = null, TimeSpan? timeout = null)
    {
        Start();
        var limit = timeout ?? TimeSpan.FromSeconds(60);
        var watch = Stopwatch.StartNew();
        var expected = port is > 0 ? port.Value : 0;
        TimeSpan? acceptingSince = null;
        while (watch.Elapsed < limit)
        {
            if (HasExited)
                throw new InvalidOperationException($"the pooler process exited with {ExitCode} before accepting connections\n{OutputText}");
            if (FindListeningPort() is { } found)
            {
                if (expected > 0 && found != expected)
                    throw new InvalidOperationException($"the pooler process listens on {found}, not on {expected}\n{OutputText}");
                Port = found;
                if (FreePort.IsAccepting(Port, "127.0.0.1", 200)) return;
            }
            else if (expected > 0 && FreePort.IsAccepting(expected, "127.0.0.1", 200))
            {
                acceptingSince ??= watch.Elapsed;
                if (watch.Elapsed - acceptingSince > TimeSpan.FromSeconds(3)) { Port = expected; return; }
            }
            await Task.Delay(50).ConfigureAwait(false);
        }
        throw new TimeoutException($"the pooler process did not accept connections on port {(expected > 0 ? expected : Port)} within {limit.TotalSeconds} s\n{OutputText}");
    }

    [GeneratedRegex(@"pbm endpoint on [^\s:]+:(\d+)")]
    private static partial Regex PbmLine();

    [GeneratedRegex(@"http endpoint on [^\s:]+:(\d+)")]
    private static partial Regex HttpLine();

    /// <summary>The port of the process's pbm command endpoint (from its "pbm endpoint on HOST:PORT" line).</summary>
    public async Task<int> PbmPortAsync(TimeSpan? timeout = null)
        => int.Parse(PbmLine().Match(await WaitForOutputAsync(l => PbmLine().IsMatch(l), "pbm endpoint line", timeout).ConfigureAwait(false)).Groups[1].Value, CultureInfo.InvariantCulture);

    /// <summary>The port of the process's HTTP endpoint (from its "http endpoint on HOST:PORT" line).</summary>
    public async Task<int> HttpPortAsync(TimeSpan? timeout = null)
        => int.Parse(HttpLine().Match(await WaitForOutputAsync(l => HttpLine().IsMatch(l), "http endpoint line", timeout).ConfigureAwait(false)).Groups[1].Value, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"listening on [^\s:]+:(\d+)")]
    private static partial Regex ListeningLine();

    private int? FindListeningPort()
    {
        foreach (var line in OutputLines)
            if (ListeningLine().Match(line) is { Success: true } m) return int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        return null;
    }

    private void Remember(string? line)
    {
        if (line == null) return;
        lock (_output)
        {
            _output.Add(line);
            if (_output.Count > 20000) _output.RemoveRange(0, 10000);
        }
    }

    /// <summary>The lines printed on stdout and stderr so far (both streams, in arrival order).</summary>
    public IReadOnlyList<string> OutputLines
    {
        get { lock (_output) return _output.ToArray(); }
    }

    public string OutputText => string.Join('\n', OutputLines);

    /// <summary>Waits until a printed line matches (returns it).</summary>
    public async Task<string> WaitForOutputAsync(Func<string, bool> match, string what, TimeSpan? timeout = null)
    {
        var line = await Eventually.Value(() => OutputLines.FirstOrDefault(match), l => l != null,
            $"pooler output line: {what}", timeout ?? TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        return line!;
    }

    /// <summary>Sends a signal to the process (see <see cref="ProcessRunner"/> constants). False if it is not running.</summary>
    public bool Signal(int signal) => !HasExited && ProcessRunner.Signal(Pid, signal);

    /// <summary>SIGTERM: graceful stop.</summary>
    public bool Terminate() => Signal(ProcessRunner.SigTerm);

    /// <summary>SIGINT.</summary>
    public bool Interrupt() => Signal(ProcessRunner.SigInt);

    /// <summary>SIGHUP: reload the config file.</summary>
    public bool Reload() => Signal(1);

    /// <summary>SIGKILL of the process (no cleanup in the pooler).</summary>
    public void Kill()
    {
        if (_process is { HasExited: false } p)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        }
    }

    /// <summary>Waits for the process to exit and returns its exit code; throws TimeoutException if it does not.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        var p = _process ?? throw new InvalidOperationException("the pooler process was not started");
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the pooler process (pid {Pid}) did not exit within {timeout.TotalSeconds} s\n{OutputText}");
        }
        p.WaitForExit(); // drains the output readers
        return p.ExitCode;
    }

    /// <summary>Resident memory of the process (VmRSS of /proc/PID/status) in bytes; null when not running.</summary>
    public long? RssBytes() => HasExited ? null : ReadRss(Pid);

    /// <summary>VmRSS of any process in bytes, or null.</summary>
    public static long? ReadRss(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (!line.StartsWith("VmRSS:", StringComparison.Ordinal)) continue;
                var parts = line["VmRSS:".Length..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return long.Parse(parts[0], CultureInfo.InvariantCulture) * 1024; // kB
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>An Npgsql connection string through this pooler (Pooling=false unless asked).</summary>
    public string ConnectionString(PostgresFixture pg, string user = PostgresFixture.ScramUser, string? password = null,
        string database = PostgresFixture.Database, string? applicationName = null, bool pooling = false)
        => pg.ConnectionString(user, password, database, applicationName, pooling, Port, "127.0.0.1");

    public async Task<NpgsqlConnection> OpenAsync(PostgresFixture pg, string user = PostgresFixture.ScramUser, string? password = null,
        string database = PostgresFixture.Database, string? applicationName = null)
    {
        var c = new NpgsqlConnection(ConnectionString(pg, user, password, database, applicationName));
        await c.OpenAsync().ConfigureAwait(false);
        return c;
    }

    /// <summary>Stops the process: SIGTERM, then a kill after <paramref name="grace"/>. Returns the exit code (or null if killed).</summary>
    public async Task<int?> StopAsync(TimeSpan? grace = null)
    {
        if (_process == null) return null;
        if (HasExited) return ExitCode;
        Terminate();
        try
        {
            return await WaitForExitAsync(grace ?? TimeSpan.FromSeconds(15)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            Kill();
            _process.WaitForExit(5000);
            return null;
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try
        {
            if (_process is { } p)
            {
                if (!p.HasExited)
                {
                    try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                    p.WaitForExit(5000);
                }
                p.Dispose();
            }
        }
        finally
        {
            _dir.Dispose();
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}
