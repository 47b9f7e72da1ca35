using System.Globalization;
using Xunit.Abstractions;

namespace Pooler.Tests.Infrastructure;

/// <summary>
/// A real cluster of processes on loopback: a Lighthouse and pooler nodes (Pooler.Host) with the <c>bind</c>
/// VIP driver on a 127.x.y.z address of the test's own (all of 127.0.0.0/8 is local on Linux). Dispose stops
/// every process and writes the lines that explain a failure (VIP, drain, downing, errors) to the test output.
/// </summary>
public sealed class LoopbackCluster : IAsyncDisposable
{
    public static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    /// <summary>A process of the cluster with its cluster port and pbm endpoint.</summary>
    public sealed class Member
    {
        public required PoolerProcess Process { get; init; }
        public required int ClusterPort { get; init; }
        public required int PbmPort { get; init; }
        /// <summary>What pool rows and logs call the node (host:port of its cluster address).</summary>
        public string Name => $"127.0.0.1:{ClusterPort.ToString(CultureInfo.InvariantCulture)}";
        public string Address => $"akka.tcp://pooler@{Name}";
        /// <summary>Its pbm endpoint, as pbm takes it.</summary>
        public string Endpoint => $"127.0.0.1:{PbmPort.ToString(CultureInfo.InvariantCulture)}";
    }

    private LoopbackCluster(Member lighthouse, ITestOutputHelper output)
    {
        Lighthouse = lighthouse;
        Output = output;
    }

    public Member Lighthouse { get; }
    public ITestOutputHelper Output { get; }
    public string VipHost { get; } = $"127.{Random.Shared.Next(1, 255)}.{Random.Shared.Next(1, 255)}.{Random.Shared.Next(2, 254)}";
    public int VipPort { get; } = FreePort.Next();
    public List<Member> Nodes { get; } = new();

    /// <summary>Every line any process printed: the cluster leader logs membership changes.</summary>
    public IEnumerable<string> AllLines => Nodes.Append(Lighthouse).SelectMany(n => n.Process.OutputLines);

    /// <summary>Starts the Lighthouse (the seed) and waits until it is Up.</summary>
    public static async Task<LoopbackCluster> StartAsync(ITestOutputHelper output)
    {
        var seedPort = FreePort.Next();
        var lighthouse = new PoolerProcess("akka.cluster.roles = [\"lighthouse\"]\nakka.actor.provider = cluster\nakka.cluster.seed-nodes = []\n",
            extraEnv: new Dictionary<string, string?> { ["CLUSTER_IP"] = "127.0.0.1", ["CLUSTER_PORT"] = seedPort.ToString(CultureInfo.InvariantCulture) },
            program: PoolerProcess.LighthouseDll);
        try
        {
            lighthouse.Start();
            await lighthouse.WaitForOutputAsync(l => l.Contains("to [Up]", StringComparison.Ordinal), "the lighthouse is Up", StartTimeout);
            return new LoopbackCluster(new Member { Process = lighthouse, ClusterPort = seedPort, PbmPort = await lighthouse.PbmPortAsync(StartTimeout) }, output);
        }
        catch
        {
            output.WriteLine(lighthouse.OutputText);
            await lighthouse.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// A pooler node's config: <see cref="PoolerProcess.DefaultConfig"/> with <paramref name="settings"/> (more HOCON inside
    /// <c>pooler { }</c>), this cluster's VIP, its cluster port and the Lighthouse as seed.
    /// </summary>
    public string NodeConfig(PostgresFixture pg, int clusterPort, string settings = "") => PoolerProcess.DefaultConfig(pg, settings: $$"""
        {{settings}}
        vip { driver = bind, address = "{{VipHost}}", port = {{VipPort}}, lifetime = 3s }
        """) + $$"""

        akka.remote.dot-netty.tcp.port = {{clusterPort}}
        akka.cluster.seed-nodes = ["{{Lighthouse.Address}}"]
        """;

    /// <summary>Starts a pooler node and waits until the cluster sees it Up.</summary>
    /// <param name="clusterPort">Its cluster port (default: a free one).</param>
    public async Task<Member> StartNodeAsync(PostgresFixture pg, string settings = "", int? clusterPort = null)
    {
        var port = clusterPort ?? FreePort.Next();
        var process = await PoolerProcess.StartAsync(NodeConfig(pg, port, settings), timeout: StartTimeout);
        var node = new Member { Process = process, ClusterPort = port, PbmPort = await process.PbmPortAsync(StartTimeout) };
        Nodes.Add(node);
        await Eventually.True(() => AllLines.Any(l => l.Contains($"{node.Name}] to [Up]", StringComparison.Ordinal)),
            $"node {node.Name} is Up", StartTimeout);
        return node;
    }

    public static bool IsHoldingLine(string line) => line.Contains("holding the VIP", StringComparison.Ordinal);

    public async ValueTask DisposeAsync()
    {
        foreach (var (n, i) in Nodes.Append(Lighthouse).Select((n, i) => (n, i)))
            foreach (var l in n.Process.OutputLines.Where(l => l.Contains("vip", StringComparison.OrdinalIgnoreCase)
                || l.Contains("SBR", StringComparison.Ordinal) || l.Contains("nreachable", StringComparison.Ordinal)
                || l.Contains("drain", StringComparison.Ordinal) || l.Contains("[Down]", StringComparison.Ordinal)
                || l.StartsWith("[ERROR]", StringComparison.Ordinal)).TakeLast(40))
                Output.WriteLine($"[{(n == Lighthouse ? "lighthouse" : $"node{i + 1}")}] {l}");
        foreach (var n in Nodes) await n.Process.DisposeAsync();
        await Lighthouse.Process.DisposeAsync();
    }
}
