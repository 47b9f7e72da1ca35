using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Pooler.Tests.Infrastructure;

/// <summary>
/// The npm packages of one folder of the test project (its package.json and package-lock.json), installed the way
/// <see cref="NodePg"/> installs node-postgres: once per content of those two files, with <c>npm ci</c>, into a cache
/// folder under the test output (<c>npm-tools/&lt;folder&gt;-&lt;hash&gt;</c>, shared by test processes through a
/// lock file), so that <c>dotnet test</c> alone is enough. The folder's scripts run from the source folder with
/// <c>NODE_PATH</c> pointing at the installed <c>node_modules</c> (CommonJS <c>require</c> finds them there).
/// </summary>
public sealed class NpmTools
{
    public static readonly TimeSpan InstallTimeout = TimeSpan.FromMinutes(5);
    public static readonly TimeSpan DefaultRunTimeout = TimeSpan.FromMinutes(2);

    private static readonly Lazy<string> Root = new(FindRepositoryRoot);
    private static readonly ConcurrentDictionary<string, NpmTools> Folders = new();

    private readonly Lazy<string> _modules;

    private NpmTools(string sourceDirectory)
    {
        SourceDirectory = sourceDirectory;
        _modules = new Lazy<string>(Install, LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>The repository root: the first folder above the test assembly that holds Actors.sln.</summary>
    public static string RepositoryRoot => Root.Value;

    /// <summary>The packages of <paramref name="folder"/> (relative to the repository root, e.g. tests/Pooler.Tests/deploy-lint).</summary>
    public static NpmTools For(string folder) => Folders.GetOrAdd(Path.GetFullPath(Path.Combine(RepositoryRoot, folder)), dir =>
        File.Exists(Path.Combine(dir, "package.json")) && File.Exists(Path.Combine(dir, "package-lock.json"))
            ? new NpmTools(dir)
            : throw new InvalidOperationException($"{dir} has no package.json and package-lock.json"));

    /// <summary>The folder holding package.json, package-lock.json and the scripts.</summary>
    public string SourceDirectory { get; }

    /// <summary>The installed node_modules folder (installs on first use; throws with npm's output when it cannot).</summary>
    public string ModulesDirectory => _modules.Value;

    /// <summary>Path of an installed file, e.g. <c>dockerfilelint/bin/dockerfilelint</c>.</summary>
    public string Module(string relativePath) => Path.Combine(ModulesDirectory, relativePath);

    /// <summary>
    /// Runs <c>node SCRIPT ARGS</c> (a script of <see cref="SourceDirectory"/>, or an absolute path such as an installed
    /// package's bin) with NODE_PATH set to the installed modules, colours off, killed after <paramref name="timeout"/>.
    /// </summary>
    public async Task<ProcessResult> RunNodeAsync(string script, IEnumerable<string> args,
        IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? timeout = null, string? workingDirectory = null)
    {
        var modules = await Task.Run(() => ModulesDirectory).ConfigureAwait(false);
        var path = Path.IsPathRooted(script) ? script : Path.Combine(SourceDirectory, script);
        if (!File.Exists(path)) throw new FileNotFoundException($"node script {path} not found", path);
        var env = new Dictionary<string, string?>
        {
            ["NODE_PATH"] = modules,
            ["FORCE_COLOR"] = "0",
            ["NO_COLOR"] = "1",
            ["npm_config_update_notifier"] = "false",
        };
        if (environment != null)
            foreach (var (k, v) in environment) env[k] = v;
        return await ProcessRunner.RunAsync("node", [path, .. args], env, timeout ?? DefaultRunTimeout,
            workingDirectory ?? SourceDirectory).ConfigureAwait(false);
    }

    private static string FindRepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Actors.sln")))
                return dir.FullName;
        throw new InvalidOperationException($"no Actors.sln above {AppContext.BaseDirectory}: cannot find the repository root");
    }

    /// <summary>The dependency names of package.json: an install is complete when each has its package.json.</summary>
    private IReadOnlyList<string> Dependencies()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(SourceDirectory, "package.json")));
        return doc.RootElement.TryGetProperty("dependencies", out var deps) && deps.ValueKind == JsonValueKind.Object
            ? deps.EnumerateObject().Select(p => p.Name).ToList()
            : [];
    }

    /// <summary>
    /// npm ci into npm-tools/&lt;folder&gt;-&lt;hash of package.json + package-lock.json&gt; under the test output, once:
    /// a folder that has every dependency is reused; otherwise, holding its lock file (other test processes wait),
    /// installs into a scratch folder and renames it into place.
    /// </summary>
    private string Install()
    {
        var files = new[] { "package.json", "package-lock.json" };
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Concat(
            files.Select(f => f + "\0" + File.ReadAllText(Path.Combine(SourceDirectory, f)) + "\0")))))[..16];
        var root = Path.Combine(AppContext.BaseDirectory, "npm-tools");
        var name = $"{Path.GetFileName(SourceDirectory)}-{hash}";
        var target = Path.Combine(root, name);
        var modules = Path.Combine(target, "node_modules");
        var dependencies = Dependencies();
        bool Installed(string folder) => dependencies.All(d => File.Exists(Path.Combine(folder, "node_modules", d, "package.json")));
        if (Installed(target)) return modules;

        Directory.CreateDirectory(root);
        using var gate = AcquireLock(Path.Combine(root, name + ".lock"), InstallTimeout + TimeSpan.FromMinutes(1));
        if (Installed(target)) return modules;

        foreach (var tool in new[] { "node", "npm" })
        {
            ProcessResult version;
            try { version = ProcessRunner.Run(tool, ["--version"], timeout: TimeSpan.FromSeconds(60)); }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new InvalidOperationException($"{tool} is not installed (not on PATH): the tests of {SourceDirectory} need node >= 18 and npm", e);
            }
            version.EnsureSuccess($"{tool} --version");
        }

        var scratch = Path.Combine(root, $"{name}.tmp-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(scratch);
        try
        {
            foreach (var f in files) File.Copy(Path.Combine(SourceDirectory, f), Path.Combine(scratch, f));
            var npm = ProcessRunner.Run("npm", ["ci", "--no-audit", "--no-fund", "--no-progress", "--loglevel=warn"],
                new Dictionary<string, string?> { ["npm_config_update_notifier"] = "false" }, InstallTimeout, scratch);
            if (!npm.Succeeded || !Installed(scratch))
                throw new InvalidOperationException(
                    $"npm ci of {SourceDirectory}/package-lock.json failed or missed a dependency (needs node, npm and the npm registry): {npm}");
            if (Directory.Exists(target)) TestDirectory.TryDelete(target); // a broken leftover
            Directory.Move(scratch, target);
        }
        finally
        {
            TestDirectory.TryDelete(scratch);
        }
        return Installed(target) ? modules : throw new InvalidOperationException($"node modules missing in {target} after npm ci");
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
