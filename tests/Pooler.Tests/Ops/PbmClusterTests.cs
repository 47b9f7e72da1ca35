using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

using Node = Pooler.Tests.Infrastructure.LoopbackCluster.Member;

namespace Pooler.Tests.Ops;

/// <summary>
/// The real pbm (<c>dotnet pbm.dll HOST:PORT ...</c>) against a running cluster of processes on loopback: a
/// Lighthouse and pooler nodes with the <c>bind</c> VIP driver, as in ClusterProcessTests. Every palette's
/// commands, their effect on clients, the VIP and membership, and the exit codes 0 (done), 1 (command error)
/// and 2 (unreachable). Not tested: refusing a non-local connection (every address here is loopback).
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class PbmClusterTests(PostgresFixture pg, ITestOutputHelper output)
{
    private static readonly TimeSpan StartTimeout = LoopbackCluster.StartTimeout;
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);
    private const string ReloadDb = "reload_db";

    private static string PbmDll => Path.Combine(AppContext.BaseDirectory, "pbm.dll");

    /// <summary>The nodes log in with trust, so the raw clients below need no password exchange.</summary>
    private const string Trust = "auth.type = trust";

    private Task<Node> StartNodeAsync(LoopbackCluster cluster) => cluster.StartNodeAsync(pg, Trust);

    /// <summary>Two pooler nodes; the first (the oldest) holds the VIP and a client gets through it.</summary>
    private async Task<(Node First, Node Second)> StartTwoNodesAsync(LoopbackCluster cluster)
    {
        var first = await StartNodeAsync(cluster);
        await first.Process.WaitForOutputAsync(LoopbackCluster.IsHoldingLine, "the first node holds the VIP", StartTimeout);
        var second = await StartNodeAsync(cluster);
        await Eventually.True(() => WorksAsync(cluster), "a client gets through the VIP", Limit);
        return (first, second);
    }

    private static int Holdings(Node node) => node.Process.OutputLines.Count(LoopbackCluster.IsHoldingLine);

    private async Task<bool> WorksAsync(LoopbackCluster c)
    {
        var cs = new NpgsqlConnectionStringBuilder(pg.ConnectionString(PostgresFixture.ScramUser)) { Host = c.VipHost, Port = c.VipPort, Pooling = false, Timeout = 3 };
        try
        {
            await using var conn = new NpgsqlConnection(cs.ConnectionString);
            await conn.OpenAsync();
            return await ScalarAsync(conn, "select 1") == 1;
        }
        catch (Exception e) when (e is NpgsqlException or System.Net.Sockets.SocketException or TimeoutException or InvalidOperationException)
        {
            return false;
        }
    }

    private static async Task<long> ScalarAsync(NpgsqlConnection conn, string sql)
    {
        await using var cmd = new NpgsqlCommand(sql, conn);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
    }

    private async Task<NpgsqlConnection> OpenAsync(Node node, string database = PostgresFixture.Database)
    {
        var conn = await node.Process.OpenAsync(pg, database: database);
        Assert.Equal(1, await ScalarAsync(conn, "select 1"));
        return conn;
    }

    // ---------------- pbm ----------------

    /// <summary>One pbm command against <paramref name="endpoint"/>; its output goes to the test's output.</summary>
    private async Task<ProcessResult> PbmAsync(string endpoint, params string[] args)
    {
        var r = await ProcessRunner.RunAsync(PoolerProcess.DotnetExecutable, [PbmDll, endpoint, .. args], timeout: TimeSpan.FromSeconds(60));
        output.WriteLine($"$ pbm {endpoint} {string.Join(' ', args)}   (exit {r.ExitCode})\n{r.StdOut}{r.StdErr}");
        return r;
    }

    /// <summary>A pbm command that must succeed (exit 0); its stdout.</summary>
    private async Task<string> OkAsync(string endpoint, params string[] args)
    {
        var r = await PbmAsync(endpoint, args);
        Assert.True(r.ExitCode == 0, $"pbm {string.Join(' ', args)} exited {r.ExitCode}: {r.StdOut}{r.StdErr}");
        Assert.Equal("", r.StdErr);
        return r.StdOut;
    }

    /// <summary>A pbm command that must fail on the node (exit 1); its stdout and stderr.</summary>
    private async Task<string> FailsAsync(string endpoint, params string[] args)
    {
        var r = await PbmAsync(endpoint, args);
        Assert.True(r.ExitCode == 1, $"pbm {string.Join(' ', args)} exited {r.ExitCode}, not 1: {r.StdOut}{r.StdErr}");
        Assert.StartsWith("pbm: ", r.StdErr);
        return r.StdOut + r.StdErr;
    }

    private async Task<JsonElement> JsonAsync(string endpoint, params string[] args)
    {
        using var doc = JsonDocument.Parse(await OkAsync(endpoint, [.. args, "--json"]));
        return doc.RootElement.Clone();
    }

    private static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToArray();

    private static string[] Cells(string line) => line.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    private static string Str(JsonElement e, string name) => e.GetProperty(name).GetString() ?? "";

    /// <summary>The addresses <c>cluster show --json</c> lists.</summary>
    private async Task<List<string>> MembersAsync(Node at)
        => (await JsonAsync(at.Endpoint, "cluster", "show")).GetProperty("members").EnumerateArray().Select(m => Str(m, "address")).ToList();

    private async Task<string> VipHolderAsync(Node at) => Str(await JsonAsync(at.Endpoint, "vip", "show"), "holder");

    /// <summary>A pbm that keeps running: <c>cluster tail</c>, or an interactive session fed on stdin.</summary>
    private sealed class LivePbm : IDisposable
    {
        private readonly Process _process;
        private readonly List<string> _lines = new();

        public LivePbm(params string[] args)
        {
            var psi = ProcessRunner.CreateStartInfo(PoolerProcess.DotnetExecutable, [PbmDll, .. args]);
            psi.RedirectStandardOutput = true;
            psi.RedirectStandardError = true;
            psi.RedirectStandardInput = true;
            _process = new Process { StartInfo = psi };
            _process.OutputDataReceived += (_, e) => { if (e.Data != null) lock (_lines) _lines.Add(e.Data); };
            _process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_lines) _lines.Add("stderr: " + e.Data); };
            _process.Start();
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
        }

        public string[] Lines { get { lock (_lines) return _lines.ToArray(); } }

        public async Task<string> WaitForLineAsync(Func<string, bool> match, string what)
            => (await Eventually.Value(() => Lines.FirstOrDefault(match), l => l != null, $"pbm printed {what}; it printed:\n{string.Join('\n', Lines)}", Limit))!;

        public async Task SendAsync(string line)
        {
            await _process.StandardInput.WriteLineAsync(line);
            await _process.StandardInput.FlushAsync();
        }

        public void CloseInput() => _process.StandardInput.Close();

        /// <summary>SIGINT, as Ctrl-C.</summary>
        public bool Interrupt() => ProcessRunner.Signal(_process.Id, ProcessRunner.SigInt);

        public async Task<int> WaitForExitAsync()
        {
            using var cts = new CancellationTokenSource(Limit);
            await _process.WaitForExitAsync(cts.Token);
            return _process.ExitCode;
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                try { _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                _process.WaitForExit(5000);
            }
            _process.Dispose();
        }
    }

    // ---------------- the tests ----------------

    [Fact]
    public async Task Cluster_pool_vip_and_node_commands_on_a_lighthouse_and_two_nodes()
    {
        await using var cluster = await LoopbackCluster.StartAsync(output);
        var (first, second) = await StartTwoNodesAsync(cluster);
        var lighthouse = cluster.Lighthouse;
        Node[] everyone = [lighthouse, first, second];

        // cluster show, from every process: each member Up with its roles, the first node holding the VIP
        foreach (var at in everyone)
        {
            await Eventually.Succeeds(async () =>
            {
                var lines = Lines(await OkAsync(at.Endpoint, "cluster", "show"));
                Assert.Equal(new[] { "MEMBER", "STATUS", "ROLES", "REACHABLE", "LEADER", "VIP" }, Cells(lines[0]));
                Assert.Equal(4, lines.Length);
                foreach (var n in everyone)
                {
                    var cells = Cells(Assert.Single(lines, l => l.StartsWith(n.Address + " ", StringComparison.Ordinal)));
                    Assert.Equal("Up", cells[1]);
                    Assert.Equal(n == lighthouse ? "lighthouse" : "pooler", cells[2]);
                    Assert.Equal("yes", cells[3]);
                    Assert.Equal(n == first, lines.Single(l => l.StartsWith(n.Address + " ", StringComparison.Ordinal)).EndsWith("holds VIP", StringComparison.Ordinal));
                }
            }, $"cluster show on {at.Endpoint}", Limit);
        }
        var shown = await JsonAsync(second.Endpoint, "cluster", "show");
        var members = shown.GetProperty("members").EnumerateArray().ToList();
        Assert.Equal(3, members.Count);
        foreach (var n in everyone)
        {
            var m = Assert.Single(members, m => Str(m, "address") == n.Address);
            Assert.Equal("Up", Str(m, "status"));
            Assert.Equal(new[] { n == lighthouse ? "lighthouse" : "pooler" }, m.GetProperty("roles").EnumerateArray().Select(r => r.GetString()).ToArray());
            Assert.True(m.GetProperty("reachable").GetBoolean());
        }
        Assert.Equal(first.Address, Str(shown.GetProperty("vip"), "holder"));
        Assert.Equal(cluster.VipHost, Str(shown.GetProperty("vip"), "address"));
        var leader = Str(Assert.Single(members, m => m.GetProperty("leader").GetBoolean()), "address");

        // cluster leader and status: every process names the same leader
        foreach (var at in everyone)
            Assert.Equal(leader, Lines(await OkAsync(at.Endpoint, "cluster", "leader")).Single());
        Assert.Equal($"{first.Address} is Up; 3 members, 0 unreachable", Lines(await OkAsync(first.Endpoint, "cluster", "status")).Single());
        var status = await JsonAsync(lighthouse.Endpoint, "cluster", "status");
        Assert.Equal(lighthouse.Address, Str(status, "self"));
        Assert.Equal("Up", Str(status, "status"));
        Assert.Equal(3, status.GetProperty("members").GetInt32());

        // clients on each node's own port: pooler_test on both, other_db on the first only
        await using var c1 = await OpenAsync(first);
        await using var c2 = await OpenAsync(second);
        await using var c3 = await OpenAsync(first, PostgresFixture.OtherDatabase);

        // pool show: the cluster's sum per pool, then each node's share
        await Eventually.Succeeds(async () =>
        {
            var lines = Lines(await OkAsync(second.Endpoint, "pool", "show"));
            Assert.Equal("NODE", Cells(lines[0])[0]);
            Assert.Equal("CL_ACTIVE", Cells(lines[0])[3]);
            string[] Row(string node, string db) => Cells(Assert.Single(lines, l => Cells(l)[0] == node && Cells(l)[1] == db));
            Assert.Equal("2", Row("(cluster)", PostgresFixture.Database)[3]);
            Assert.Equal("1", Row(first.Name, PostgresFixture.Database)[3]);
            Assert.Equal("1", Row(second.Name, PostgresFixture.Database)[3]);
            Assert.Equal("1", Row("(cluster)", PostgresFixture.OtherDatabase)[3]);
            Assert.Equal("1", Row(first.Name, PostgresFixture.OtherDatabase)[3]);
            Assert.DoesNotContain(lines, l => Cells(l)[0] == second.Name && Cells(l)[1] == PostgresFixture.OtherDatabase);
            Assert.All(lines.Where(l => Cells(l)[0] != "(cluster)" && Cells(l)[0] != "NODE"), l => Assert.StartsWith("  ", l));
        }, "pool show sums both nodes", Limit);
        var pools = await JsonAsync(lighthouse.Endpoint, "pool", "show");
        var nodes = pools.GetProperty("nodes").EnumerateArray().ToList();
        Assert.Equal(new[] { first.Name, second.Name }.Order(), nodes.Select(n => Str(n, "node")).Order());
        foreach (var n in nodes)
        {
            var p = Assert.Single(n.GetProperty("pools").EnumerateArray(), p => Str(p.GetProperty("info"), "database") == PostgresFixture.Database);
            Assert.Equal(1, p.GetProperty("cl_active").GetInt32());
            Assert.Equal(PostgresFixture.ScramUser, Str(p.GetProperty("info"), "user"));
        }

        // pool stats: a row per node with the transactions it ran
        await Eventually.Succeeds(async () =>
        {
            var lines = Lines(await OkAsync(first.Endpoint, "pool", "stats"));
            Assert.Equal("XACTS", Cells(lines[0])[2]);
            foreach (var node in new[] { "(cluster)", first.Name, second.Name })
                Assert.True(long.Parse(Cells(Assert.Single(lines, l => Cells(l)[0] == node && Cells(l)[1] == PostgresFixture.Database))[2], CultureInfo.InvariantCulture) >= 1);
        }, "pool stats counts transactions on both nodes", Limit);

        // pool clients and servers: the rows of both nodes
        await Eventually.Succeeds(async () =>
        {
            var clients = (await JsonAsync(lighthouse.Endpoint, "pool", "clients")).EnumerateArray().ToList();
            Assert.Equal(2, clients.Count(c => Str(c, "node") == first.Name));
            Assert.Equal(PostgresFixture.Database, Str(Assert.Single(clients, c => Str(c, "node") == second.Name), "database"));
            Assert.Contains(clients, c => Str(c, "node") == first.Name && Str(c, "database") == PostgresFixture.OtherDatabase);
        }, "pool clients lists both nodes' clients", Limit);
        var clientLines = Lines(await OkAsync(second.Endpoint, "pool", "clients"));
        Assert.Equal(2, clientLines.Count(l => Cells(l)[0] == first.Name));
        Assert.Single(clientLines, l => Cells(l)[0] == second.Name && Cells(l)[1] == PostgresFixture.ScramUser);
        var serverLines = Lines(await OkAsync(first.Endpoint, "pool", "servers"));
        Assert.Equal("BACKEND_PID", Cells(serverLines[0])[^1]);
        Assert.Contains(serverLines, l => Cells(l)[0] == first.Name && Cells(l)[2] == PostgresFixture.Database);
        Assert.Contains(serverLines, l => Cells(l)[0] == second.Name && Cells(l)[2] == PostgresFixture.Database);

        // pool pause on every node: the next transaction of a client of either node waits until pool resume
        var paused = await OkAsync(second.Endpoint, "pool", "pause");
        Assert.Contains($"{first.Address}: every pool paused", paused);
        Assert.Contains($"{second.Address}: every pool paused", paused);
        var q1 = ScalarAsync(c1, "select 11");
        var q2 = ScalarAsync(c2, "select 12");
        var pausedShow = Lines(await OkAsync(first.Endpoint, "pool", "show"));
        Assert.All(pausedShow.Skip(1), l => Assert.Equal("yes", Cells(l)[^1]));
        await Task.Delay(1000);
        Assert.False(q1.IsCompleted, "a client of the first node ran a transaction while paused");
        Assert.False(q2.IsCompleted, "a client of the second node ran a transaction while paused");
        var resumed = await OkAsync(first.Endpoint, "pool", "resume");
        Assert.Contains($"{second.Address}: every pool resumed", resumed);
        Assert.Equal(11, await q1.WaitAsync(Limit));
        Assert.Equal(12, await q2.WaitAsync(Limit));
        Assert.All(Lines(await OkAsync(first.Endpoint, "pool", "show")).Skip(1), l => Assert.Equal("no", Cells(l)[^1]));

        // pool reconnect: the first node's client gets a new server connection
        var pid = await ScalarAsync(c1, "select pg_backend_pid()");
        Assert.Equal(pid, await ScalarAsync(c1, "select pg_backend_pid()"));
        var reconnect = await OkAsync(lighthouse.Endpoint, "pool", "reconnect");
        Assert.Contains(first.Address, reconnect);
        Assert.Contains(second.Address, reconnect);
        await Eventually.True(async () => await ScalarAsync(c1, "select pg_backend_pid()") != pid, "a new server connection after reconnect", Limit);

        // pool reload: a database added to the second node's file is served there after the reload, not on the first
        var reloadCs = (Node n) => n.Process.ConnectionString(pg, database: ReloadDb);
        await Assert.ThrowsAnyAsync<NpgsqlException>(async () => { await using var c = new NpgsqlConnection(reloadCs(second)); await c.OpenAsync(); });
        second.Process.WriteConfig(cluster.NodeConfig(pg, second.ClusterPort,
            Trust + "\n" + $"databases.{ReloadDb} {{ host = \"127.0.0.1\", port = {pg.Port}, dbname = \"{PostgresFixture.Database}\" }}"));
        var reload = await OkAsync(first.Endpoint, "pool", "reload");
        Assert.Contains($"{first.Address}: configuration reloaded", reload);
        Assert.Contains($"{second.Address}: configuration reloaded", reload);
        await using (var reloaded = new NpgsqlConnection(reloadCs(second)))
        {
            await reloaded.OpenAsync();
            await using var cmd = new NpgsqlCommand("select current_database()", reloaded);
            Assert.Equal(PostgresFixture.Database, await cmd.ExecuteScalarAsync());
        }
        await Assert.ThrowsAnyAsync<NpgsqlException>(async () => { await using var c = new NpgsqlConnection(reloadCs(first)); await c.OpenAsync(); });

        // pool kill: pooler_test's clients are closed on both nodes, other_db's client is not
        Assert.Contains("usage: pool kill <db>", await FailsAsync(first.Endpoint, "pool", "kill"));
        Assert.Contains("no such database: nope", await FailsAsync(first.Endpoint, "pool", "kill", "nope"));
        var killed = await OkAsync(second.Endpoint, "pool", "kill", PostgresFixture.Database);
        Assert.Contains(first.Address, killed);
        Assert.Contains(second.Address, killed);
        foreach (var c in new[] { c1, c2 })
        {
            // closed, not waiting: a paused pool would hold the query until the 30 s command timeout
            var e = await Record.ExceptionAsync(() => ScalarAsync(c, "select 1").WaitAsync(TimeSpan.FromSeconds(15)));
            Assert.NotNull(e);
            Assert.IsNotType<TimeoutException>(e);
        }
        Assert.Equal(1, await ScalarAsync(c3, "select 1"));
        var afterKill = (await JsonAsync(first.Endpoint, "pool", "clients")).EnumerateArray().ToList();
        Assert.DoesNotContain(afterKill, c => Str(c, "database") == PostgresFixture.Database);
        Assert.Contains(afterKill, c => Str(c, "database") == PostgresFixture.OtherDatabase);
        await OkAsync(first.Endpoint, "pool", "resume", PostgresFixture.Database);
        Assert.Contains("is not paused", await FailsAsync(first.Endpoint, "pool", "resume", PostgresFixture.Database));
        await using (var again = await OpenAsync(second)) { }

        // vip show, then vip move (asked of the Lighthouse) to the second node
        var vip = Lines(await OkAsync(second.Endpoint, "vip", "show"));
        Assert.Contains($"address:     {cluster.VipHost}", vip);
        Assert.Contains("driver:      bind", vip);
        Assert.Contains($"holder:      {first.Address}", vip);
        Assert.Contains("no member at 127.0.0.1:1", await FailsAsync(lighthouse.Endpoint, "vip", "move", "127.0.0.1:1"));
        Assert.Contains("is not an Up, reachable pooler node", await FailsAsync(first.Endpoint, "vip", "move", lighthouse.Name));
        var held = Holdings(second);
        Assert.Equal($"the VIP is moving to {second.Address}", Lines(await OkAsync(lighthouse.Endpoint, "vip", "move", second.Name)).Single());
        await second.Process.WaitForOutputAsync(l => LoopbackCluster.IsHoldingLine(l) && Holdings(second) > held, "the second node holds the VIP", Limit);
        Assert.Contains(first.Process.OutputLines, l => l.Contains("released the VIP", StringComparison.Ordinal));
        await Eventually.True(async () => await VipHolderAsync(first) == second.Address, "vip show names the second node", Limit);
        await Eventually.True(() => WorksAsync(cluster), "a client gets through the VIP on the second node", Limit);

        // node status
        var node = Lines(await OkAsync(first.Endpoint, "node", "status"));
        Assert.Contains($"node:      {first.Name}", node);
        Assert.Contains($"address:   {first.Address}", node);
        Assert.Contains("roles:     pooler", node);
        Assert.Contains("draining:  no", node);
        Assert.Contains("backend:   reachable", node);
        var nodeJson = await JsonAsync(first.Endpoint, "node", "status");
        Assert.Equal(first.Name, Str(nodeJson, "node"));
        Assert.False(nodeJson.GetProperty("draining").GetBoolean());
        Assert.True(nodeJson.GetProperty("backend_reachable").GetBoolean());
        Assert.True(nodeJson.GetProperty("clients").GetInt32() >= 1, "the other_db client is on the first node");

        // node drain of the VIP holder: the VIP comes back to the first node, the second exits 0 and is gone
        held = Holdings(first);
        Assert.Contains("draining", await OkAsync(second.Endpoint, "node", "drain"));
        await Eventually.True(() => Holdings(first) > held, "the first node holds the VIP again", Limit);
        Assert.Equal(0, await second.Process.WaitForExitAsync(Limit));
        await Eventually.True(async () => !(await MembersAsync(first)).Contains(second.Address), "cluster show no longer lists the drained node", Limit);
        Assert.Equal(first.Address, await VipHolderAsync(lighthouse));
        Assert.True(await WorksAsync(cluster));
    }

    [Fact]
    public async Task Membership_commands_tail_errors_and_the_lighthouse_draining_itself()
    {
        await using var cluster = await LoopbackCluster.StartAsync(output);
        var (first, second) = await StartTwoNodesAsync(cluster);
        var lighthouse = cluster.Lighthouse;

        // errors: 1 for a command the node refuses, 2 for a node that is not there
        Assert.Contains("vip move", await OkAsync(first.Endpoint, "help"));
        Assert.Contains("unknown command 'pool frobnicate'", await FailsAsync(first.Endpoint, "pool", "frobnicate"));
        Assert.Contains("usage: cluster down <address>", await FailsAsync(first.Endpoint, "cluster", "down"));
        Assert.Contains("no member at 127.0.0.1:1", await FailsAsync(first.Endpoint, "cluster", "leave", "127.0.0.1:1"));
        var free = FreePort.Next();
        var unreachable = await PbmAsync($"127.0.0.1:{free}", "cluster", "show");
        Assert.Equal(2, unreachable.ExitCode);
        Assert.Contains($"pbm: cannot reach 127.0.0.1:{free}", unreachable.StdErr);

        // cluster join: HOST:PORT stands for the full address; a member joining again is ignored by Akka
        Assert.Contains("usage: cluster join <address>", await FailsAsync(first.Endpoint, "cluster", "join"));
        Assert.Equal($"joining {lighthouse.Address}", Lines(await OkAsync(first.Endpoint, "cluster", "join", lighthouse.Name)).Single());
        Assert.Equal($"{first.Address} is Up; 3 members, 0 unreachable", Lines(await OkAsync(first.Endpoint, "cluster", "status")).Single());

        // cluster tail: a third node joining shows up as a member line; Ctrl-C ends the tail with 0
        Node third;
        using (var tail = new LivePbm(lighthouse.Endpoint, "cluster", "tail"))
        {
            await tail.WaitForLineAsync(l => l.Contains($"member Up {first.Address}", StringComparison.Ordinal), "the current members");
            third = await StartNodeAsync(cluster);
            await tail.WaitForLineAsync(l => l.Contains("member ", StringComparison.Ordinal) && l.Contains(third.Address, StringComparison.Ordinal)
                && l.Contains("status=Up", StringComparison.Ordinal), "the third node Up");
            Assert.True(tail.Interrupt());
            Assert.Equal(0, await tail.WaitForExitAsync());
            output.WriteLine($"$ pbm {lighthouse.Endpoint} cluster tail\n{string.Join('\n', tail.Lines)}");
        }
        Assert.Contains(third.Address, await MembersAsync(second));

        // cluster leave of another node: it drains and exits 0
        Assert.Contains("draining", await OkAsync(first.Endpoint, "cluster", "leave", third.Address));
        Assert.Equal(0, await third.Process.WaitForExitAsync(Limit));
        await Eventually.True(async () => !(await MembersAsync(first)).Contains(third.Address), "the node that left is no longer listed", Limit);

        // cluster down of a node killed with SIGKILL, from a session opened beforehand: it must still be a
        // member when the command runs (the split-brain resolver downs it about 3 s after the kill)
        using (var session = new LivePbm(first.Endpoint))
        {
            await session.WaitForLineAsync(l => l.StartsWith("Connected to", StringComparison.Ordinal), "the session's greeting");
            second.Process.Kill();
            await session.SendAsync($"cluster down {second.Name}");
            await session.SendAsync("exit");
            session.CloseInput();
            Assert.Equal(0, await session.WaitForExitAsync());
            output.WriteLine($"$ pbm {first.Endpoint}   (interactive)\n{string.Join('\n', session.Lines)}");
            Assert.Contains(session.Lines, l => l == $"{second.Address} marked down");
        }
        await Eventually.True(async () => !(await MembersAsync(first)).Contains(second.Address), "the downed node is removed", Limit);
        Assert.Contains("no unreachable member", await OkAsync(first.Endpoint, "cluster", "down-unreachable"));
        Assert.Equal($"{first.Address} is Up; 2 members, 0 unreachable", Lines(await OkAsync(first.Endpoint, "cluster", "status")).Single());

        // the Lighthouse's own node drain: pbm gets 0, the Lighthouse leaves and exits 0
        Assert.Contains("draining", await OkAsync(lighthouse.Endpoint, "node", "drain"));
        Assert.Equal(0, await lighthouse.Process.WaitForExitAsync(Limit));
        await Eventually.True(async () => await MembersAsync(first) is [var only] && only == first.Address, "only the first node is left", Limit);
    }
}
