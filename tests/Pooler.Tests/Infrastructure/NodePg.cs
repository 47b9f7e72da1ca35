using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Pooler.Tests.Infrastructure;

/// <summary>Outcome of a node script: the process result and the JSON of its last "RESULT {...}" stdout line (null if none).</summary>
public sealed record NodeResult(ProcessResult Process, JsonElement? Summary)
{
    public bool Succeeded => Process.Succeeded && Summary != null;

    /// <summary>The summary; fails the test with both output streams when the script failed, timed out or printed none.</summary>
    public JsonElement EnsureSuccess(string what)
    {
        if (!Succeeded)
            throw new Xunit.Sdk.XunitException($"{what} failed{(Summary == null && Process.Succeeded ? " (no RESULT line)" : "")}: {Process}");
        return Summary!.Value;
    }

    public override string ToString() => Process.ToString();
}

/// <summary>
/// Runs the node-postgres (npm <c>pg</c>) scripts of <c>tests/Pooler.Tests/node</c>. The packages are installed once
/// per package.json/package-lock.json content with <c>npm install</c> into a cache folder under the test output
/// (<c>node-pg/&lt;hash&gt;</c>, shared by test processes through a lock file), and the scripts run from the
/// source folder with <c>NODE_PATH</c> pointing at that cache, so <c>dotnet test</c> alone is enough.
/// Connection settings go in PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE (see node/common.js).
/// </summary>
public static class NodePg
{
    public static readonly TimeSpan InstallTimeout = TimeSpan.FromMinutes(5);
    public static readonly TimeSpan DefaultRunTimeout = TimeSpan.FromMinutes(3);

    private static readonly Lazy<string> SourceDir = new(FindSourceDirectory);
    private static readonly Lazy<string> Modules = new(Install, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>tests/Pooler.Tests/node of the repository (found by walking up from the test assembly to Actors.sln).</summary>
    public static string ScriptDirectory => SourceDir.Value;

    /// <summary>The installed node_modules folder (installs on first use; throws with npm's output when it cannot).</summary>
    public static string ModulesDirectory => Modules.Value;

    /// <summary>
    /// Runs <c>node &lt;script&gt;</c> against 127.0.0.1:<paramref name="port"/> as <paramref name="user"/>
    /// (password null = the fixture user's known one). <paramref name="environment"/> adds script settings
    /// (e.g. CLIENTS). The script's own watchdog fires a little before <paramref name="timeout"/>, then the process tree is killed.
    /// </summary>
    public static async Task<NodeResult> RunAsync(string script, int port, string user = PostgresFixture.ScramUser,
        string? password = null, string database = PostgresFixture.Database,
        IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null)
    {
        var modules = await Task.Run(() => ModulesDirectory).ConfigureAwait(false);
        var path = Path.Combine(ScriptDirectory, script);
        if (!File.Exists(path)) throw new FileNotFoundException($"node script {path} not found", path);
        var limit = timeout ?? DefaultRunTimeout;
        var env = new Dictionary<string, string?>
        {
            ["NODE_PATH"] = modules,
            ["PGHOST"] = "127.0.0.1",
            ["PGPORT"] = port.ToString(CultureInfo.InvariantCulture),
            ["PGUSER"] = user,
            ["PGPASSWORD"] = password ?? PostgresFixture.PasswordOf(user) ?? "",
            ["PGDATABASE"] = database,
            ["NODE_PG_TIMEOUT_MS"] = ((long)Math.Max(1000, limit.TotalMilliseconds - 10_000)).ToString(CultureInfo.InvariantCulture),
        };
        if (environment != null)
            foreach (var (k, v) in environment) env[k] = v;
        var result = await ProcessRunner.RunAsync("node", [path], env, limit, ScriptDirectory).ConfigureAwait(false);
        return new NodeResult(result, ParseSummary(result.StdOut));
    }

    private static JsonElement? ParseSummary(string stdout)
    {
        var line = stdout.Split('\n').Select(l => l.TrimEnd('\r')).LastOrDefault(l => l.StartsWith("RESULT ", StringComparison.Ordinal));
        if (line == null) return null;
        try
        {
            using var doc = JsonDocument.Parse(line["RESULT ".Length..]);
            return doc.RootElement.Clone();
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static string FindSourceDirectory()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Actors.sln")))
            {
                var node = Path.Combine(dir.FullName, "tests", "Pooler.Tests", "node");
                if (!File.Exists(Path.Combine(node, "package.json")))
                    throw new InvalidOperationException($"{node}/package.json not found (repository root {dir.FullName})");
                return node;
            }
        }
        throw new InvalidOperationException($"no Actors.sln above {AppContext.BaseDirectory}: cannot find tests/Pooler.Tests/node");
    }

    /// <summary>
    /// npm install into node-pg/&lt;hash of package.json + package-lock.json&gt; under the test output, once: a folder
    /// that has node_modules/pg is reused; otherwise, holding node-pg/&lt;hash&gt;.lock (other test processes wait),
    /// installs into a scratch folder and renames it into place.
    /// </summary>
    private static string Install()
    {
        var source = ScriptDirectory;
        var files = new[] { "package.json", "package-lock.json" }.Where(f => File.Exists(Path.Combine(source, f))).ToArray();
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Concat(
            files.Select(f => f + "\0" + File.ReadAllText(Path.Combine(source, f)) + "\0")))))[..16];
        var root = Path.Combine(AppContext.BaseDirectory, "node-pg");
        var target = Path.Combine(root, hash);
        var modules = Path.Combine(target, "node_modules");
        bool Installed() => File.Exists(Path.Combine(modules, "pg", "package.json"));
        if (Installed()) return modules;

        Directory.CreateDirectory(root);
        using var gate = AcquireLock(Path.Combine(root, hash + ".lock"), InstallTimeout + TimeSpan.FromMinutes(1));
        if (Installed()) return modules;

        foreach (var tool in new[] { "node", "npm" })
        {
            ProcessResult version;
            try { version = ProcessRunner.Run(tool, ["--version"], timeout: TimeSpan.FromSeconds(60)); }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new InvalidOperationException($"{tool} is not installed (not on PATH): the node-postgres tests need node >= 18 and npm", e);
            }
            version.EnsureSuccess($"{tool} --version");
        }

        var scratch = Path.Combine(root, $"{hash}.tmp-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(scratch);
        try
        {
            foreach (var f in files) File.Copy(Path.Combine(source, f), Path.Combine(scratch, f));
            var npm = ProcessRunner.Run("npm", ["install", "--no-audit", "--no-fund", "--no-progress", "--loglevel=warn"],
                new Dictionary<string, string?> { ["npm_config_update_notifier"] = "false" }, InstallTimeout, scratch);
            if (!npm.Succeeded || !File.Exists(Path.Combine(scratch, "node_modules", "pg", "package.json")))
                throw new InvalidOperationException(
                    $"npm install of {source}/package.json failed or did not install pg (needs node, npm and the npm registry): {npm}");
            if (Directory.Exists(target)) TestDirectory.TryDelete(target); // a broken leftover without node_modules/pg
            Directory.Move(scratch, target);
        }
        finally
        {
            TestDirectory.TryDelete(scratch);
        }
        return Installed() ? modules : throw new InvalidOperationException($"node modules missing in {target} after npm install");
    }

    /// <summary>An exclusive lock file (released when disposed, or when the process dies); polls until <paramref name="timeout"/>.</summary>
    private static FileStream AcquireLock(string path, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (watch.Elapsed < timeout)
            {
                Thread.Sleep(200);
            }
        }
    }
}
