using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Deploy;

/// <summary>
/// The deployment files of deploy/ (issue 8), checked without a container engine: the compose file by
/// <c>docker-compose config</c> (Debian's docker-compose 1.29), every YAML file by yamllint, the Dockerfiles by
/// dockerfilelint (npm), the Kubernetes manifests against the Kubernetes schema (npm kubernetes-models, strict about
/// unknown fields: deploy-lint/validate-k8s.js), and what the issue asks of each file, asserted here on the parsed
/// files (YAML through deploy-lint/yaml-to-json.js, the Dockerfiles through <see cref="Dockerfile"/>).
/// The npm tools come from tests/Pooler.Tests/deploy-lint (installed by <see cref="NpmTools"/>); docker-compose and
/// yamllint are Debian packages that .ci/run installs when missing.
/// </summary>
public sealed class DeployFilesTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromMinutes(2);

    // ------------------------------------------------------------------------------------------ linters and schemas

    [Fact]
    public async Task Compose_file_passes_docker_compose_config()
    {
        var compose = DeployPaths.RequireFile(DeployPaths.Compose);
        var result = await RunToolAsync("docker-compose", ["-f", compose, "config", "-q"], "docker-compose",
            "Debian package docker-compose (.ci/run installs it when missing)");
        output.WriteLine(result.ToString());
        Assert.True(result.Succeeded, $"docker-compose -f deploy/compose.yml config -q failed: {result}");
    }

    [Fact]
    public async Task Yamllint_passes_on_compose_file_and_manifests()
    {
        var files = new List<string> { DeployPaths.RequireFile(DeployPaths.Compose) };
        files.AddRange(DeployPaths.RequireManifests());
        // deploy/.yamllint if the deployment brings its own rules, else yamllint's defaults; strict: warnings fail too
        var own = new[] { ".yamllint", ".yamllint.yaml", ".yamllint.yml" }.Select(f => Path.Combine(DeployPaths.Deploy, f)).FirstOrDefault(File.Exists);
        List<string> args = own != null ? ["-f", "parsable", "-s", "-c", own] : ["-f", "parsable", "-s", "-d", "default"];
        var result = await RunToolAsync("yamllint", [.. args, .. files], "yamllint", "Debian package yamllint (.ci/run installs it when missing)");
        output.WriteLine($"yamllint -s {(own != null ? "-c " + own : "-d default")} on {files.Count} files");
        output.WriteLine(result.ToString());
        Assert.True(result.Succeeded, $"yamllint reported problems:\n{result.StdOut}{result.StdErr}");
    }

    /// <summary>
    /// dockerfilelint with all its rules on. One finding is its own bug and is let through, narrowly: dockerfilelint 1.8.0
    /// reads HEALTHCHECK options with /--\w+/, so <c>--start-period=30s</c> (Docker's documented option) is read as
    /// <c>--start</c> and reported as "Invalid Argument Format". Such a finding on a HEALTHCHECK line passes only when
    /// every option of that HEALTHCHECK is one of Docker's (checked here); any other finding fails the test.
    /// </summary>
    [Fact]
    public async Task Dockerfilelint_passes_on_both_dockerfiles()
    {
        var lint = DeployPaths.Lint;
        var bin = lint.Module(Path.Combine("dockerfilelint", "bin", "dockerfilelint"));
        var failures = new StringBuilder();
        foreach (var file in new[] { DeployPaths.PoolerDockerfile, DeployPaths.LighthouseDockerfile })
        {
            // dockerfilelint lints its argument as Dockerfile text when no such file exists: check first.
            DeployPaths.RequireFile(file);
            // -c: the folder a .dockerfilelintrc would be read from (deploy-lint/; none is needed today)
            var result = await lint.RunNodeAsync(bin, ["-j", "-c", lint.SourceDirectory, file], timeout: ToolTimeout);
            output.WriteLine($"dockerfilelint {Path.GetFileName(file)}: {result}");
            Assert.False(result.TimedOut, $"dockerfilelint timed out: {result}");
            using var report = JsonDocument.Parse(result.StdOut);
            var dockerfile = Dockerfile.Load(file);
            foreach (var issue in report.RootElement.GetProperty("files").EnumerateArray().SelectMany(f => f.GetProperty("issues").EnumerateArray()))
            {
                var line = int.Parse(issue.GetProperty("line").GetString()!, CultureInfo.InvariantCulture);
                var title = issue.GetProperty("title").GetString();
                var instruction = dockerfile.Stages.SelectMany(s => s.Instructions).FirstOrDefault(i => i.Line == line);
                if (title == "Invalid Argument Format" && instruction?.Keyword == "HEALTHCHECK" && ValidHealthcheckOptions(instruction))
                {
                    output.WriteLine($"{Path.GetFileName(file)}:{line}: dockerfilelint's --start-period bug, options checked here: {instruction.Args}");
                    continue;
                }
                failures.AppendLine($"{Path.GetFileName(file)}:{line}: {title} ({issue.GetProperty("description").GetString()}): {issue.GetProperty("content").GetString()}");
            }
        }
        Assert.True(failures.Length == 0, $"dockerfilelint reported problems:\n{failures}");
    }

    /// <summary>HEALTHCHECK [--interval|--timeout|--start-period|--start-interval=DURATION] [--retries=N] CMD ..., as Docker's reference has it.</summary>
    private static bool ValidHealthcheckOptions(DockerInstruction healthcheck)
    {
        var (flags, rest) = healthcheck.Flags();
        var options = Regex.Matches(healthcheck.Args, @"(?<=^|\s)--[A-Za-z-]+").Count;
        return options == flags.Count
            && Regex.IsMatch(rest, @"^CMD\s+\S")
            && flags.All(f => f.Key switch
            {
                "interval" or "timeout" or "start-period" or "start-interval" => Regex.IsMatch(f.Value, @"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$"),
                "retries" => Regex.IsMatch(f.Value, @"^\d+$"),
                _ => false,
            });
    }

    [Fact]
    public async Task Kubernetes_manifests_validate_against_the_kubernetes_schema()
    {
        var files = DeployPaths.RequireManifests();
        var result = await DeployPaths.Lint.RunNodeAsync("validate-k8s.js", files, timeout: ToolTimeout);
        output.WriteLine(result.ToString());
        Assert.True(result.Succeeded, $"deploy/k8s does not validate against the Kubernetes schema:\n{result}");
        var summary = ResultLine(result);
        Assert.Equal(0, summary.GetProperty("invalid").GetInt32());
        var kinds = summary.GetProperty("kinds").EnumerateArray().Select(k => k.GetString()).ToList();
        Assert.Contains("StatefulSet", kinds);
        Assert.Contains("Deployment", kinds);
        Assert.Contains("Service", kinds);
    }

    /// <summary>The validator itself: a valid manifest passes; an unknown field, a wrong type or an unknown kind is rejected.</summary>
    [Fact]
    public async Task Kubernetes_validator_rejects_unknown_fields_wrong_types_and_unknown_kinds()
    {
        const string Valid = """
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: pooler
            spec:
              replicas: 2
              selector:
                matchLabels: {app: pooler}
              template:
                metadata:
                  labels: {app: pooler}
                spec:
                  containers:
                    - name: pooler
                      image: pooler:1
                      readinessProbe:
                        httpGet: {path: /health, port: 8404}
            """;
        using var dir = TestDirectory.Create("k8s-validate");
        var cases = new (string Name, string Text, string Expected)[]
        {
            ("valid", Valid, ""),
            ("unknown-field", Valid.Replace("httpGet: {path: /health, port: 8404}", "httpGet: {path: /health, port: 8404, pathh: /x}"),
                "unknown field data/spec/template/spec/containers/0/readinessProbe/httpGet/pathh"),
            ("unknown-top-field", Valid.Replace("  replicas: 2", "  replica: 2"), "unknown field data/spec/replica"),
            ("wrong-type", Valid.Replace("replicas: 2", "replicas: two"), "data/spec/replicas must be integer"),
            ("unknown-kind", Valid.Replace("kind: Deployment", "kind: Deploymentt"), "unknown apiVersion/kind apps/v1 Deploymentt"),
        };
        foreach (var (name, text, expected) in cases)
        {
            var file = dir.Combine(name + ".yaml");
            await File.WriteAllTextAsync(file, text);
            var result = await DeployPaths.Lint.RunNodeAsync("validate-k8s.js", [file], timeout: ToolTimeout);
            output.WriteLine($"{name}: {result}");
            if (expected.Length == 0)
            {
                Assert.True(result.Succeeded, $"the valid manifest was rejected: {result}");
                Assert.Equal(1, ResultLine(result).GetProperty("documents").GetInt32());
            }
            else
            {
                Assert.Equal(1, result.ExitCode);
                Assert.Contains(expected, result.StdOut, StringComparison.Ordinal);
                Assert.Equal(1, ResultLine(result).GetProperty("invalid").GetInt32());
            }
        }
    }

    // ------------------------------------------------------------------------------------- what the issue asks

    [Fact]
    public void Both_dockerfiles_are_multi_stage_and_run_as_a_non_root_user()
    {
        foreach (var path in new[] { DeployPaths.PoolerDockerfile, DeployPaths.LighthouseDockerfile })
        {
            var name = Path.GetFileName(path);
            var file = Dockerfile.Load(DeployPaths.RequireFile(path));
            var build = file.BuildStage;
            Assert.True(build != null, $"{name}: no build stage (FROM ... AS build); stages: {file.Describe()}");
            Assert.True(Regex.IsMatch(file.ResolvedBase(build!), @"dotnet/sdk\b", RegexOptions.IgnoreCase), $"{name}: the build stage is FROM {build!.From}, not a .NET SDK image");
            Assert.True(build.Instructions.Any(i => i.Keyword == "RUN" && Regex.IsMatch(i.Args, @"\bdotnet\s+publish\b")), $"{name}: the build stage runs no dotnet publish");

            var final = file.Final;
            Assert.True(final != build && file.Stages.Count >= 2, $"{name}: the last stage must be the runtime image, not the build stage");
            var runtimeBase = file.ResolvedBase(final);
            Assert.True(Regex.IsMatch(runtimeBase, @"dotnet/(runtime|aspnet|runtime-deps)\b", RegexOptions.IgnoreCase)
                && !Regex.IsMatch(runtimeBase, @"dotnet/sdk\b", RegexOptions.IgnoreCase), $"{name}: the runtime stage is FROM {runtimeBase}, not a .NET runtime image");
            Assert.True(final.Instructions.Any(i => i.Keyword == "COPY" && i.Flags().Flags.TryGetValue("from", out var from)
                && string.Equals(from, build.Name, StringComparison.OrdinalIgnoreCase)), $"{name}: the runtime stage copies nothing from the build stage");

            var user = final.Instructions.LastOrDefault(i => i.Keyword == "USER");
            Assert.True(user != null, $"{name}: the runtime stage sets no USER (it would run as root)");
            var who = file.Expand(final, user!.Args.Trim()).Split(':')[0];
            Assert.False(who is "root" or "0" or "", $"{name}: USER {user.Args} is root");
        }
    }

    [Fact]
    public void Pooler_image_has_vip_tools_healthcheck_ports_pbm_and_the_entrypoint_script()
    {
        var file = Dockerfile.Load(DeployPaths.RequireFile(DeployPaths.PoolerDockerfile));
        var final = file.Final;

        // iproute2 and iputils-arping for the linux VIP driver, installed in the runtime image
        var installs = final.Instructions.Where(i => i.Keyword == "RUN").SelectMany(i => ShellWords.SplitCommands(i.Script, _ => null))
            .Where(c => c is ["apt-get" or "apt" or "apk", ..] && (c.Contains("install") || c.Contains("add"))).SelectMany(c => c).ToHashSet();
        Assert.True(installs.Contains("iproute2") && installs.Contains("iputils-arping"),
            $"the runtime stage does not install iproute2 and iputils-arping (installs: {string.Join(' ', installs)})");

        var health = final.Instructions.LastOrDefault(i => i.Keyword == "HEALTHCHECK");
        Assert.True(health != null, "no HEALTHCHECK in the runtime stage");
        Assert.Contains("/health", health!.Args, StringComparison.Ordinal);
        // the health check runs in the container: the http endpoint must listen where it asks
        var healthPort = Regex.Match(health.Args, @"(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)/health");
        if (healthPort.Success)
            Assert.Equal(file.Env(final).GetValueOrDefault("POOLER__HTTP__PORT", "8404"), healthPort.Groups[1].Value);

        var exposed = final.Instructions.Where(i => i.Keyword == "EXPOSE")
            .SelectMany(i => file.Expand(final, i.Args).Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(p => p.Split('/')[0]).ToHashSet();
        foreach (var port in new[] { "6432", "9110", "8404", "4053" })
            Assert.True(exposed.Contains(port), $"the pooler image does not EXPOSE {port} (exposes {string.Join(' ', exposed)})");

        // pbm on the PATH: a directory of PATH gets a file named pbm (a link, a wrapper, or the published apphost)
        var pathDirs = file.Env(final).GetValueOrDefault("PATH", Dockerfile.DefaultPath).Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => d.TrimEnd('/')).ToList();
        var pbmOnPath = pathDirs.Any(d => final.Instructions.Any(i => Regex.IsMatch(i.Args + "\n" + string.Join("\n", i.Heredocs),
                $@"(^|[\s""'=>]){Regex.Escape(d)}/pbm($|[\s""';&])", RegexOptions.Multiline)))
            || file.PublishedAppDirectories(final, "Pbm").Any(d => pathDirs.Contains(d.TrimEnd('/')));
        Assert.True(pbmOnPath, $"nothing puts pbm into a directory of the PATH ({string.Join(':', pathDirs)})");

        AssertEntrypoint(file, "pooler-entrypoint.sh", "POOLER_HOME", "/app/pooler", "Pooler.Host");
    }

    [Fact]
    public void Lighthouse_image_runs_the_lighthouse_entrypoint_script()
    {
        var file = Dockerfile.Load(DeployPaths.RequireFile(DeployPaths.LighthouseDockerfile));
        AssertEntrypoint(file, "lighthouse-entrypoint.sh", "LIGHTHOUSE_HOME", "/app/lighthouse", "Lighthouse");
    }

    /// <summary>
    /// The image runs deploy/docker/SCRIPT (copied in, the ENTRYPOINT), and the runtime stage copies the published
    /// PROJECT to where that script looks for it (HOME_VAR, default DEFAULT_HOME).
    /// </summary>
    private static void AssertEntrypoint(Dockerfile file, string script, string homeVariable, string defaultHome, string project)
    {
        var name = Path.GetFileName(file.Path);
        var final = file.Final;
        var copy = final.Instructions.FirstOrDefault(i => i.Keyword == "COPY" && !i.Flags().Flags.ContainsKey("from")
            && i.Words(file.Vars(final, i)).Any(w => w.TrimStart('.', '/') == $"deploy/docker/{script}"));
        Assert.True(copy != null, $"{name}: the runtime stage does not COPY deploy/docker/{script}");
        var entrypoint = final.Instructions.LastOrDefault(i => i.Keyword == "ENTRYPOINT");
        Assert.True(entrypoint != null, $"{name}: no ENTRYPOINT");
        Assert.Contains(script, entrypoint!.Args, StringComparison.Ordinal);

        var home = file.Env(final).GetValueOrDefault(homeVariable, defaultHome).TrimEnd('/');
        var dirs = file.PublishedAppDirectories(final, project);
        Assert.True(dirs.Any(d => d.TrimEnd('/') == home),
            $"{name}: the runtime stage copies the published {project} to [{string.Join(", ", dirs)}], but {script} runs $({homeVariable})/{project}.dll with {homeVariable}={home}");
    }

    [Fact]
    public async Task Compose_file_has_the_seed_topology()
    {
        var compose = (await DeployPaths.YamlAsync(DeployPaths.RequireFile(DeployPaths.Compose))).Single();
        Assert.True(compose.TryGetProperty("services", out var servicesElement), "compose.yml has no services");
        var services = servicesElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value);
        string Describe() => string.Join(", ", services.Keys);

        // CockroachDB, secure, single node, with certificates made by an init container running `cockroach cert`
        var cockroach = services.Where(s => Str(s.Value, "image")?.StartsWith("cockroachdb/cockroach", StringComparison.Ordinal) == true).ToList();
        var certs = cockroach.Where(s => Regex.IsMatch(CommandText(s.Value), @"(^|[\s/;&])(cockroach(\.sh)?\s+)?cert\s+create-")).ToList();
        Assert.True(certs.Count >= 1, $"no init service running `cockroach cert create-...` with the cockroachdb/cockroach image (services: {Describe()})");
        var db = cockroach.Where(s => CommandText(s.Value).Contains("start-single-node", StringComparison.Ordinal)).ToList();
        Assert.True(db.Count == 1, $"expected one cockroachdb/cockroach service running start-single-node (services: {Describe()})");
        Assert.False(CommandText(db[0].Value).Contains("--insecure", StringComparison.Ordinal), $"the CockroachDB service {db[0].Key} runs --insecure");
        Assert.True(DependsOn(db[0].Value).Overlaps(certs.Select(c => c.Key)),
            $"the CockroachDB service {db[0].Key} does not depend on the certificate service ({string.Join(", ", certs.Select(c => c.Key))})");

        // images of the repository's Dockerfiles (a service may reuse another's image by tag)
        var images = services.Where(s => BuildDockerfile(s.Value) != null)
            .ToDictionary(s => s.Key, s => Path.GetFileName(BuildDockerfile(s.Value)!));
        string? ImageOf(JsonElement service) => BuildDockerfile(service) is { } f ? Path.GetFileName(f)
            : services.Where(o => images.ContainsKey(o.Key) && Str(o.Value, "image") is { } tag && tag == Str(service, "image")).Select(o => images[o.Key]).FirstOrDefault();

        var lighthouse = services.Where(s => ImageOf(s.Value) == "Lighthouse.Dockerfile").ToList();
        Assert.True(lighthouse.Count >= 1, $"no service runs the Lighthouse image (services: {Describe()})");

        var workload = services.Where(s => s.Key.Contains("workload", StringComparison.OrdinalIgnoreCase)
            || CommandText(s.Value).Contains("Pooler.Workload", StringComparison.Ordinal)).ToList();
        Assert.True(workload.Count >= 1, $"no workload service (services: {Describe()})");

        var poolers = services.Where(s => ImageOf(s.Value) == "Pooler.Dockerfile" && !workload.Any(w => w.Key == s.Key)).ToList();
        Assert.True(poolers.Count == 3, $"expected three pooler services (the Pooler.Dockerfile image), found [{string.Join(", ", poolers.Select(p => p.Key))}]");
        var vips = new HashSet<string>();
        foreach (var (name, service) in poolers)
        {
            var caps = Strings(service, "cap_add").Select(c => c.ToUpperInvariant().Replace("CAP_", "")).ToHashSet();
            Assert.True(caps.Contains("NET_ADMIN") && caps.Contains("NET_RAW"), $"{name}: cap_add must hold NET_ADMIN and NET_RAW (has {string.Join(", ", caps)})");
            Assert.False(service.TryGetProperty("privileged", out var privileged) && privileged.ValueKind == JsonValueKind.True, $"{name} is privileged");
            var env = ServiceEnvironment(service);
            Assert.True(env.TryGetValue("CLUSTER_SEEDS", out var seeds) && lighthouse.Any(l => seeds!.Contains(l.Key, StringComparison.Ordinal)
                || (Str(l.Value, "hostname") is { } h && seeds.Contains(h, StringComparison.Ordinal))),
                $"{name}: CLUSTER_SEEDS must name the Lighthouse ({string.Join(", ", lighthouse.Select(l => l.Key))}); it is '{env.GetValueOrDefault("CLUSTER_SEEDS")}'");
            Assert.True(env.GetValueOrDefault("POOLER__VIP__DRIVER") == "linux", $"{name}: POOLER__VIP__DRIVER must be linux; it is '{env.GetValueOrDefault("POOLER__VIP__DRIVER")}'");
            vips.Add(env.GetValueOrDefault("POOLER__VIP__ADDRESS") ?? "");
        }
        Assert.True(vips.Count == 1 && vips.Single().Length > 0, $"the three pooler services must share one POOLER__VIP__ADDRESS (have: {string.Join(", ", vips)})");

        // the seed's experiment: the workload directly against CockroachDB and through the VIP
        var vipHost = vips.Single().Split('/')[0];
        var dbNames = new[] { db[0].Key, Str(db[0].Value, "hostname") ?? db[0].Key };
        var runs = workload.Select(w => CommandText(w.Value) + " " + string.Join(' ', ServiceEnvironment(w.Value).Values)).ToList();
        Assert.True(runs.Any(r => r.Contains(vipHost, StringComparison.Ordinal)), $"the workload service does not connect through the VIP {vipHost}");
        Assert.True(runs.Any(r => dbNames.Any(n => Regex.IsMatch(r, $@"[@/]{Regex.Escape(n)}[:/]"))),
            $"the workload service does not connect to CockroachDB ({db[0].Key}) directly");
    }

    [Fact]
    public async Task Kubernetes_manifests_have_a_lighthouse_statefulset_a_draining_pooler_deployment_and_a_service()
    {
        var docs = new List<JsonElement>();
        foreach (var f in DeployPaths.RequireManifests()) docs.AddRange(await DeployPaths.YamlAsync(f));
        JsonElement[] OfKind(string kind) => docs.Where(d => Str(d, "kind") == kind).ToArray();
        static IEnumerable<JsonElement> Containers(JsonElement workload) =>
            At(workload, "spec", "template", "spec", "containers") is { ValueKind: JsonValueKind.Array } c ? c.EnumerateArray() : [];
        static bool Drains(JsonElement container) => At(container, "lifecycle", "preStop", "exec") is { } exec
            && Regex.IsMatch(string.Join(' ', Strings(exec, "command")), @"\bpbm\b.*\bnode\s+drain\b");

        var lighthouse = OfKind("StatefulSet").Where(s => (Str(At(s, "metadata"), "name") ?? "").Contains("lighthouse", StringComparison.OrdinalIgnoreCase)
            || Containers(s).Any(c => (Str(c, "image") ?? "").Contains("lighthouse", StringComparison.OrdinalIgnoreCase))).ToList();
        Assert.True(lighthouse.Count == 1, $"expected one Lighthouse StatefulSet (kinds: {string.Join(", ", docs.Select(d => Str(d, "kind")))})");

        var poolers = OfKind("Deployment").Where(d => Containers(d).Any(Drains)).ToList();
        Assert.True(poolers.Count == 1, "expected one Deployment whose container has preStop: exec: pbm ... node drain");
        var pooler = poolers[0];
        var container = Containers(pooler).First(Drains);
        var env = At(container, "env") is { ValueKind: JsonValueKind.Array } list
            ? list.EnumerateArray().Where(e => Str(e, "value") != null).ToDictionary(e => Str(e, "name")!, e => Str(e, "value")!)
            : new Dictionary<string, string>();
        Assert.True(env.GetValueOrDefault("POOLER__VIP__DRIVER") == "none",
            $"the pooler Deployment must set POOLER__VIP__DRIVER=none (the Service stands in for the VIP); it is '{env.GetValueOrDefault("POOLER__VIP__DRIVER")}'");

        // settings not in the manifest come from the image's ENV, else from reference.conf
        var imageEnv = File.Exists(DeployPaths.PoolerDockerfile) ? Dockerfile.Load(DeployPaths.PoolerDockerfile) is var d ? d.Env(d.Final) : [] : [];
        string Setting(string name, string fallback) => env.GetValueOrDefault(name) ?? imageEnv.GetValueOrDefault(name) ?? fallback;
        static bool Loopback(string host) => host is "127.0.0.1" or "localhost" or "::1" or "[::1]";

        var readiness = At(container, "readinessProbe", "httpGet");
        Assert.True(readiness != null, "the pooler container has no readinessProbe.httpGet");
        Assert.True(Str(readiness!.Value, "path") == "/health", $"the readiness probe asks {Str(readiness.Value, "path")}, not /health");
        // the kubelet probes the pod's address: /health must not listen on 127.0.0.1 only (pooler.http.host's default)
        var httpHost = Setting("POOLER__HTTP__HOST", "127.0.0.1");
        Assert.False(Loopback(httpHost), $"POOLER__HTTP__HOST is {httpHost}: the kubelet's readiness probe cannot reach /health");
        var probePort = At(readiness.Value, "port");
        var httpPort = Setting("POOLER__HTTP__PORT", "8404");
        var portOk = probePort is { ValueKind: JsonValueKind.Number } number
            ? number.GetInt32().ToString(CultureInfo.InvariantCulture) == httpPort
            : At(container, "ports") is { ValueKind: JsonValueKind.Array } ports && ports.EnumerateArray().Any(p => Str(p, "name") == probePort?.GetString()
                && Str(p, "containerPort") == httpPort);
        Assert.True(portOk, $"the readiness probe's port {probePort} is not the http endpoint's port {httpPort}");

        var labels = At(pooler, "spec", "template", "metadata", "labels") is { ValueKind: JsonValueKind.Object } l
            ? l.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.ToString()) : new Dictionary<string, string>();
        var services = OfKind("Service").Where(s => At(s, "spec", "selector") is { ValueKind: JsonValueKind.Object } sel
            && sel.EnumerateObject().Any() && sel.EnumerateObject().All(p => labels.GetValueOrDefault(p.Name) == p.Value.ToString())).ToList();
        Assert.True(services.Count >= 1, $"no Service selects the pooler pods (labels {string.Join(", ", labels.Select(kv => $"{kv.Key}={kv.Value}"))})");
        var listenHost = Setting("POOLER__LISTEN__HOST", "127.0.0.1");
        Assert.False(Loopback(listenHost), $"POOLER__LISTEN__HOST is {listenHost}: the Service cannot reach the pooler");
    }

    // ------------------------------------------------------------------------------------------------- helpers

    private static async Task<ProcessResult> RunToolAsync(string tool, IEnumerable<string> args, string what, string install)
    {
        try
        {
            return await ProcessRunner.RunAsync(tool, args, timeout: ToolTimeout, workingDirectory: DeployPaths.Root);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new Xunit.Sdk.XunitException($"{what} is not installed (not on PATH): {install}. {e.Message}");
        }
    }

    private static JsonElement ResultLine(ProcessResult result)
    {
        var line = result.StdOut.Split('\n').Select(l => l.TrimEnd('\r')).LastOrDefault(l => l.StartsWith("RESULT ", StringComparison.Ordinal))
            ?? throw new Xunit.Sdk.XunitException($"no RESULT line: {result}");
        using var doc = JsonDocument.Parse(line["RESULT ".Length..]);
        return doc.RootElement.Clone();
    }

    private static JsonElement? At(JsonElement e, params string[] names)
    {
        foreach (var n in names)
        {
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty(n, out e)) return null;
        }
        return e;
    }

    private static string? Str(JsonElement? e, string name) =>
        e is { ValueKind: JsonValueKind.Object } o && o.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.String or JsonValueKind.Number
            ? v.ToString() : null;

    private static IEnumerable<string> Strings(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v)
            ? v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().Select(x => x.ToString()) : [v.ToString()]
            : [];

    /// <summary>entrypoint and command of a compose service (or one field of any object), as one line.</summary>
    private static string CommandText(JsonElement e, params string[] fields) =>
        string.Join(' ', (fields.Length > 0 ? fields : ["entrypoint", "command"]).SelectMany(f => Strings(e, f)));

    private static HashSet<string> DependsOn(JsonElement service) =>
        !service.TryGetProperty("depends_on", out var d) ? []
        : d.ValueKind == JsonValueKind.Array ? d.EnumerateArray().Select(x => x.ToString()).ToHashSet()
        : d.EnumerateObject().Select(p => p.Name).ToHashSet();

    /// <summary>The Dockerfile a compose service builds, as a full path (null when it only pulls an image).</summary>
    private static string? BuildDockerfile(JsonElement service)
    {
        if (!service.TryGetProperty("build", out var build)) return null;
        var context = build.ValueKind == JsonValueKind.String ? build.GetString()! : Str(build, "context") ?? ".";
        var dockerfile = build.ValueKind == JsonValueKind.Object ? Str(build, "dockerfile") ?? "Dockerfile" : "Dockerfile";
        return Path.GetFullPath(Path.Combine(DeployPaths.Deploy, context, dockerfile));
    }

    /// <summary>A compose service's environment (mapping or list form); a variable listed without value maps to "".</summary>
    private static Dictionary<string, string> ServiceEnvironment(JsonElement service)
    {
        var env = new Dictionary<string, string>();
        if (!service.TryGetProperty("environment", out var e)) return env;
        if (e.ValueKind == JsonValueKind.Object)
            foreach (var p in e.EnumerateObject()) env[p.Name] = p.Value.ValueKind == JsonValueKind.Null ? "" : p.Value.ToString();
        else if (e.ValueKind == JsonValueKind.Array)
            foreach (var item in e.EnumerateArray().Select(x => x.ToString()))
            {
                var eq = item.IndexOf('=');
                if (eq < 0) env[item] = "";
                else env[item[..eq]] = item[(eq + 1)..];
            }
        return env;
    }
}

/// <summary>Where the deployment files are, and reading them.</summary>
internal static class DeployPaths
{
    public static string Root => NpmTools.RepositoryRoot;
    public static string Deploy => Path.Combine(Root, "deploy");
    public static string PoolerDockerfile => Path.Combine(Deploy, "docker", "Pooler.Dockerfile");
    public static string LighthouseDockerfile => Path.Combine(Deploy, "docker", "Lighthouse.Dockerfile");
    public static string Compose => Path.Combine(Deploy, "compose.yml");
    public static string K8s => Path.Combine(Deploy, "k8s");

    /// <summary>The npm tools of tests/Pooler.Tests/deploy-lint.</summary>
    public static NpmTools Lint => NpmTools.For(Path.Combine("tests", "Pooler.Tests", "deploy-lint"));

    public static string RequireFile(string path) =>
        File.Exists(path) ? path : throw new Xunit.Sdk.XunitException($"{Path.GetRelativePath(Root, path)} does not exist");

    /// <summary>deploy/k8s/*.yaml and *.yml, sorted; fails when there are none.</summary>
    public static List<string> RequireManifests()
    {
        var files = Directory.Exists(K8s)
            ? Directory.EnumerateFiles(K8s).Where(f => f.EndsWith(".yaml", StringComparison.Ordinal) || f.EndsWith(".yml", StringComparison.Ordinal))
                .Order(StringComparer.Ordinal).ToList()
            : [];
        return files.Count > 0 ? files : throw new Xunit.Sdk.XunitException("deploy/k8s has no *.yaml manifests");
    }

    /// <summary>The documents of a YAML file as JSON (deploy-lint/yaml-to-json.js: merge keys resolved, duplicate keys refused).</summary>
    public static async Task<List<JsonElement>> YamlAsync(string path)
    {
        var result = await Lint.RunNodeAsync("yaml-to-json.js", [path], timeout: TimeSpan.FromMinutes(1));
        if (!result.Succeeded) throw new Xunit.Sdk.XunitException($"cannot read {path} as YAML: {result}");
        using var doc = JsonDocument.Parse(result.StdOut);
        return doc.RootElement.EnumerateArray().Select(e => e.Clone()).ToList();
    }
}

/// <summary>One instruction of a Dockerfile: its keyword (upper case), its text after the keyword (continuation lines
/// joined, comment lines dropped), the line it starts on, and the bodies of its here-documents.</summary>
internal sealed partial record DockerInstruction(string Keyword, string Args, int Line, IReadOnlyList<string> Heredocs)
{
    [GeneratedRegex(@"^--([A-Za-z][A-Za-z0-9-]*)(?:=(""[^""]*""|\S*))?(?:\s+|$)")]
    private static partial Regex FlagPattern();

    /// <summary>The leading <c>--name=value</c> options (COPY --from, RUN --mount, ...) and the text after them.</summary>
    public (IReadOnlyDictionary<string, string> Flags, string Text) Flags()
    {
        var flags = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var rest = Args.TrimStart();
        while (FlagPattern().Match(rest) is { Success: true } m)
        {
            flags[m.Groups[1].Value] = m.Groups[2].Value.Trim('"');
            rest = rest[m.Length..];
        }
        return (flags, rest);
    }

    /// <summary>The script a RUN runs: its text, or the here-document when the text is only <c>&lt;&lt;EOF</c>.</summary>
    public string Script
    {
        get
        {
            var rest = Flags().Text.Trim();
            return Heredocs.Count > 0 && Regex.IsMatch(rest, @"^<<-?[""']?\w+[""']?$") ? Heredocs[0] : rest;
        }
    }

    /// <summary>The exec form's JSON array, or null for the shell form.</summary>
    public IReadOnlyList<string>? ExecForm()
    {
        var rest = Flags().Text.Trim();
        if (!rest.StartsWith('[')) return null;
        try { return JsonSerializer.Deserialize<List<string>>(rest); }
        catch (JsonException) { return null; }
    }

    /// <summary>The words after the options (JSON array or whitespace separated), Dockerfile variables expanded.</summary>
    public IReadOnlyList<string> Words(IReadOnlyDictionary<string, string> vars) =>
        ExecForm()?.Select(w => ShellWords.Expand(w, vars)).ToList()
        ?? ShellWords.Expand(Flags().Text, vars).Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries).ToList();
}

internal sealed record DockerStage(int Index, string From, string? Name, IReadOnlyList<DockerInstruction> Instructions);

/// <summary>
/// A Dockerfile read into stages: enough of the syntax for the tests (continuation lines, comments, the escape
/// directive, here-documents, ARG/ENV substitution), not a builder.
/// </summary>
internal sealed partial class Dockerfile
{
    public const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    private Dockerfile(string path, IReadOnlyList<DockerInstruction> globalArgs, IReadOnlyList<DockerStage> stages)
    {
        Path = path;
        GlobalArgs = globalArgs;
        Stages = stages;
    }

    public string Path { get; }

    /// <summary>ARG instructions before the first FROM.</summary>
    public IReadOnlyList<DockerInstruction> GlobalArgs { get; }

    public IReadOnlyList<DockerStage> Stages { get; }

    public DockerStage Final => Stages[^1];

    /// <summary>The stage named build (FROM ... AS build).</summary>
    public DockerStage? BuildStage => Stage("build");

    public DockerStage? Stage(string name) => Stages.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase));

    public string Describe() => string.Join("; ", Stages.Select(s => $"FROM {s.From}{(s.Name != null ? " AS " + s.Name : "")}"));

    [GeneratedRegex(@"<<(-?)([""']?)(\w+)\2")]
    private static partial Regex HeredocPattern();

    public static Dockerfile Load(string path)
    {
        var lines = File.ReadAllLines(path);
        var escape = '\\';
        // parser directives: only at the very top
        foreach (var line in lines)
        {
            var m = Regex.Match(line, @"^#\s*([a-z]+)\s*=\s*(\S+)\s*$", RegexOptions.IgnoreCase);
            if (!m.Success) break;
            if (m.Groups[1].Value.Equals("escape", StringComparison.OrdinalIgnoreCase)) escape = m.Groups[2].Value[0];
        }

        var instructions = new List<DockerInstruction>();
        var text = new StringBuilder();
        var start = -1;
        for (var i = 0; i < lines.Length; i++)
        {
            var line = lines[i];
            var trimmed = line.Trim();
            if (trimmed.Length == 0 || trimmed.StartsWith('#')) continue; // comments and blank lines, also inside continuations
            if (start < 0) start = i + 1;
            var body = line.TrimEnd();
            if (body.EndsWith(escape))
            {
                text.Append(body[..^1]).Append(' ');
                continue;
            }
            text.Append(body);
            var full = text.ToString().Trim();
            text.Clear();
            var heredocs = new List<string>();
            var space = full.IndexOfAny([' ', '\t']);
            var keyword = (space < 0 ? full : full[..space]).ToUpperInvariant();
            var args = space < 0 ? "" : full[(space + 1)..].Trim();
            if (keyword is "RUN" or "COPY" or "ADD")
            {
                foreach (Match h in HeredocPattern().Matches(args))
                {
                    var doc = new StringBuilder();
                    for (i++; i < lines.Length && (h.Groups[1].Value == "-" ? lines[i].Trim() : lines[i]) != h.Groups[3].Value; i++)
                        doc.Append(lines[i]).Append('\n');
                    heredocs.Add(doc.ToString());
                }
            }
            instructions.Add(new DockerInstruction(keyword, args, start, heredocs));
            start = -1;
        }

        var globalArgs = instructions.TakeWhile(i => i.Keyword != "FROM").ToList();
        var stages = new List<DockerStage>();
        foreach (var ins in instructions.Skip(globalArgs.Count))
        {
            if (ins.Keyword == "FROM")
            {
                var words = ins.Flags().Text.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
                var name = words.Length >= 3 && words[1].Equals("AS", StringComparison.OrdinalIgnoreCase) ? words[2] : null;
                stages.Add(new DockerStage(stages.Count, words.Length > 0 ? words[0] : "", name, new List<DockerInstruction>()));
            }
            else
            {
                ((List<DockerInstruction>)stages[^1].Instructions).Add(ins);
            }
        }
        if (stages.Count == 0) throw new Xunit.Sdk.XunitException($"{path} has no FROM");
        return new Dockerfile(path, globalArgs, stages);
    }

    /// <summary>Defaults of the ARGs before the first FROM (and <paramref name="buildArgs"/>, as docker build --build-arg).</summary>
    public Dictionary<string, string> GlobalArgValues(IReadOnlyDictionary<string, string>? buildArgs = null)
    {
        var vars = new Dictionary<string, string>();
        foreach (var a in GlobalArgs.Where(a => a.Keyword == "ARG")) Declare(vars, a.Args, vars, buildArgs);
        return vars;
    }

    /// <summary>A stage's base image with the global ARGs substituted; a stage built on an earlier stage gives that stage's base.</summary>
    public string ResolvedBase(DockerStage stage)
    {
        var image = ShellWords.Expand(stage.From, GlobalArgValues());
        return Stage(image) is { } parent && parent.Index < stage.Index ? ResolvedBase(parent) : image;
    }

    /// <summary>The ARG and ENV values in effect before <paramref name="at"/> (the whole stage when null), inherited from parent stages.</summary>
    public Dictionary<string, string> Vars(DockerStage stage, DockerInstruction? at = null, IReadOnlyDictionary<string, string>? buildArgs = null)
    {
        var globals = GlobalArgValues(buildArgs);
        var from = ShellWords.Expand(stage.From, globals);
        var vars = Stage(from) is { } parent && parent.Index < stage.Index ? Vars(parent, null, buildArgs) : new Dictionary<string, string>();
        foreach (var ins in stage.Instructions)
        {
            if (ReferenceEquals(ins, at)) break;
            if (ins.Keyword == "ARG") Declare(vars, ins.Args, globals, buildArgs);
            else if (ins.Keyword == "ENV") foreach (var (k, v) in ParseEnv(ins.Args, vars)) vars[k] = v;
        }
        return vars;
    }

    /// <summary>Only the ENV values of a stage (and its parents).</summary>
    public Dictionary<string, string> Env(DockerStage stage)
    {
        var globals = GlobalArgValues();
        var from = ShellWords.Expand(stage.From, globals);
        var env = Stage(from) is { } parent && parent.Index < stage.Index ? Env(parent) : new Dictionary<string, string>();
        var vars = new Dictionary<string, string>(env);
        foreach (var ins in stage.Instructions)
        {
            if (ins.Keyword == "ARG") Declare(vars, ins.Args, globals, null);
            else if (ins.Keyword == "ENV")
                foreach (var (k, v) in ParseEnv(ins.Args, vars)) vars[k] = env[k] = v;
        }
        if (env.TryGetValue("PATH", out var path)) env["PATH"] = path.Replace("$PATH", DefaultPath).Replace("${PATH}", DefaultPath);
        return env;
    }

    public string Expand(DockerStage stage, string text) => ShellWords.Expand(text, Vars(stage));

    private static void Declare(Dictionary<string, string> vars, string args, IReadOnlyDictionary<string, string> globals,
        IReadOnlyDictionary<string, string>? buildArgs)
    {
        foreach (var decl in args.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = decl.IndexOf('=');
            var name = eq < 0 ? decl : decl[..eq];
            if (buildArgs != null && buildArgs.TryGetValue(name, out var given)) vars[name] = given;
            else if (eq >= 0) vars[name] = ShellWords.Expand(decl[(eq + 1)..].Trim('"'), vars);
            else if (globals.TryGetValue(name, out var global)) vars[name] = global;
        }
    }

    /// <summary>ENV K=V K2="V 2" ..., or the old form ENV K V.</summary>
    public static IEnumerable<(string Key, string Value)> ParseEnv(string args, IReadOnlyDictionary<string, string> vars)
    {
        var words = ShellWords.SplitCommands(args, n => vars.TryGetValue(n, out var v) ? v : null).SelectMany(c => c).ToList();
        if (words.Count > 0 && !words[0].Contains('='))
        {
            var space = args.IndexOfAny([' ', '\t']);
            yield return (words[0], space < 0 ? "" : ShellWords.Expand(args[(space + 1)..].Trim(), vars));
            yield break;
        }
        foreach (var w in words)
        {
            var eq = w.IndexOf('=');
            if (eq > 0) yield return (w[..eq], w[(eq + 1)..]);
        }
    }

    /// <summary>
    /// Where the runtime stage puts the published <paramref name="project"/> (a folder name of src/): the destination of
    /// each COPY --from=build whose source is (or holds) the folder a build-stage `dotnet publish` of the project wrote to.
    /// </summary>
    public IReadOnlyList<string> PublishedAppDirectories(DockerStage final, string project)
    {
        var build = BuildStage;
        if (build == null) return [];
        var outputs = PublishCommands(build).Where(p => p.Project.Contains(project, StringComparison.OrdinalIgnoreCase))
            .Select(p => p.Output.TrimEnd('/')).ToList();
        var result = new List<string>();
        foreach (var copy in final.Instructions.Where(i => i.Keyword == "COPY"
            && i.Flags().Flags.TryGetValue("from", out var f) && string.Equals(f, build.Name, StringComparison.OrdinalIgnoreCase)))
        {
            var words = copy.Words(Vars(final, copy));
            if (words.Count < 2) continue;
            var dest = words[^1];
            foreach (var src in words.Take(words.Count - 1).Select(s => s.TrimEnd('/')))
                foreach (var output in outputs)
                {
                    if (output == src) result.Add(dest.TrimEnd('/'));
                    else if (output.StartsWith(src + "/", StringComparison.Ordinal)) result.Add(dest.TrimEnd('/') + output[src.Length..]);
                }
        }
        return result;
    }

    /// <summary>The `dotnet publish PROJECT ... -o DIR` commands of a stage's RUN lines (shell form, &amp;&amp; chains split), with the
    /// stage's WORKDIR resolved so DIR is absolute.</summary>
    public IReadOnlyList<(string Project, string Output, IReadOnlyList<string> Words)> PublishCommands(DockerStage stage)
    {
        var list = new List<(string, string, IReadOnlyList<string>)>();
        var workdir = "/";
        foreach (var ins in stage.Instructions)
        {
            var vars = Vars(stage, ins);
            if (ins.Keyword == "WORKDIR") workdir = ContainerPath(workdir, ShellWords.Expand(ins.Args.Trim('"'), vars));
            if (ins.Keyword != "RUN") continue;
            var commands = ins.ExecForm() is { } exec ? [exec.ToList()] : ShellWords.SplitCommands(ins.Script, n => vars.TryGetValue(n, out var v) ? v : null);
            foreach (var words in commands)
            {
                if (words is ["cd", var dir, ..]) workdir = ContainerPath(workdir, dir);
                if (words.Count < 2 || words[0] != "dotnet" || words[1] != "publish") continue;
                var output = OptionValue(words, "-o", "--output");
                var project = ProjectArgument(words);
                if (output != null) list.Add((project ?? "", ContainerPath(workdir, output), words));
            }
        }
        return list;
    }

    private static readonly HashSet<string> ValueOptions =
    [
        "-o", "--output", "-c", "--configuration", "-r", "--runtime", "-f", "--framework", "--os", "-a", "--arch",
        "-v", "--verbosity", "--version-suffix", "-s", "--source", "--manifest", "--packages", "--configfile", "-bl",
    ];

    /// <summary>The project (or solution) argument of a dotnet command: its first word that is no option nor an option's value.</summary>
    public static string? ProjectArgument(IReadOnlyList<string> words)
    {
        for (var i = 2; i < words.Count; i++)
        {
            if (words[i].StartsWith('-'))
            {
                if (ValueOptions.Contains(words[i])) i++;
                continue;
            }
            return words[i];
        }
        return null;
    }

    /// <summary>The value of an option given as <c>-o X</c>, <c>-o=X</c>, <c>-o:X</c>, <c>--output X</c> or <c>--output=X</c>.</summary>
    public static string? OptionValue(IReadOnlyList<string> words, params string[] names)
    {
        for (var i = 0; i < words.Count; i++)
            foreach (var n in names)
            {
                if (words[i] == n && i + 1 < words.Count) return words[i + 1];
                if (words[i].StartsWith(n + "=", StringComparison.Ordinal) || words[i].StartsWith(n + ":", StringComparison.Ordinal)) return words[i][(n.Length + 1)..];
            }
        return null;
    }

    /// <summary>A container path: <paramref name="path"/> against <paramref name="cwd"/>, normalized (no . or ..).</summary>
    public static string ContainerPath(string cwd, string path)
    {
        var full = path.StartsWith('/') ? path : cwd.TrimEnd('/') + "/" + path;
        var parts = new List<string>();
        foreach (var p in full.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (p == ".") continue;
            if (p == "..") { if (parts.Count > 0) parts.RemoveAt(parts.Count - 1); continue; }
            parts.Add(p);
        }
        return "/" + string.Join('/', parts) + (path.EndsWith('/') && parts.Count > 0 ? "/" : "");
    }
}

/// <summary>Just enough of sh's word splitting for RUN lines: quotes, escapes, $VAR/${VAR}/${VAR:-x}, and the command
/// separators (&amp;&amp;, ||, ;, |, &amp;, new line). Command substitution and globbing are left as they are.</summary>
internal static class ShellWords
{
    /// <summary>The commands of a script, each as its words; <paramref name="lookup"/> gives variables (null: unset).</summary>
    public static List<List<string>> SplitCommands(string script, Func<string, string?> lookup)
    {
        var commands = new List<List<string>>();
        var words = new List<string>();
        var word = new StringBuilder();
        var inWord = false;
        void EndWord()
        {
            if (inWord) words.Add(word.ToString());
            word.Clear();
            inWord = false;
        }
        void EndCommand()
        {
            EndWord();
            if (words.Count > 0) commands.Add(words);
            words = new List<string>();
        }
        var i = 0;
        while (i < script.Length)
        {
            var c = script[i];
            if (c == '\\' && i + 1 < script.Length)
            {
                if (script[i + 1] != '\n') { word.Append(script[i + 1]); inWord = true; }
                i += 2;
            }
            else if (c == '\'')
            {
                var end = script.IndexOf('\'', i + 1);
                if (end < 0) end = script.Length;
                word.Append(script, i + 1, end - i - 1);
                inWord = true;
                i = end + 1;
            }
            else if (c == '"')
            {
                inWord = true;
                for (i++; i < script.Length && script[i] != '"';)
                {
                    if (script[i] == '\\' && i + 1 < script.Length && "$`\"\\\n".Contains(script[i + 1]))
                    {
                        if (script[i + 1] != '\n') word.Append(script[i + 1]);
                        i += 2;
                    }
                    else if (script[i] == '$') i = ExpandAt(script, i, lookup, word);
                    else word.Append(script[i++]);
                }
                i++;
            }
            else if (c == '$')
            {
                var value = new StringBuilder();
                i = ExpandAt(script, i, lookup, value);
                // unquoted: the value splits into words
                var parts = value.ToString().Split([' ', '\t', '\n'], StringSplitOptions.None);
                for (var p = 0; p < parts.Length; p++)
                {
                    if (p > 0) EndWord();
                    if (parts[p].Length > 0) { word.Append(parts[p]); inWord = true; }
                }
            }
            else if (c is ' ' or '\t' or '\r')
            {
                EndWord();
                i++;
            }
            else if (c == '>' && i + 1 < script.Length && script[i + 1] == '&')
            {
                word.Append(">&");
                inWord = true;
                i += 2;
            }
            else if (c is '\n' or ';' or '&' or '|')
            {
                EndCommand();
                i++;
                if (i < script.Length && script[i] == c) i++;
            }
            else if (c == '#' && !inWord)
            {
                while (i < script.Length && script[i] != '\n') i++;
            }
            else
            {
                word.Append(c);
                inWord = true;
                i++;
            }
        }
        EndCommand();
        return commands;
    }

    /// <summary>Dockerfile substitution (WORKDIR, COPY, ENV, ...): $VAR, ${VAR}, ${VAR:-word}, ${VAR:+word}; \$ keeps a dollar.</summary>
    public static string Expand(string text, IReadOnlyDictionary<string, string> vars)
    {
        var sb = new StringBuilder();
        for (var i = 0; i < text.Length;)
        {
            if (text[i] == '\\' && i + 1 < text.Length && text[i + 1] == '$') { sb.Append('$'); i += 2; }
            else if (text[i] == '$') i = ExpandAt(text, i, n => vars.TryGetValue(n, out var v) ? v : null, sb);
            else sb.Append(text[i++]);
        }
        return sb.ToString();
    }

    /// <summary>Expands the variable reference at text[i] ('$') into sb; returns the index after it.</summary>
    private static int ExpandAt(string text, int i, Func<string, string?> lookup, StringBuilder sb)
    {
        if (i + 1 < text.Length && text[i + 1] == '{')
        {
            var close = text.IndexOf('}', i + 2);
            if (close < 0) { sb.Append(text[i..]); return text.Length; }
            var inner = text[(i + 2)..close];
            var m = Regex.Match(inner, @"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+=?])(.*))?$", RegexOptions.Singleline);
            if (!m.Success) { sb.Append(text, i, close - i + 1); return close + 1; }
            var value = lookup(m.Groups[1].Value);
            var op = m.Groups[2].Value;
            var word = m.Groups[3].Value;
            var set = op.StartsWith(':') ? !string.IsNullOrEmpty(value) : value != null;
            sb.Append(op.TrimStart(':') switch
            {
                "-" or "=" => set ? value : word,
                "+" => set ? word : "",
                _ => value ?? "",
            });
            return close + 1;
        }
        var n = Regex.Match(text[(i + 1)..], @"^[A-Za-z_][A-Za-z0-9_]*");
        if (!n.Success)
        {
            sb.Append('$');
            return i + 1;
        }
        sb.Append(lookup(n.Value) ?? "");
        return i + 1 + n.Length;
    }
}
