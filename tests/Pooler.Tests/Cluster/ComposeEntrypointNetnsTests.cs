using System.Globalization;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Cluster;

/// <summary>
/// What <c>deploy/compose.yml</c> would run, without a container engine: one network namespace per container on the
/// compose network's own subnet (172.28.0.0/24, private to the test's namespaces), each started with the image's
/// entrypoint script and the environment <c>docker-compose config</c> renders for that service. Host names resolve as
/// on the compose network (<c>/etc/netns/NAME/hosts</c>, which <c>ip netns exec</c> mounts over /etc/hosts). Only the
/// database differs: PostgreSQL in the <c>cockroach</c> namespace instead of CockroachDB, so the database entry's port,
/// name and user, and the TLS and client authentication settings (CockroachDB's certificates) are the test's.
/// </summary>
[Collection(PostgresCollection.Name)] // runs alone beside the other process-heavy tests
public sealed class ComposeEntrypointNetnsTests(ITestOutputHelper output)
{
    private const string Subnet = "172.28.0";
    private const string Vip = "172.28.0.250";

    /// <summary>The environment of each service as <c>docker-compose config</c> renders it.</summary>
    private static Dictionary<string, Dictionary<string, string>> RenderedEnvironments(string composeFile)
    {
        var r = ProcessRunner.Run("docker-compose", ["-f", composeFile, "config"], timeout: TimeSpan.FromSeconds(60));
        Assert.True(r.ExitCode == 0, $"docker-compose config failed (CI installs Debian's docker-compose): {r}");
        var result = new Dictionary<string, Dictionary<string, string>>();
        string? service = null;
        Dictionary<string, string>? env = null;
        var inServices = false;
        foreach (var raw in r.StdOut.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.Length == 0) continue;
            var indent = line.Length - line.TrimStart().Length;
            if (indent == 0) { inServices = line == "services:"; service = null; env = null; continue; }
            if (!inServices) continue;
            if (indent == 2 && line.TrimEnd().EndsWith(':')) { service = line.Trim().TrimEnd(':'); env = null; continue; }
            if (service == null) continue;
            if (indent == 4) { env = line.Trim() == "environment:" ? result[service] = new Dictionary<string, string>() : null; continue; }
            if (env != null && indent >= 6)
            {
                var colon = line.IndexOf(':');
                if (colon < 0) continue;
                var key = line[..colon].Trim();
                var value = line[(colon + 1)..].Trim();
                if (value.Length >= 2 && (value[0] is '\'' or '"') && value[^1] == value[0]) value = value[1..^1].Replace("''", "'");
                env[key] = value;
            }
        }
        return result;
    }

    [Fact]
    public async Task The_compose_topology_runs_from_the_entrypoints_with_the_compose_environment_and_the_vip_moves()
    {
        if (!NetNs.Available)
        {
            output.WriteLine("not run: needs root and iproute2 (CI runs as root)");
            return;
        }
        var compose = Path.Combine(NpmTools.RepositoryRoot, "deploy", "compose.yml");
        var envs = RenderedEnvironments(compose);
        Assert.True(envs.ContainsKey("lighthouse") && envs.ContainsKey("pooler1"), $"services with an environment: {string.Join(", ", envs.Keys)}");
        Assert.Equal(envs["pooler1"].OrderBy(kv => kv.Key), envs["pooler3"].OrderBy(kv => kv.Key)); // one shared block

        using var net = new NetNs(Subnet);
        var members = new (string Name, int Host)[] { ("cockroach", 5), ("lighthouse", 10), ("pooler1", 11), ("pooler2", 12), ("pooler3", 13), ("workload", 50) };
        var ns = members.ToDictionary(m => m.Name, m => net.Member(m.Name[..Math.Min(4, m.Name.Length)] + m.Host.ToString(CultureInfo.InvariantCulture), m.Host));
        // the compose network's DNS: every service name, in every namespace
        var hosts = "127.0.0.1 localhost\n" + string.Concat(members.Select(m => $"{Subnet}.{m.Host} {m.Name}\n"));
        var etcDirs = ns.Values.Select(n => Path.Combine("/etc/netns", n)).ToList();
        foreach (var d in etcDirs)
        {
            Directory.CreateDirectory(d);
            File.WriteAllText(Path.Combine(d, "hosts"), hosts);
        }
        using var pg = PostgresServer.Create(new PostgresServerOptions
        {
            MaxConnections = 100,
            Settings = new Dictionary<string, string> { ["listen_addresses"] = $"'{Subnet}.5'" },
            HbaLines = ["local all all trust", $"host all all {Subnet}.0/24 trust"],
        });
        var processes = new List<(string Name, PoolerProcess Process)>();
        try
        {
            ProcessRunner.Run("ip", ["netns", "exec", ns["cockroach"], "runuser", "-u", ProcessRunner.ServiceUser, "--",
                Path.Combine(pg.BinDir, "pg_ctl"), "start", "-w", "-t", "60", "-D", pg.DataDir, "-l", pg.LogFile, "-s"],
                timeout: TimeSpan.FromSeconds(90)).EnsureSuccess("pg_ctl start in its namespace");

            var docker = Path.Combine(NpmTools.RepositoryRoot, "deploy", "docker");
            var lighthouseEnv = Runtime(envs["lighthouse"]);
            lighthouseEnv["LIGHTHOUSE_HOME"] = Path.GetDirectoryName(PoolerProcess.LighthouseDll);
            var lighthouse = new PoolerProcess("", extraEnv: lighthouseEnv, program: PoolerProcess.LighthouseDll, netns: ns["lighthouse"],
                entrypoint: Path.Combine(docker, "lighthouse-entrypoint.sh"));
            processes.Add(("lighthouse", lighthouse));
            lighthouse.Start();
            await lighthouse.WaitForOutputAsync(l => l.Contains("to [Up]", StringComparison.Ordinal), "the lighthouse is Up", TimeSpan.FromSeconds(60));

            var poolerEnv = Runtime(envs["pooler1"]);
            // the database is PostgreSQL here, not CockroachDB: its entry, TLS and client authentication are the test's
            foreach (var key in poolerEnv.Keys.Where(k => k.StartsWith("POOLER__DATABASES__", StringComparison.Ordinal) || k.Contains("_TLS_", StringComparison.Ordinal)
                         || k.StartsWith("POOLER__AUTH__", StringComparison.Ordinal) || k == "POOLER_USERS").ToList())
                poolerEnv.Remove(key);
            poolerEnv["POOLER__AUTH__TYPE"] = "trust";
            poolerEnv["POOLER__DATABASES__DEFAULTDB__HOST"] = "cockroach"; // the compose name, resolved like there
            poolerEnv["POOLER__DATABASES__DEFAULTDB__PORT"] = pg.Port.ToString(CultureInfo.InvariantCulture);
            poolerEnv["POOLER__DATABASES__DEFAULTDB__DBNAME"] = "postgres";
            poolerEnv["POOLER__DATABASES__DEFAULTDB__USER"] = "postgres";
            poolerEnv["POOLER__VIP__ARPING_COMMAND"] = NetNs.Arping;
            poolerEnv["POOLER_HOME"] = Path.GetDirectoryName(PoolerProcess.HostDll);
            foreach (var name in new[] { "pooler1", "pooler2", "pooler3" })
            {
                var p = new PoolerProcess("", extraEnv: poolerEnv, netns: ns[name], entrypoint: Path.Combine(docker, "pooler-entrypoint.sh"));
                processes.Add((name, p));
                p.Start();
            }
            foreach (var (name, p) in processes.Skip(1))
            {
                var host = members.Single(m => m.Name == name).Host;
                // the entrypoint found the node's address on eth0, as in a container
                await p.WaitForOutputAsync(l => l.Contains($"pooler-entrypoint: node {Subnet}.{host}:4053 seeds akka.tcp://pooler@lighthouse:4053", StringComparison.Ordinal),
                    $"{name}'s entrypoint", TimeSpan.FromSeconds(30));
                await p.WaitForOutputAsync(l => l.Contains("ClusterSingletonManager state change [Start ->", StringComparison.Ordinal), $"{name} joined", TimeSpan.FromSeconds(90));
            }
            await Eventually.True(() => Holder(ns) is not null && WorksAsync(ns["workload"]).Result, "a pooler holds the VIP and it answers", TimeSpan.FromSeconds(60));

            // pbm as the image has it, inside the holder's namespace
            var holder = Holder(ns)!;
            var shown = ProcessRunner.Run("ip", ["netns", "exec", ns[holder], PoolerProcess.DotnetExecutable, Path.Combine(AppContext.BaseDirectory, "pbm.dll"),
                "127.0.0.1:9110", "cluster", "show"], timeout: TimeSpan.FromSeconds(30));
            output.WriteLine(shown.StdOut);
            Assert.True(shown.ExitCode == 0, $"pbm cluster show: {shown}");
            Assert.Equal(4, shown.StdOut.Split('\n').Count(l => l.Contains(" Up ", StringComparison.Ordinal)));

            // a container killed: the VIP moves to another pooler and answers there
            var killed = processes.Single(p => p.Name == holder).Process;
            killed.Kill();
            await Eventually.True(() => Holder(ns) is { } h && h != holder && WorksAsync(ns["workload"]).Result,
                "another pooler holds the VIP and answers", TimeSpan.FromSeconds(30));
            output.WriteLine($"VIP moved from {holder} to {Holder(ns)}");

            // a container stopped (SIGTERM, as docker stop): it drains, hands over and exits 0
            var stopping = Holder(ns)!;
            var stopped = processes.Single(p => p.Name == stopping).Process;
            Assert.True(stopped.Terminate());
            Assert.Equal(0, await stopped.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            await Eventually.True(() => Holder(ns) is { } h && h != stopping && h != holder && WorksAsync(ns["workload"]).Result,
                "the last pooler holds the VIP and answers", TimeSpan.FromSeconds(30));
        }
        finally
        {
            foreach (var (name, p) in processes)
            {
                foreach (var l in p.OutputLines.Where(l => l.Contains("entrypoint", StringComparison.Ordinal) || l.Contains("VIP", StringComparison.OrdinalIgnoreCase)).TakeLast(10))
                    output.WriteLine($"[{name}] {l}");
                await p.DisposeAsync();
            }
            pg.Stop();
            foreach (var d in etcDirs) Directory.Delete(d, recursive: true);
        }
    }

    /// <summary>A service's rendered environment plus what the test machine needs to run it outside an image.</summary>
    private static Dictionary<string, string?> Runtime(Dictionary<string, string> env)
    {
        var result = env.ToDictionary(kv => kv.Key, kv => (string?)kv.Value);
        result["DOTNET"] = PoolerProcess.DotnetExecutable;
        // the images' defaults for the side endpoints (PoolerProcess would pick free ports otherwise)
        result.TryAdd("POOLER__PBM__PORT", "9110");
        result.TryAdd("POOLER__HTTP__PORT", "8404");
        return result;
    }

    private static string? Holder(Dictionary<string, string> ns)
        => new[] { "pooler1", "pooler2", "pooler3" }.FirstOrDefault(n => NetNs.HasAddress(ns[n], Vip));

    /// <summary>A new connection through the VIP from the workload's namespace answers (psql, 2 s connect timeout).</summary>
    private static async Task<bool> WorksAsync(string clientNs)
    {
        var r = await ProcessRunner.RunAsync("ip", ["netns", "exec", clientNs, Path.Combine(PostgresServer.FindBinDir(), "psql"),
            "-h", Vip, "-p", "6432", "-U", "postgres", "-d", "defaultdb", "-Atc", "select 1"],
            environment: new Dictionary<string, string?> { ["PGCONNECT_TIMEOUT"] = "2" }, timeout: TimeSpan.FromSeconds(12));
        return r.ExitCode == 0 && r.StdOut.Trim() == "1";
    }
}
