using System.Diagnostics;
using System.Globalization;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Cluster;

/// <summary>
/// The real VIP: network namespaces on a private subnet (a bridge, PostgreSQL, a Lighthouse, three pooler
/// nodes with the <c>linux</c> driver, a client), nothing routed out. A sampler reads every node's eth0
/// every 50 ms for the whole test and fails it if two ever hold the VIP. Faults, each repeated
/// (POOLER_VIP_TRIALS, 2 by default; 10 for the long mode): kill -9 of the owner, SIGSTOP of the owner
/// for 15 s, a partition that cuts the owner off, and SIGTERM; each timed from the fault to the first
/// new connection that works through the VIP. During the first kill -9 a writer inserts rows with its
/// own ids through the VIP: every acknowledged one must be there afterwards, and nothing it never sent.
/// </summary>
[Collection(PostgresCollection.Name)] // runs alone beside the other process-heavy tests
public sealed class VipFailoverNetnsTests(ITestOutputHelper output)
{
    private const string Vip = "10.231.0.250";
    private const int VipPort = 6432;

    private sealed class Node(string ns, int host)
    {
        public string Ns { get; } = ns;
        public int Host { get; } = host;
        public PoolerProcess? Process { get; set; }
        public string Name => $"n{Host - 10}";
    }

    private static int Trials => int.TryParse(Environment.GetEnvironmentVariable("POOLER_VIP_TRIALS"), out var n) && n > 0 ? n : 2;

    [Fact]
    public async Task The_vip_survives_crashes_pauses_partitions_and_stops_and_is_never_held_twice()
    {
        if (!NetNs.Available)
        {
            output.WriteLine("not run: needs root and iproute2 (CI runs as root)");
            return;
        }
        using var net = new NetNs();
        var pgNs = net.Member("pg", 2);
        var lhNs = net.Member("lh", 3);
        var nodes = new[] { new Node(net.Member("n1", 11), 11), new Node(net.Member("n2", 12), 12), new Node(net.Member("n3", 13), 13) };
        var clientNs = net.Member("cl", 50);

        using var pg = PostgresServer.Create(new PostgresServerOptions
        {
            MaxConnections = 200,
            Settings = new Dictionary<string, string> { ["listen_addresses"] = $"'{net.Subnet}.2'" },
            HbaLines = ["local all all trust", $"host all all {net.Subnet}.0/24 trust"],
        });
        ProcessRunner.Run("ip", ["netns", "exec", pgNs, "runuser", "-u", ProcessRunner.ServiceUser, "--",
            Path.Combine(pg.BinDir, "pg_ctl"), "start", "-w", "-t", "60", "-D", pg.DataDir, "-l", pg.LogFile, "-s"],
            timeout: TimeSpan.FromSeconds(90)).EnsureSuccess("pg_ctl start in its namespace");
        try
        {
            await using (var c = await OpenOverSocketAsync(pg))
            await using (var cmd = new NpgsqlCommand("create table written (id bigint primary key)", c))
                await cmd.ExecuteNonQueryAsync();

            await using var lighthouse = new PoolerProcess("akka.actor.provider = cluster\nakka.cluster.roles = [\"lighthouse\"]\nakka.cluster.seed-nodes = []\n",
                extraEnv: new Dictionary<string, string?> { ["CLUSTER_IP"] = $"{net.Subnet}.3", ["CLUSTER_PORT"] = "4053" },
                program: PoolerProcess.LighthouseDll, netns: lhNs);
            lighthouse.Start();
            await lighthouse.WaitForOutputAsync(l => l.Contains("to [Up]", StringComparison.Ordinal), "the lighthouse is Up", TimeSpan.FromSeconds(60));

            try
            {
                foreach (var n in nodes) await StartNodeAsync(n, net, pg.Port);
                await Eventually.True(() => Holder(nodes) is not null && WorksAsync(clientNs).Result, "one node holds the VIP and it answers", TimeSpan.FromSeconds(60));

                using var sampler = new OverlapSampler(nodes.Select(n => n.Ns).ToArray());
                var times = new Dictionary<string, List<double>>();
                void Record(string fault, TimeSpan t)
                {
                    (times.TryGetValue(fault, out var l) ? l : times[fault] = new List<double>()).Add(t.TotalMilliseconds);
                    output.WriteLine($"{fault}: VIP working again after {t.TotalMilliseconds:F0} ms");
                }

                for (var trial = 1; trial <= Trials; trial++)
                {
                    // kill -9 (the first time under a write load)
                    var owner = Holder(nodes)!;
                    using (var writer = trial == 1 ? new Writer(clientNs) : null)
                    {
                        if (writer is not null) await writer.WaitForAcksAsync(20);
                        owner.Process!.Kill();
                        Record("kill -9", await TimeToWorkingVipAsync(clientNs, nodes, owner));
                        if (writer is not null)
                        {
                            var before = writer.Acked.Count;
                            await Eventually.True(() => writer.Acked.Count >= before + 20, "the writer goes on through the new owner", TimeSpan.FromSeconds(30));
                            writer.Stop();
                            await CheckNoAcknowledgedWriteLostAsync(pg, writer);
                        }
                    }
                    await owner.Process!.DisposeAsync();
                    await StartNodeAsync(owner, net, pg.Port);

                    // SIGSTOP for 15 s: the kernel drops its address, the others take over; on SIGCONT it must not take it back
                    owner = Holder(nodes)!;
                    Assert.True(owner.Process!.Signal(19));
                    var stopped = Stopwatch.StartNew();
                    Record("SIGSTOP", await TimeToWorkingVipAsync(clientNs, nodes, owner));
                    await Task.Delay(TimeSpan.FromSeconds(15) - stopped.Elapsed is { Ticks: > 0 } rest ? rest : TimeSpan.Zero);
                    Assert.True(owner.Process!.Signal(18));
                    // downed while frozen: it learns it was removed and exits; meanwhile the sampler watches for a comeback
                    await owner.Process.WaitForExitAsync(TimeSpan.FromSeconds(60));
                    Assert.False(NetNs.HasAddress(owner.Ns, Vip));
                    await owner.Process.DisposeAsync();
                    await StartNodeAsync(owner, net, pg.Port);

                    // partition: the owner's link goes down; the majority moves the VIP; heal
                    owner = Holder(nodes)!;
                    net.SetLink(owner.Ns, up: false);
                    Record("partition", await TimeToWorkingVipAsync(clientNs, nodes, owner));
                    net.SetLink(owner.Ns, up: true);
                    await owner.Process!.WaitForExitAsync(TimeSpan.FromSeconds(60));
                    await owner.Process.DisposeAsync();
                    await StartNodeAsync(owner, net, pg.Port);

                    // graceful: new connections keep working (a SYN sent while the address moves is retransmitted and
                    // reaches the new holder). A connection already open on the old holder when it lets go is cut, as
                    // with any address takeover: only connections begun after the release must all succeed.
                    owner = Holder(nodes)!;
                    using (var probing = new CancellationTokenSource())
                    {
                        var attempts = new System.Collections.Concurrent.ConcurrentQueue<(TimeSpan Start, bool Ok)>();
                        var clock = Stopwatch.StartNew();
                        var prober = Task.Run(async () =>
                        {
                            while (!probing.IsCancellationRequested)
                            {
                                var start = clock.Elapsed;
                                attempts.Enqueue((start, await WorksAsync(clientNs, connectTimeout: 5)));
                            }
                        });
                        await Eventually.True(() => attempts.Count >= 3, "the prober runs");
                        var term = clock.Elapsed;
                        Assert.True(owner.Process!.Terminate());
                        Record("SIGTERM", await TimeToWorkingVipAsync(clientNs, nodes, owner));
                        await owner.Process.WaitForOutputAsync(l => l.Contains("released the VIP", StringComparison.Ordinal), "the old holder let go", TimeSpan.FromSeconds(10));
                        var released = clock.Elapsed; // at or after the release: the line is read after it was printed
                        var after = attempts.Count;
                        await Eventually.True(() => attempts.Count >= after + 2, "the prober goes on after the hand-over");
                        probing.Cancel();
                        await prober;
                        var all = attempts.ToList();
                        var late = all.Where(a => a.Start > released).ToList();
                        output.WriteLine($"SIGTERM: {all.Count} new connections tried around the hand-over, {all.Count(a => !a.Ok)} failed " +
                            $"({all.Count(a => !a.Ok && a.Start < released && a.Start > term)} begun between SIGTERM and the release); {late.Count} begun after the release, {late.Count(a => !a.Ok)} failed");
                        Assert.Equal(0, late.Count(a => !a.Ok));
                    }
                    Assert.Equal(0, await owner.Process.WaitForExitAsync(TimeSpan.FromSeconds(60)));
                    await owner.Process.DisposeAsync();
                    await StartNodeAsync(owner, net, pg.Port);
                }

                sampler.Stop();
                foreach (var (fault, list) in times)
                {
                    list.Sort();
                    output.WriteLine($"{fault}: {list.Count} trials, p50 {list[list.Count / 2]:F0} ms, max {list[^1]:F0} ms");
                }
                output.WriteLine($"sampler: {sampler.Samples} samples of {nodes.Length} nodes, {sampler.Overlaps} with two holders");
                foreach (var seen in sampler.Seen) output.WriteLine($"sampler: two holders at {seen}");
                Assert.Equal(0, sampler.Overlaps);
                Assert.True(sampler.Samples > 100, $"{sampler.Samples} samples");
                // targets: crash <= 5 s, graceful <= 1 s; allow for CI running other test processes beside this one
                foreach (var fault in new[] { "kill -9", "SIGSTOP", "partition" })
                    Assert.True(times[fault].Max() < 8000, $"{fault}: {times[fault].Max():F0} ms (target 5 s)");
                Assert.True(times["SIGTERM"].Max() < 3000, $"SIGTERM: {times["SIGTERM"].Max():F0} ms (target 1 s)");
            }
            finally
            {
                foreach (var n in nodes)
                {
                    if (n.Process is not { } p) continue;
                    foreach (var l in p.OutputLines.Where(Explains).TakeLast(25)) output.WriteLine($"[{n.Name}] {l}");
                    await p.DisposeAsync();
                }
                foreach (var l in lighthouse.OutputLines.Where(Explains).TakeLast(25)) output.WriteLine($"[lighthouse] {l}");
            }
        }
        finally
        {
            pg.Stop();
        }
    }

    private static bool Explains(string line)
        => line.Contains("vip", StringComparison.OrdinalIgnoreCase) || line.Contains("SBR", StringComparison.Ordinal)
            || line.Contains("nreachable", StringComparison.Ordinal) || line.Contains("[Down]", StringComparison.Ordinal)
            || line.Contains("removed", StringComparison.OrdinalIgnoreCase);

    private async Task StartNodeAsync(Node n, NetNs net, int pgPort)
    {
        var ip = $"{net.Subnet}.{n.Host}";
        var config = $$"""
            pooler {
              listen { host = "{{ip}}", port = 6432 }
              auth { type = trust }
              pool-mode = transaction
              default-pool-size = 5
              max-client-conn = 500
              shutdown-timeout = 2s
              databases { postgres { host = "{{net.Subnet}}.2", port = {{pgPort}}, dbname = "postgres", user = "postgres" } }
              vip { driver = linux, address = "{{Vip}}/24", interface = "eth0", port = {{VipPort}}, lifetime = 3s, arping-command = "{{NetNs.Arping}}" }
            }
            akka.remote.dot-netty.tcp { hostname = "{{ip}}", port = 4053 }
            akka.cluster.seed-nodes = ["akka.tcp://pooler@{{net.Subnet}}.3:4053"]
            """;
        var p = new PoolerProcess(config, netns: n.Ns);
        n.Process = p;
        p.Start();
        await p.WaitForOutputAsync(l => l.Contains("listening on", StringComparison.Ordinal), $"{n.Name} listens", TimeSpan.FromSeconds(60));
        await p.WaitForOutputAsync(l => l.Contains("ClusterSingletonManager state change [Start ->", StringComparison.Ordinal), $"{n.Name} joined", TimeSpan.FromSeconds(60));
    }

    private static Node? Holder(Node[] nodes) => nodes.FirstOrDefault(n => NetNs.HasAddress(n.Ns, Vip));

    /// <summary>One psql run of <paramref name="sql"/> on a new connection through the VIP, from the client's namespace.</summary>
    private static Task<ProcessResult> PsqlThroughVipAsync(string clientNs, string sql, int connectTimeout = 2)
        => ProcessRunner.RunAsync("ip", ["netns", "exec", clientNs, Path.Combine(PostgresServer.FindBinDir(), "psql"),
            "-h", Vip, "-p", VipPort.ToString(CultureInfo.InvariantCulture), "-U", "postgres", "-d", "postgres", "-Atc", sql],
            environment: new Dictionary<string, string?> { ["PGCONNECT_TIMEOUT"] = connectTimeout.ToString(CultureInfo.InvariantCulture) },
            timeout: TimeSpan.FromSeconds(connectTimeout + 10));

    /// <summary>A new connection through the VIP answers (psql, 2 s connect timeout unless given).</summary>
    private static async Task<bool> WorksAsync(string clientNs, int connectTimeout = 2)
    {
        var r = await PsqlThroughVipAsync(clientNs, "select 1", connectTimeout);
        return r.ExitCode == 0 && r.StdOut.Trim() == "1";
    }

    /// <summary>A loop on the thread pool until <see cref="Stop"/> (or Dispose), bounded by its own body.</summary>
    private abstract class BackgroundLoop : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private Task _loop = Task.CompletedTask;

        protected CancellationToken Stopping => _stop.Token;

        protected void Run(Func<Task> body) => _loop = Task.Run(body);

        public void Stop()
        {
            _stop.Cancel();
            _loop.Wait(TimeSpan.FromSeconds(30));
        }

        public void Dispose()
        {
            if (!_loop.IsCompleted) Stop();
            _stop.Dispose();
        }
    }

    private static async Task<TimeSpan> TimeToWorkingVipAsync(string clientNs, Node[] nodes, Node old)
    {
        var watch = Stopwatch.StartNew();
        await Eventually.True(async () => Holder(nodes) is { } h && h != old && await WorksAsync(clientNs),
            "another node holds the VIP and it answers", TimeSpan.FromSeconds(45), TimeSpan.FromMilliseconds(20));
        return watch.Elapsed;
    }

    private static async Task<NpgsqlConnection> OpenOverSocketAsync(PostgresServer pg)
    {
        var c = new NpgsqlConnection(new NpgsqlConnectionStringBuilder { Host = pg.SocketDir, Port = pg.Port, Username = "postgres", Database = "postgres", Pooling = false }.ConnectionString);
        await c.OpenAsync();
        return c;
    }

    private async Task CheckNoAcknowledgedWriteLostAsync(PostgresServer pg, Writer writer)
    {
        var present = new HashSet<long>();
        await using (var c = await OpenOverSocketAsync(pg))
        await using (var cmd = new NpgsqlCommand("select id from written", c))
        await using (var r = await cmd.ExecuteReaderAsync())
            while (await r.ReadAsync()) present.Add(r.GetInt64(0));
        var acked = writer.Acked;
        output.WriteLine($"writer: {writer.Sent} sent, {acked.Count} acknowledged, {present.Count} in the table");
        var lost = acked.Where(id => !present.Contains(id)).ToList();
        Assert.True(lost.Count == 0, $"acknowledged but not in the table: {string.Join(", ", lost)}");
        var invented = present.Where(id => id < 1 || id > writer.Sent).ToList();
        Assert.True(invented.Count == 0, $"in the table but never sent: {string.Join(", ", invented)}");
    }

    /// <summary>Inserts 1, 2, 3... through the VIP, one psql per row from the client's namespace; an id is acknowledged when psql exits 0.</summary>
    private sealed class Writer : BackgroundLoop
    {
        private readonly List<long> _acked = new();
        private long _sent;

        public Writer(string ns) => Run(async () =>
        {
            for (long id = 1; id <= 20_000 && !Stopping.IsCancellationRequested; id++)
            {
                Interlocked.Exchange(ref _sent, id);
                var r = await PsqlThroughVipAsync(ns, $"insert into written values ({id})");
                if (r.ExitCode == 0) lock (_acked) _acked.Add(id);
            }
        });

        public long Sent => Interlocked.Read(ref _sent);

        public List<long> Acked { get { lock (_acked) return _acked.ToList(); } }

        public Task WaitForAcksAsync(int n) => Eventually.True(() => Acked.Count >= n, $"{n} writes acknowledged", TimeSpan.FromSeconds(60));
    }

    /// <summary>Reads every node's eth0 every 50 ms and counts the samples where more than one holds the VIP.</summary>
    private sealed class OverlapSampler : BackgroundLoop
    {
        private int _samples;
        private int _overlaps;

        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _seen = new();

        public OverlapSampler(string[] namespaces) => Run(async () =>
        {
            while (!Stopping.IsCancellationRequested)
            {
                var holders = namespaces.Where(ns => NetNs.HasAddress(ns, Vip)).ToList();
                Interlocked.Increment(ref _samples);
                if (holders.Count > 1)
                {
                    Interlocked.Increment(ref _overlaps);
                    _seen.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} UTC: {string.Join(" and ", holders)}");
                }
                try { await Task.Delay(50, Stopping); } catch (OperationCanceledException) { }
            }
        });

        public int Samples => Volatile.Read(ref _samples);
        public int Overlaps => Volatile.Read(ref _overlaps);
        /// <summary>When each overlap was seen (the sample's end) and in which namespaces, for the nodes' logs.</summary>
        public IEnumerable<string> Seen => _seen;
    }
}
