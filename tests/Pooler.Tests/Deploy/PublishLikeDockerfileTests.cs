using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Deploy;

/// <summary>
/// The images without a container engine: each Dockerfile's build stage is replayed as written (its COPY lines from the
/// build context, the repository root, through .dockerignore; its WORKDIR; its `dotnet restore` and `dotnet publish`
/// commands with the same flags, `&amp;&amp;` chains split; its `test -f` checks), in a scratch folder standing for the
/// stage's file system, so `-o /out/pooler` writes to that folder's out/pooler. The runtime stage's COPY lines then lay
/// the output out as the image has it (/app/pooler, /app/pbm, ...). What the image runs is then started the way the
/// image starts it: deploy/docker/pooler-entrypoint.sh (lighthouse-entrypoint.sh) with the image's ENV, configured by
/// environment variables only, and pbm as the image's pbm wrapper runs it.
/// The NuGet packages come from this machine's cache; the two images are replayed one after the other, once per run.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class PublishLikeDockerfileTests(PostgresFixture pg, PublishedImages images, ITestOutputHelper output)
    : IClassFixture<PublishedImages>
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Pooler_image_publishes_like_its_build_stage_and_starts_through_its_entrypoint()
    {
        var image = await images.GetAsync(DeployPaths.PoolerDockerfile);
        output.WriteLine(image.Log);
        Assert.True(image.Published.Count >= 2, $"expected the build stage to publish the pooler and pbm: {image.Log}");
        var home = image.RuntimePath(image.Env.GetValueOrDefault("POOLER_HOME", "/app/pooler"));
        Assert.True(File.Exists(Path.Combine(home, "Pooler.Host.dll")), $"the image has no Pooler.Host.dll in POOLER_HOME ({home})\n{image.Log}");

        int listen = FreePort.Next(), http = FreePort.Next(), pbm = FreePort.Next();
        using var run = TestDirectory.Create("image-pooler");
        var env = image.ProcessEnvironment();
        foreach (var (k, v) in new Dictionary<string, string?>
        {
            ["POOLER_HOME"] = home,
            ["POOLER_RUN_DIR"] = run.Combine("run"),
            ["DOTNET"] = PoolerProcess.DotnetExecutable,
            ["CLUSTER_SEEDS"] = null, // a single node, no cluster
            ["CLUSTER_IP"] = null,
            ["POOLER__LISTEN__HOST"] = "127.0.0.1",
            ["POOLER__LISTEN__PORT"] = Port(listen),
            ["POOLER__POOL_MODE"] = "transaction",
            ["POOLER__AUTH__TYPE"] = "scram-sha-256",
            ["POOLER_USERS"] = $"{PostgresFixture.ScramUser}:{PostgresFixture.ScramPassword}",
            // '_' in a variable name is '-' in the key: the database is appdb, its dbname pooler_test
            ["POOLER__DATABASES__APPDB__HOST"] = "127.0.0.1",
            ["POOLER__DATABASES__APPDB__PORT"] = Port(pg.Port),
            ["POOLER__DATABASES__APPDB__DBNAME"] = PostgresFixture.Database,
            ["POOLER__HTTP__HOST"] = "127.0.0.1",
            ["POOLER__HTTP__PORT"] = Port(http),
            ["POOLER__PBM__PORT"] = Port(pbm),
        })
            env[k] = v;

        using var pooler = new EntrypointProcess(Path.Combine(DeployPaths.Root, "deploy", "docker", "pooler-entrypoint.sh"), env, run.Path);
        try
        {
            pooler.Start();
            await pooler.WaitForLineAsync(l => l.Contains($"listening on 127.0.0.1:{listen}", StringComparison.Ordinal), "the pooler listens", StartTimeout);
            Assert.Contains(pooler.Lines, l => l.StartsWith("pooler-entrypoint: node standalone", StringComparison.Ordinal));

            var cs = new NpgsqlConnectionStringBuilder
            {
                Host = "127.0.0.1", Port = listen, Username = PostgresFixture.ScramUser, Password = PostgresFixture.ScramPassword,
                Database = "appdb", Pooling = false, Timeout = 15, CommandTimeout = 30,
            }.ConnectionString;
            await using (var c = new NpgsqlConnection(cs))
            {
                await c.OpenAsync();
                await using var cmd = new NpgsqlCommand("select current_database(), current_user, 6 * 7", c);
                await using var reader = await cmd.ExecuteReaderAsync();
                Assert.True(await reader.ReadAsync());
                Assert.Equal((PostgresFixture.Database, PostgresFixture.ScramUser, 42), (reader.GetString(0), reader.GetString(1), reader.GetInt32(2)));
            }

            using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            var health = await Eventually.Value(async () =>
            {
                using var r = await client.GetAsync($"http://127.0.0.1:{http}/health");
                return (r.StatusCode, Body: await r.Content.ReadAsStringAsync());
            }, r => r.StatusCode == HttpStatusCode.OK, "GET /health answers 200", TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(200));
            output.WriteLine($"/health: {health.Body}");

            // pbm as the image's /usr/local/bin/pbm runs it
            var pbmDll = image.PbmDll ?? throw new Xunit.Sdk.XunitException($"no pbm.dll in the image layout\n{image.Log}");
            var status = await ProcessRunner.RunAsync(PoolerProcess.DotnetExecutable, [pbmDll, $"127.0.0.1:{pbm}", "node", "status"], timeout: TimeSpan.FromSeconds(60));
            output.WriteLine($"pbm node status: {status}");
            Assert.True(status.Succeeded, $"pbm 127.0.0.1:{pbm} node status failed: {status}");
            Assert.Contains("draining:  no", status.StdOut, StringComparison.Ordinal);
            Assert.Contains("backend:   reachable", status.StdOut, StringComparison.Ordinal);

            Assert.True(pooler.Terminate(), "the pooler had exited before SIGTERM");
            Assert.Equal(0, await pooler.WaitForExitAsync(StopTimeout));
        }
        finally
        {
            output.WriteLine("--- pooler output ---\n" + pooler.OutputText);
        }
    }

    [Fact]
    public async Task Lighthouse_image_publishes_like_its_build_stage_and_starts_through_its_entrypoint()
    {
        var image = await images.GetAsync(DeployPaths.LighthouseDockerfile);
        output.WriteLine(image.Log);
        var home = image.RuntimePath(image.Env.GetValueOrDefault("LIGHTHOUSE_HOME", "/app/lighthouse"));
        Assert.True(File.Exists(Path.Combine(home, "Lighthouse.dll")), $"the image has no Lighthouse.dll in LIGHTHOUSE_HOME ({home})\n{image.Log}");
        Assert.True(File.Exists(Path.Combine(home, "lighthouse.hocon")), $"the image has no lighthouse.hocon beside Lighthouse.dll ({home})");

        int clusterPort = FreePort.Next(), pbm = FreePort.Next();
        using var run = TestDirectory.Create("image-lighthouse");
        var env = image.ProcessEnvironment();
        foreach (var (k, v) in new Dictionary<string, string?>
        {
            ["LIGHTHOUSE_HOME"] = home,
            ["DOTNET"] = PoolerProcess.DotnetExecutable,
            ["CLUSTER_IP"] = "127.0.0.1",
            ["CLUSTER_PORT"] = Port(clusterPort),
            ["CLUSTER_SEEDS"] = null, // seeds itself
            ["POOLER__PBM__PORT"] = Port(pbm),
            ["PBM_ENDPOINT"] = $"127.0.0.1:{pbm}",
        })
            env[k] = v;

        using var lighthouse = new EntrypointProcess(Path.Combine(DeployPaths.Root, "deploy", "docker", "lighthouse-entrypoint.sh"), env, run.Path);
        try
        {
            lighthouse.Start();
            await lighthouse.WaitForLineAsync(l => l.Contains($"@127.0.0.1:{clusterPort}] to [Up]", StringComparison.Ordinal), "the Lighthouse is Up", StartTimeout);

            // the image's HEALTHCHECK: pbm node status, endpoint from PBM_ENDPOINT
            if (image.PbmDll is { } pbmDll)
            {
                var status = await ProcessRunner.RunAsync(PoolerProcess.DotnetExecutable, [pbmDll, "node", "status"],
                    new Dictionary<string, string?> { ["PBM_ENDPOINT"] = env["PBM_ENDPOINT"] }, TimeSpan.FromSeconds(60));
                output.WriteLine($"pbm node status: {status}");
                Assert.True(status.Succeeded, $"the Lighthouse's health check (pbm node status) failed: {status}");
                Assert.Contains("lighthouse", status.StdOut, StringComparison.Ordinal);
            }

            Assert.True(lighthouse.Terminate(), "the Lighthouse had exited before SIGTERM");
            Assert.Equal(0, await lighthouse.WaitForExitAsync(StopTimeout));
        }
        finally
        {
            output.WriteLine("--- lighthouse output ---\n" + lighthouse.OutputText);
        }
    }

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
}

/// <summary>The replayed images of the test class, made on first use, one at a time, deleted with the fixture.</summary>
public sealed class PublishedImages : IDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Dictionary<string, Task<ImageReplay>> _images = new();
    private readonly List<TestDirectory> _dirs = new();

    public async Task<ImageReplay> GetAsync(string dockerfile)
    {
        Task<ImageReplay> task;
        lock (_images)
        {
            if (!_images.TryGetValue(dockerfile, out task!))
                _images[dockerfile] = task = ReplayOneAtATimeAsync(dockerfile);
        }
        return await task;
    }

    private async Task<ImageReplay> ReplayOneAtATimeAsync(string dockerfile)
    {
        await _gate.WaitAsync();
        try
        {
            var dir = TestDirectory.Create("image-" + Path.GetFileNameWithoutExtension(dockerfile).ToLowerInvariant());
            lock (_dirs) _dirs.Add(dir);
            return await Task.Run(() => ImageReplay.Run(DeployPaths.RequireFile(dockerfile), DeployPaths.Root, dir.Path));
        }
        finally
        {
            _gate.Release();
        }
    }

    public void Dispose()
    {
        lock (_dirs)
            foreach (var d in _dirs) d.Dispose();
        _gate.Dispose();
    }
}

/// <summary>
/// A Dockerfile's build stage replayed on this machine (see <see cref="PublishLikeDockerfileTests"/>): <c>build/</c>
/// stands for the build stage's file system, <c>runtime/</c> for the runtime stage's (its COPY lines only; its RUN lines
/// install packages and users, which a test cannot and need not do).
/// </summary>
public sealed partial class ImageReplay
{
    /// <summary>All the build stage's dotnet commands together may take this long (they take about a minute).</summary>
    public static readonly TimeSpan Budget = TimeSpan.FromMinutes(8);
    public static readonly TimeSpan CommandTimeout = TimeSpan.FromMinutes(5);

    private readonly StringBuilder _log = new();

    private ImageReplay(string buildRoot, string runtimeRoot)
    {
        BuildRoot = buildRoot;
        RuntimeRoot = runtimeRoot;
    }

    public string BuildRoot { get; }
    public string RuntimeRoot { get; }

    /// <summary>What was run and copied, for the test output.</summary>
    public string Log => _log.ToString();

    /// <summary>The output folders (container paths) of the build stage's `dotnet publish` commands.</summary>
    public List<string> Published { get; } = new();

    /// <summary>The runtime stage's ENV.</summary>
    public Dictionary<string, string> Env { get; private set; } = new();

    /// <summary>pbm.dll where the image's pbm wrapper (`dotnet /app/pbm/pbm.dll`) runs it, else wherever the layout has one.</summary>
    public string? PbmDll { get; private set; }

    /// <summary>A path of the runtime image, on this machine.</summary>
    public string RuntimePath(string containerPath) => OnHost(RuntimeRoot, containerPath);

    /// <summary>The environment the image gives its entrypoint: the runtime stage's ENV (paths are the test's to set).</summary>
    public Dictionary<string, string?> ProcessEnvironment() => Env.Where(kv => kv.Key != "PATH").ToDictionary(kv => kv.Key, kv => (string?)kv.Value);

    private static string OnHost(string root, string containerPath) =>
        Path.Combine(root, Dockerfile.ContainerPath("/", containerPath).TrimStart('/'));

    private void Note(string line)
    {
        lock (_log) _log.AppendLine(line);
    }

    public static ImageReplay Run(string dockerfilePath, string context, string workDirectory)
    {
        var file = Dockerfile.Load(dockerfilePath);
        var build = file.BuildStage ?? throw new Xunit.Sdk.XunitException($"{dockerfilePath}: no stage named build; {file.Describe()}");
        var replay = new ImageReplay(Path.Combine(workDirectory, "build"), Path.Combine(workDirectory, "runtime"));
        Directory.CreateDirectory(replay.BuildRoot);
        Directory.CreateDirectory(replay.RuntimeRoot);
        var ignore = DockerIgnore.Load(context, dockerfilePath);
        replay.Note($"== {Path.GetFileName(dockerfilePath)}: context {context}, {ignore.Source ?? "no .dockerignore"}");
        var watch = Stopwatch.StartNew();
        replay.ReplayBuildStage(file, build, context, ignore, watch);
        replay.LayOutRuntimeStage(file, file.Final, build, context, ignore);
        replay.Note($"== done in {watch.Elapsed.TotalSeconds:0.0} s");
        return replay;
    }

    private void ReplayBuildStage(Dockerfile file, DockerStage stage, string context, DockerIgnore ignore, Stopwatch watch)
    {
        // a build stage FROM an earlier stage starts from that stage's files
        if (file.Stage(ShellWords.Expand(stage.From, file.GlobalArgValues())) is { } parent && parent.Index < stage.Index)
            ReplayBuildStage(file, parent, context, ignore, watch);
        var workdir = "/";
        foreach (var ins in stage.Instructions)
        {
            var vars = file.Vars(stage, ins);
            switch (ins.Keyword)
            {
                case "WORKDIR":
                    workdir = Dockerfile.ContainerPath(workdir, ShellWords.Expand(ins.Args.Trim().Trim('"'), vars));
                    Directory.CreateDirectory(OnHost(BuildRoot, workdir));
                    break;
                case "COPY" or "ADD":
                    if (ins.Flags().Flags.ContainsKey("from"))
                        throw new Xunit.Sdk.XunitException($"line {ins.Line}: COPY --from in the build stage is not replayed by this test");
                    Copy(ins, vars, context, ignore, BuildRoot, workdir);
                    break;
                case "RUN":
                    workdir = RunCommands(ins, vars, workdir, watch);
                    break;
            }
        }
    }

    private string RunCommands(DockerInstruction ins, IReadOnlyDictionary<string, string> vars, string workdir, Stopwatch watch)
    {
        var commands = ins.ExecForm() is { } exec ? [exec.ToList()] : ShellWords.SplitCommands(ins.Script, n => vars.TryGetValue(n, out var v) ? v : null);
        foreach (var words in commands)
        {
            switch (words)
            {
                case ["cd", var dir]:
                    workdir = Dockerfile.ContainerPath(workdir, dir);
                    break;
                case ["dotnet", "restore" or "publish" or "build", ..]:
                    RunDotnet(ins, words, vars, workdir, watch);
                    break;
                case ["test" or "[", "-f" or "-d" or "-e", var path, ..]:
                    var host = OnHost(BuildRoot, Dockerfile.ContainerPath(workdir, path));
                    var ok = words[1] switch { "-f" => File.Exists(host), "-d" => Directory.Exists(host), _ => File.Exists(host) || Directory.Exists(host) };
                    Note($"line {ins.Line}: {string.Join(' ', words)} -> {(ok ? "true" : "false")}");
                    if (!ok) throw new Xunit.Sdk.XunitException($"the build stage's `{string.Join(' ', words)}` (line {ins.Line}) fails\n{Log}");
                    break;
                default:
                    Note($"line {ins.Line}: not replayed: {string.Join(' ', words)}");
                    break;
            }
        }
        return workdir;
    }

    [GeneratedRegex(@"^/(p|property|t|target|m|maxcpucount|v|verbosity|bl|binarylogger|nr|nodereuse|restore|nologo|warnaserror|clp|consoleloggerparameters|fl|flp|noconlog|tl|terminallogger|getproperty|getitem|graph|isolate|interactive|ds|detailedsummary|r|low|lowpriority|pp|preprocess|ts|targets|ver|version|q|question)(:|$)", RegexOptions.IgnoreCase)]
    private static partial Regex MsbuildSwitch();

    /// <summary>
    /// A dotnet command of the build stage, with the same arguments, from the stage's WORKDIR in the scratch tree: only the
    /// container paths in it (-o /out/pooler, -p:X=/path) point into that tree.
    /// </summary>
    private void RunDotnet(DockerInstruction ins, List<string> words, IReadOnlyDictionary<string, string> vars, string workdir, Stopwatch watch)
    {
        string Map(string w)
        {
            if (w.StartsWith('/') && !MsbuildSwitch().IsMatch(w)) return OnHost(BuildRoot, w);
            var eq = w.IndexOf('=');
            if ((w.StartsWith('-') || MsbuildSwitch().IsMatch(w)) && eq > 0 && eq + 1 < w.Length && w[eq + 1] == '/')
                return w[..(eq + 1)] + OnHost(BuildRoot, w[(eq + 1)..]);
            return w;
        }
        var args = words.Skip(1).Select(Map).ToList();
        if (words[1] == "publish")
        {
            var output = Dockerfile.OptionValue(words, "-o", "--output")
                ?? throw new Xunit.Sdk.XunitException($"line {ins.Line}: dotnet publish without -o: {string.Join(' ', words)}");
            Published.Add(Dockerfile.ContainerPath(workdir, output));
        }
        var remaining = Budget - watch.Elapsed;
        if (remaining <= TimeSpan.Zero) throw new Xunit.Sdk.XunitException($"the build stage took over {Budget.TotalMinutes} min\n{Log}");
        var env = vars.ToDictionary(kv => kv.Key, kv => (string?)kv.Value);
        env.Remove("NUGET_PACKAGES"); // this machine's package cache, not the container's
        env["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        env["DOTNET_NOLOGO"] = "1";
        // no build servers left behind (in a container they end with the RUN); the output is the same
        env["MSBUILDDISABLENODEREUSE"] = "1";
        env["UseSharedCompilation"] = "false";
        Note($"line {ins.Line}: {string.Join(' ', words)}\n    run in {OnHost(BuildRoot, workdir)}: dotnet {string.Join(' ', args)}");
        var result = ProcessRunner.Run(PoolerProcess.DotnetExecutable, args, env, remaining < CommandTimeout ? remaining : CommandTimeout, OnHost(BuildRoot, workdir));
        Note($"    exit {result.ExitCode} in {result.Elapsed.TotalSeconds:0.0} s");
        if (!result.Succeeded)
            throw new Xunit.Sdk.XunitException($"the build stage's `{string.Join(' ', words)}` (line {ins.Line}) failed: {result}\n{Log}");
    }

    /// <summary>The runtime stage's COPY lines (from the build stage or the context), its WORKDIR and ENV; its RUN lines are not replayed.</summary>
    private void LayOutRuntimeStage(Dockerfile file, DockerStage final, DockerStage build, string context, DockerIgnore ignore)
    {
        var workdir = "/";
        foreach (var ins in final.Instructions)
        {
            var vars = file.Vars(final, ins);
            switch (ins.Keyword)
            {
                case "WORKDIR":
                    workdir = Dockerfile.ContainerPath(workdir, ShellWords.Expand(ins.Args.Trim().Trim('"'), vars));
                    break;
                case "COPY" or "ADD":
                    if (ins.Flags().Flags.TryGetValue("from", out var from))
                    {
                        if (!string.Equals(from, build.Name, StringComparison.OrdinalIgnoreCase))
                        {
                            Note($"line {ins.Line}: not replayed: COPY --from={from}");
                            continue;
                        }
                        Copy(ins, vars, BuildRoot, null, RuntimeRoot, workdir);
                    }
                    else
                    {
                        Copy(ins, vars, context, ignore, RuntimeRoot, workdir);
                    }
                    break;
            }
        }
        Env = file.Env(final);
        // the image's pbm command: a wrapper running `dotnet /app/pbm/pbm.dll`
        var wrapper = final.Instructions.Where(i => i.Keyword == "RUN")
            .Select(i => Regex.Match(i.Args + "\n" + string.Join("\n", i.Heredocs), @"dotnet\s+(/\S+/pbm\.dll)")).FirstOrDefault(m => m.Success);
        if (wrapper != null)
        {
            PbmDll = RuntimePath(wrapper.Groups[1].Value);
            if (!File.Exists(PbmDll)) throw new Xunit.Sdk.XunitException($"the image's pbm wrapper runs {wrapper.Groups[1].Value}, which the runtime stage does not have\n{Log}");
            Note($"pbm: {wrapper.Value}");
        }
        else
        {
            PbmDll = Directory.EnumerateFiles(RuntimeRoot, "pbm.dll", SearchOption.AllDirectories).FirstOrDefault();
        }
    }

    /// <summary>
    /// COPY SRC... DEST: a folder's content goes into DEST, a file into DEST/ (a folder: DEST ends with '/', several
    /// sources, or an existing folder) or to DEST; wildcards match files and folders; the context goes through .dockerignore.
    /// </summary>
    private void Copy(DockerInstruction ins, IReadOnlyDictionary<string, string> vars, string sourceRoot, DockerIgnore? ignore, string destRoot, string workdir)
    {
        if (ins.Heredocs.Count > 0) throw new Xunit.Sdk.XunitException($"line {ins.Line}: COPY of a here-document is not replayed by this test");
        var words = ins.Words(vars);
        if (words.Count < 2) throw new Xunit.Sdk.XunitException($"line {ins.Line}: COPY needs a source and a destination");
        var dest = Dockerfile.ContainerPath(workdir, words[^1]);
        var destHost = OnHost(destRoot, dest);
        var sources = new List<string>();
        var wildcard = false;
        foreach (var raw in words.Take(words.Count - 1))
        {
            if (raw.Contains("://", StringComparison.Ordinal)) throw new Xunit.Sdk.XunitException($"line {ins.Line}: ADD of a URL is not replayed by this test");
            var rel = Dockerfile.ContainerPath("/", raw).Trim('/');
            if (rel.IndexOfAny(['*', '?', '[']) >= 0)
            {
                wildcard = true;
                var glob = DockerIgnore.ToRegex(rel);
                var matches = Directory.EnumerateFileSystemEntries(sourceRoot, "*", SearchOption.AllDirectories)
                    .Select(p => Path.GetRelativePath(sourceRoot, p).Replace('\\', '/')).Where(p => glob.IsMatch(p) && ignore?.Excluded(p) != true).ToList();
                if (matches.Count == 0) throw new Xunit.Sdk.XunitException($"line {ins.Line}: COPY {raw}: no source files were specified\n{Log}");
                sources.AddRange(matches);
            }
            else
            {
                var host = rel.Length == 0 ? sourceRoot : Path.Combine(sourceRoot, rel);
                if (!File.Exists(host) && !Directory.Exists(host) || rel.Length > 0 && ignore?.Excluded(rel) == true && File.Exists(host))
                    throw new Xunit.Sdk.XunitException($"line {ins.Line}: COPY {raw}: not found in the {(ignore != null ? "build context (or excluded by .dockerignore)" : "build stage")}\n{Log}");
                sources.Add(rel);
            }
        }
        var intoFolder = words[^1].EndsWith('/') || sources.Count > 1 || wildcard || Directory.Exists(destHost);
        var files = 0;
        foreach (var rel in sources)
        {
            var host = rel.Length == 0 ? sourceRoot : Path.Combine(sourceRoot, rel);
            if (Directory.Exists(host))
            {
                files += CopyTree(sourceRoot, rel, destHost, ignore);
            }
            else
            {
                var target = intoFolder ? Path.Combine(destHost, Path.GetFileName(host)) : destHost;
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(host, target, overwrite: true);
                files++;
            }
        }
        Note($"line {ins.Line}: COPY {string.Join(' ', words)} -> {files} files");
    }

    /// <summary>The content of folder <paramref name="rel"/> (relative to <paramref name="root"/>) into <paramref name="target"/>, minus .dockerignore.</summary>
    private static int CopyTree(string root, string rel, string target, DockerIgnore? ignore)
    {
        var count = 0;
        Directory.CreateDirectory(target);
        var source = rel.Length == 0 ? root : Path.Combine(root, rel);
        foreach (var entry in new DirectoryInfo(source).EnumerateFileSystemInfos())
        {
            var entryRel = rel.Length == 0 ? entry.Name : rel + "/" + entry.Name;
            if (entry is DirectoryInfo dir)
            {
                if (dir.LinkTarget != null) continue;
                if (ignore != null && ignore.Excluded(entryRel) && !ignore.CouldReinclude(entryRel)) continue;
                var n = CopyTree(root, entryRel, Path.Combine(target, entry.Name), ignore);
                count += n;
                if (n == 0 && ignore?.Excluded(entryRel) == true) TestDirectory.TryDelete(Path.Combine(target, entry.Name));
            }
            else if (ignore?.Excluded(entryRel) != true)
            {
                File.Copy(entry.FullName, Path.Combine(target, entry.Name), overwrite: true);
                count++;
            }
        }
        return count;
    }
}

/// <summary>
/// .dockerignore as Docker reads it: patterns relative to the context root (a leading / and a trailing / ignored),
/// * and ? within a path segment, ** across segments, !pattern re-includes; the last matching line decides; a path is
/// matched along with each of its parent folders. BuildKit's DOCKERFILE.dockerignore beside the Dockerfile wins over
/// the context's .dockerignore.
/// </summary>
public sealed class DockerIgnore
{
    private readonly List<(string Pattern, Regex Regex, bool Exception)> _rules = new();

    public string? Source { get; private set; }

    public static DockerIgnore Load(string context, string dockerfile)
    {
        var ignore = new DockerIgnore();
        var path = new[] { dockerfile + ".dockerignore", Path.Combine(context, ".dockerignore") }.FirstOrDefault(File.Exists);
        if (path == null) return ignore;
        ignore.Source = path;
        foreach (var raw in File.ReadAllLines(path))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var exception = line.StartsWith('!');
            var pattern = Dockerfile.ContainerPath("/", exception ? line[1..].Trim() : line).Trim('/');
            if (pattern.Length == 0) continue;
            ignore._rules.Add((pattern, ToRegex(pattern), exception));
        }
        return ignore;
    }

    public bool Excluded(string rel)
    {
        var parts = rel.Split('/');
        var paths = Enumerable.Range(1, parts.Length).Select(n => string.Join('/', parts.Take(n))).ToList();
        var excluded = false;
        foreach (var (_, regex, exception) in _rules)
            if (paths.Any(regex.IsMatch)) excluded = !exception;
        return excluded;
    }

    /// <summary>Whether an exception line may re-include something inside the excluded folder <paramref name="rel"/>.</summary>
    public bool CouldReinclude(string rel) => _rules.Any(r => r.Exception
        && (r.Pattern.StartsWith(rel + "/", StringComparison.Ordinal) || r.Pattern.Split('/')[0].IndexOfAny(['*', '?', '[']) >= 0));

    /// <summary>A Docker path pattern as an anchored regex.</summary>
    public static Regex ToRegex(string pattern)
    {
        var sb = new StringBuilder("^");
        for (var i = 0; i < pattern.Length; i++)
        {
            var c = pattern[i];
            if (c == '*' && i + 1 < pattern.Length && pattern[i + 1] == '*')
            {
                i++;
                if (i + 1 < pattern.Length && pattern[i + 1] == '/') { sb.Append("(.*/)?"); i++; }
                else sb.Append(".*");
            }
            else if (c == '*') sb.Append("[^/]*");
            else if (c == '?') sb.Append("[^/]");
            else if (c == '[' && pattern.IndexOf(']', i + 1) is var close and > 0)
            {
                var set = pattern[(i + 1)..close];
                var negated = set.StartsWith('!') || set.StartsWith('^');
                sb.Append('[').Append(negated ? "^" : "").Append((negated ? set[1..] : set).Replace("\\", "\\\\").Replace("[", "\\[")).Append(']');
                i = close;
            }
            else if (c == '\\' && i + 1 < pattern.Length) sb.Append(Regex.Escape(pattern[++i].ToString()));
            else sb.Append(Regex.Escape(c.ToString()));
        }
        return new Regex(sb.Append('$').ToString(), RegexOptions.CultureInvariant);
    }
}

/// <summary>
/// An image's entrypoint script run as the container would run it (<c>sh SCRIPT</c>; the script execs the dotnet
/// process, so the pid is the program's): output kept, SIGTERM, exit code; killed with its children when disposed.
/// </summary>
public sealed class EntrypointProcess(string script, IReadOnlyDictionary<string, string?> environment, string workingDirectory) : IDisposable
{
    private readonly List<string> _lines = new();
    private Process? _process;

    public IReadOnlyList<string> Lines
    {
        get { lock (_lines) return _lines.ToArray(); }
    }

    public string OutputText => string.Join('\n', Lines);

    public void Start()
    {
        if (!File.Exists(script)) throw new Xunit.Sdk.XunitException($"{script} does not exist");
        var psi = ProcessRunner.CreateStartInfo("sh", [script], environment, workingDirectory);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = true;
        var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => Remember(e.Data);
        p.ErrorDataReceived += (_, e) => Remember(e.Data);
        p.Start();
        p.StandardInput.Close();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        _process = p;
    }

    private void Remember(string? line)
    {
        if (line == null) return;
        lock (_lines)
        {
            _lines.Add(line);
            if (_lines.Count > 20000) _lines.RemoveRange(0, 10000);
        }
    }

    /// <summary>Waits for a matching output line; fails early (with the output) if the process exits first.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> match, string what, TimeSpan timeout)
    {
        var line = await Eventually.Value(() => Lines.FirstOrDefault(match), l => l != null || _process is { HasExited: true },
            what, timeout, TimeSpan.FromMilliseconds(100));
        return line ?? throw new Xunit.Sdk.XunitException($"the process exited with {_process!.ExitCode} before: {what}\n{OutputText}");
    }

    public bool Terminate() => _process is { HasExited: false } p && ProcessRunner.Signal(p.Id, ProcessRunner.SigTerm);

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        var p = _process ?? throw new InvalidOperationException("not started");
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"did not exit within {timeout.TotalSeconds} s of SIGTERM\n{OutputText}");
        }
        p.WaitForExit();
        return p.ExitCode;
    }

    public void Dispose()
    {
        if (_process is not { } p) return;
        try
        {
            if (!p.HasExited)
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException) { }
        p.Dispose();
    }
}
