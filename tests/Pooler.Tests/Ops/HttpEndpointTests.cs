using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Ops;

/// <summary>
/// <c>pooler.http</c> of real Pooler.Host processes: <c>/metrics</c> after real traffic (parsed as Prometheus text),
/// <c>/health</c> healthy, with the backend down and while draining, <c>/stats.json</c>'s shape, and the <c>/stats</c>
/// page of a Lighthouse + two nodes cluster as headless Chromium renders it.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed partial class HttpEndpointTests(PostgresFixture pg, ITestOutputHelper output)
{
    // other engineers run multi-process tests on the same small machine: generous, but bounded
    private static readonly TimeSpan StartTimeout = LoopbackCluster.StartTimeout;
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);
    private const string Chromium = "/usr/bin/chromium";
    private const int SigStop = 19, SigCont = 18;

    private static readonly HttpClient Http = new(new HttpClientHandler { AllowAutoRedirect = false }) { Timeout = TimeSpan.FromSeconds(15) };

    private static string Url(int port, string path) => $"http://127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}{path}";

    private static async Task<(HttpStatusCode Status, string? ContentType, string Body)> GetAsync(int port, string path)
    {
        using var response = await Http.GetAsync(Url(port, path));
        return (response.StatusCode, response.Content.Headers.ContentType?.ToString(), await response.Content.ReadAsStringAsync());
    }

    private static async Task<Exposition> ScrapeAsync(int port)
    {
        var (status, type, body) = await GetAsync(port, "/metrics");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.NotNull(type);
        // Prometheus' text exposition format, version 0.0.4
        Assert.StartsWith("text/plain", type, StringComparison.Ordinal);
        Assert.Contains("version=0.0.4", type, StringComparison.Ordinal);
        return Prometheus.Parse(body);
    }

    private static readonly Dictionary<string, string> TestPool = new()
    {
        ["database"] = PostgresFixture.Database, ["user"] = PostgresFixture.ScramUser,
    };

    private static Dictionary<string, string> With(Dictionary<string, string> labels, string name, string value) =>
        new(labels) { [name] = value };

    // ---------------- /metrics ----------------

    [Fact]
    public async Task Metrics_show_transactions_clients_servers_the_wait_histogram_errors_and_process_series_after_real_traffic()
    {
        await using var pooler = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg, settings: "default-pool-size = 1"), timeout: StartTimeout);
        var port = await pooler.HttpPortAsync(Limit);

        const int transactions = 25;
        await using (var c = await pooler.OpenAsync(pg))
        {
            for (var i = 0; i < transactions; i++)
            {
                await using var tx = await c.BeginTransactionAsync();
                await using var cmd = new NpgsqlCommand($"select {i.ToString(CultureInfo.InvariantCulture)}", c, tx);
                Assert.Equal(i, (int)(await cmd.ExecuteScalarAsync())!);
                await tx.CommitAsync();
            }
            // a named prepared statement: one client Parse, one server Parse, three Binds
            await using var prepared = new NpgsqlCommand("select $1::int + 1", c);
            prepared.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Integer });
            await prepared.PrepareAsync();
            for (var i = 0; i < 3; i++)
            {
                prepared.Parameters[0].Value = i;
                Assert.Equal(i + 1, (int)(await prepared.ExecuteScalarAsync())!);
            }
        }

        // pool size 1: a client holding a transaction makes the next one wait for the only server
        await using var holder = await pooler.OpenAsync(pg);
        await using var open = await holder.BeginTransactionAsync();
        await using (var cmd = new NpgsqlCommand("select 1", holder, open)) await cmd.ExecuteScalarAsync();
        await using var waiter = await pooler.OpenAsync(pg);
        await using var waiting = new NpgsqlCommand("select 2", waiter);
        var waited = waiting.ExecuteScalarAsync();

        var during = await Eventually.Value(() => ScrapeAsync(port), s => s.Value("pooler_clients", With(TestPool, "state", "waiting")) == 1,
            "pooler_clients{state=\"waiting\"} is 1 while the only server is held", Limit, TimeSpan.FromMilliseconds(200));
        Assert.True(during.Value("pooler_clients", With(TestPool, "state", "active")) >= 1, "the holder counts as an active client");
        Assert.Equal(1, during.Value("pooler_servers", With(TestPool, "state", "active")));
        Assert.Equal(0, during.Value("pooler_servers", With(TestPool, "state", "idle")));
        Assert.False(waited.IsCompleted, "the second client waits while the first one's transaction is open");
        await Task.Delay(300);
        await open.CommitAsync();
        Assert.Equal(2, (int)(await waited.WaitAsync(Limit))!);

        using var wrong = new NpgsqlConnection(pooler.ConnectionString(pg, password: "not-the-password"));
        var refused = await Assert.ThrowsAsync<PostgresException>(() => wrong.OpenAsync());
        Assert.Equal("28P01", refused.SqlState);

        var after = await ScrapeAsync(port);
        foreach (var name in new[] { "pooler_transactions_total", "pooler_queries_total", "pooler_client_wait_seconds", "pooler_clients", "pooler_servers", "pooler_errors_total" })
            Assert.True(after.Types.ContainsKey(name), $"{name} has a # TYPE line");
        Assert.True(after.Value("pooler_transactions_total", TestPool) >= transactions + 1,
            $"pooler_transactions_total {after.Value("pooler_transactions_total", TestPool)} >= {transactions + 1}");
        Assert.True(after.Value("pooler_queries_total", TestPool) >= transactions + 2);
        Assert.True(after.Value("pooler_received_bytes_total", TestPool) > 0);
        Assert.True(after.Value("pooler_sent_bytes_total", TestPool) > 0);
        Assert.True(after.Value("pooler_transaction_seconds_total", TestPool) > 0);
        Assert.True(after.Value("pooler_client_parses_total", TestPool) >= 1, "the prepared statement's Parse is counted");
        Assert.True(after.Value("pooler_server_parses_total", TestPool) >= 1);
        Assert.True(after.Value("pooler_binds_total", TestPool) >= 3, $"pooler_binds_total {after.Value("pooler_binds_total", TestPool)} >= 3");
        // two clients still connected (holder and waiter), at most one server (pool size 1)
        Assert.Equal(2, after.Value("pooler_clients", With(TestPool, "state", "active")));
        Assert.Equal(0, after.Value("pooler_clients", With(TestPool, "state", "waiting")));
        Assert.Equal(1, new[] { "active", "idle", "used", "tested", "login" }.Sum(st => after.Value("pooler_servers", With(TestPool, "state", st))));
        Assert.Equal(1, after.Value("pooler_server_connections"));
        Assert.True(after.Value("pooler_client_connections") >= 2);

        // the waiter waited about 300 ms: counted once, above the 0.1 s bucket
        Assert.True(after.Value("pooler_client_wait_seconds_count", TestPool) >= 1, "one wait observed");
        Assert.True(after.Value("pooler_client_wait_seconds_bucket", With(TestPool, "le", "+Inf")) >= 1);
        Assert.True(after.Value("pooler_client_wait_seconds_sum", TestPool) >= 0.25,
            $"wait sum {after.Value("pooler_client_wait_seconds_sum", TestPool)} s >= 0.25 s");
        var buckets = after.Samples.Where(s => s.Name == "pooler_client_wait_seconds_bucket" && s.Matches(TestPool))
            .Select(s => (Le: s.Labels["le"] == "+Inf" ? double.PositiveInfinity : double.Parse(s.Labels["le"], CultureInfo.InvariantCulture), s.Value))
            .OrderBy(b => b.Le).ToList();
        Assert.True(buckets.Count >= 2, "the histogram has buckets");
        Assert.Equal(buckets.Select(b => b.Value).OrderBy(v => v), buckets.Select(b => b.Value)); // cumulative
        Assert.True(buckets.First(b => b.Le >= 0.1).Value < buckets[^1].Value, "the 300 ms wait is above the 0.1 s bucket");
        Assert.Equal("histogram", after.Types.GetValueOrDefault("pooler_client_wait_seconds"));
        Assert.Equal("counter", after.Types.GetValueOrDefault("pooler_transactions_total"));

        Assert.True(after.Value("pooler_errors_total", new() { ["sqlstate"] = "28P01" }) >= 1, "the wrong password is counted");
        Assert.Equal(1, after.Value("pooler_backend_reachable"));
        Assert.Equal(0, after.Value("pooler_draining"));

        // the process series prometheus-net adds
        Assert.True(after.Value("process_cpu_seconds_total") > 0);
        var started = DateTimeOffset.FromUnixTimeMilliseconds((long)(after.Value("process_start_time_seconds") * 1000));
        Assert.InRange(started, DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddSeconds(5));
        Assert.True(after.Value("process_working_set_bytes") > 10_000_000);
        Assert.True(after.Value("process_num_threads") > 1);
    }

    [Fact]
    public void The_exposition_parser_reads_labels_escapes_special_values_and_rejects_garbage()
    {
        var samples = Prometheus.Parse("""
            # HELP a_total A counter.
            # TYPE a_total counter
            a_total{database="x",user="y \"q\" \\ \n"} 3 1700000000000
            b 1.5e3
            c{le="+Inf",} +Inf
            d NaN

            """);
        Assert.Equal(4, samples.Samples.Count);
        Assert.Equal(3, samples.Value("a_total", new() { ["database"] = "x", ["user"] = "y \"q\" \\ \n" }));
        Assert.Equal(1500, samples.Value("b"));
        Assert.Equal(double.PositiveInfinity, samples.Value("c", new() { ["le"] = "+Inf" }));
        Assert.True(double.IsNaN(samples.Samples[3].Value));
        Assert.Throws<FormatException>(() => Prometheus.Parse("a{x=\"1\" 2\n"));
        Assert.Throws<FormatException>(() => Prometheus.Parse("a{x=1} 2\n"));
        Assert.Throws<FormatException>(() => Prometheus.Parse("9a 2\n"));
        Assert.Throws<FormatException>(() => Prometheus.Parse("a two\n"));
        Assert.Throws<Xunit.Sdk.XunitException>(() => samples.Value("b", new() { ["x"] = "1" }));
    }

    // ---------------- /health ----------------

    private static async Task<(HttpStatusCode Status, JsonElement Body)> HealthAsync(int port)
    {
        var (status, type, body) = await GetAsync(port, "/health");
        Assert.StartsWith("application/json", type, StringComparison.Ordinal);
        return (status, JsonDocument.Parse(body).RootElement.Clone());
    }

    [Fact]
    public async Task Health_is_200_on_a_healthy_node()
    {
        await using var pooler = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg), timeout: StartTimeout);
        var (status, body) = await HealthAsync(await pooler.HttpPortAsync(Limit));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("ok", body.GetProperty("status").GetString());
        Assert.Equal(JsonValueKind.Null, body.GetProperty("reason").ValueKind);
        Assert.Equal("Up", body.GetProperty("member").GetString());
        Assert.True(body.GetProperty("backend_reachable").GetBoolean());
        Assert.False(body.GetProperty("draining").GetBoolean());
    }

    [Fact]
    public async Task Health_is_503_when_no_configured_backend_accepts_connections()
    {
        var closed = FreePort.Next(); // nothing listens there
        await using var pooler = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg, settings: $$"""
            databases.{{PostgresFixture.Database}}.port = {{closed}}
            databases.{{PostgresFixture.OtherDatabase}}.port = {{closed}}
            """), timeout: StartTimeout);
        var port = await pooler.HttpPortAsync(Limit);
        var (status, body) = await HealthAsync(port);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        Assert.Equal("unavailable", body.GetProperty("status").GetString());
        Assert.Equal("no backend reachable", body.GetProperty("reason").GetString());
        Assert.False(body.GetProperty("backend_reachable").GetBoolean());
        Assert.Equal(0, (await ScrapeAsync(port)).Value("pooler_backend_reachable"));
        Assert.False(JsonDocument.Parse((await GetAsync(port, "/stats.json")).Body).RootElement.GetProperty("nodes")[0].GetProperty("backend_reachable").GetBoolean());
    }

    [Fact]
    public async Task Health_is_503_while_the_node_drains_after_sigterm()
    {
        await using var pooler = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg, settings: "shutdown-timeout = 60s"), timeout: StartTimeout);
        var port = await pooler.HttpPortAsync(Limit);
        Assert.Equal(HttpStatusCode.OK, (await HealthAsync(port)).Status);

        // an open transaction keeps the drain going (up to shutdown-timeout)
        var client = await pooler.OpenAsync(pg);
        var tx = await client.BeginTransactionAsync();
        await using (var cmd = new NpgsqlCommand("select 1", client, tx)) await cmd.ExecuteScalarAsync();

        Assert.True(pooler.Terminate());
        var (_, body) = await Eventually.Value(() => HealthAsync(port), h => h.Status == HttpStatusCode.ServiceUnavailable,
            "/health answers 503 once SIGTERM is handled", Limit, TimeSpan.FromMilliseconds(100));
        Assert.Equal("draining", body.GetProperty("reason").GetString());
        Assert.True(body.GetProperty("draining").GetBoolean());
        Assert.False(pooler.HasExited, "the node is still draining (its client's transaction is open)");
        Assert.Equal(1, (await ScrapeAsync(port)).Value("pooler_draining"));
        Assert.True(JsonDocument.Parse((await GetAsync(port, "/stats.json")).Body).RootElement.GetProperty("nodes")[0].GetProperty("draining").GetBoolean());

        // the transaction ends: the drain completes and the process exits cleanly
        await tx.CommitAsync();
        await client.DisposeAsync();
        Assert.Equal(0, await pooler.WaitForExitAsync(Limit));
    }

    // ---------------- /stats.json, /stats ----------------

    [Fact]
    public async Task Stats_json_of_a_single_node_has_no_members_no_vip_and_the_node_with_its_pools()
    {
        await using var pooler = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg), timeout: StartTimeout);
        var port = await pooler.HttpPortAsync(Limit);
        await using var client = await pooler.OpenAsync(pg);
        await using (var cmd = new NpgsqlCommand("select 1", client)) await cmd.ExecuteScalarAsync();

        var (status, type, text) = await GetAsync(port, "/stats.json");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.StartsWith("application/json", type, StringComparison.Ordinal);
        var json = JsonDocument.Parse(text).RootElement;
        Assert.Equal(0, json.GetProperty("members").GetArrayLength());
        Assert.Equal(JsonValueKind.Null, json.GetProperty("vip").ValueKind);
        Assert.True(json.GetProperty("generated").GetDateTime() > DateTime.UtcNow.AddMinutes(-1));
        var node = Assert.Single(json.GetProperty("nodes").EnumerateArray());
        Assert.False(node.GetProperty("draining").GetBoolean());
        Assert.True(node.GetProperty("backend_reachable").GetBoolean());
        Assert.Equal(1, node.GetProperty("clients").GetInt32());
        var pool = Assert.Single(node.GetProperty("pools").EnumerateArray(), p => p.GetProperty("database").GetString() == PostgresFixture.Database);
        Assert.Equal(PostgresFixture.ScramUser, pool.GetProperty("user").GetString());
        Assert.Equal("transaction", pool.GetProperty("mode").GetString());
        Assert.Equal(5, pool.GetProperty("pool_size").GetInt32());
        Assert.Equal(1, pool.GetProperty("cl_active").GetInt32());
        Assert.Equal(0, pool.GetProperty("cl_waiting").GetInt32());
        Assert.True(pool.GetProperty("totals").GetProperty("xacts").GetInt64() >= 1);
        foreach (var field in new[] { "sv_active", "sv_idle", "sv_used", "sv_login", "maxwait_ms", "xacts_per_second", "paused" })
            Assert.True(pool.TryGetProperty(field, out _), $"pool field {field}");

        var page = await GetAsync(port, "/stats");
        Assert.Equal(HttpStatusCode.OK, page.Status);
        Assert.StartsWith("text/html", page.ContentType, StringComparison.Ordinal);
        Assert.Contains("/stats.json", page.Body, StringComparison.Ordinal);
        var root = await GetAsync(port, "/");
        Assert.Equal(HttpStatusCode.Redirect, root.Status);
    }

    [Fact]
    public async Task Stats_page_in_headless_chromium_shows_both_nodes_the_vip_holder_and_the_pools()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} not found: the /stats page test needs Debian's chromium (apt-get install chromium)");
        await using var cluster = await StartClusterAsync();
        var (first, second) = (cluster.Nodes[0], cluster.Nodes[1]);

        // clients on both nodes, each inside a transaction so that the pools show active clients and servers
        var clients = new List<(NpgsqlConnection Conn, NpgsqlTransaction Tx)>();
        try
        {
            foreach (var (node, count) in new[] { (first.Process, 2), (second.Process, 3) })
                for (var i = 0; i < count; i++)
                {
                    var c = await node.OpenAsync(pg);
                    var tx = await c.BeginTransactionAsync();
                    clients.Add((c, tx));
                    await using var cmd = new NpgsqlCommand("select 1", c, tx);
                    await cmd.ExecuteScalarAsync();
                }

            var httpPort = await second.Process.HttpPortAsync(Limit);
            var json = await Eventually.Value(async () => JsonDocument.Parse((await GetAsync(httpPort, "/stats.json")).Body).RootElement.Clone(),
                j => j.GetProperty("nodes").EnumerateArray().Count(n => n.GetProperty("pools").GetArrayLength() > 0) == 2,
                "/stats.json reports both pooler nodes", Limit, TimeSpan.FromMilliseconds(250));
            output.WriteLine(json.ToString());
            AssertStatsJson(json, cluster);

            // the page renders what its script fetched from /stats.json
            using var profile = TestDirectory.Create("chromium");
            var dom = await RunChromiumAsync(profile.Combine("dump"), "--dump-dom", Url(httpPort, "/stats"));
            AssertStatsDom(dom, cluster);

            var dir = Environment.GetEnvironmentVariable("POOLER_SCREENSHOT_DIR") is { Length: > 0 } d ? d
                : TestDirectory.Create("stats-page").Path; // kept for a look; a later run's stale cleanup removes it
            Directory.CreateDirectory(dir);
            var png = Path.Combine(dir, "stats-page.png");
            File.Delete(png);
            await RunChromiumAsync(profile.Combine("shot"), $"--screenshot={png}", "--window-size=1400,900", "--hide-scrollbars", Url(httpPort, "/stats"));
            Assert.True(File.Exists(png), $"chromium saved no screenshot at {png}");
            var bytes = await File.ReadAllBytesAsync(png);
            Assert.True(bytes.Length > 10_000, $"the screenshot has {bytes.Length} bytes");
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
            output.WriteLine($"stats page screenshot: {png}");

            // the cluster series and /health of both nodes, as each sees itself
            foreach (var node in new[] { first, second })
            {
                var port = await node.Process.HttpPortAsync(Limit);
                var metrics = await ScrapeAsync(port);
                Assert.Equal(node == first ? 1 : 0, metrics.Value("pooler_vip_held"));
                Assert.Equal(1, metrics.Value("pooler_vip_owner", new() { ["node"] = first.Address }));
                Assert.Equal(0, metrics.Value("pooler_vip_owner", new() { ["node"] = second.Address }));
                Assert.Equal(3, metrics.Value("pooler_cluster_members", new() { ["status"] = "Up" }));
                Assert.Equal(0, metrics.Value("pooler_cluster_unreachable_members"));
                var (status, health) = await HealthAsync(port);
                Assert.Equal(HttpStatusCode.OK, status);
                Assert.Equal("Up", health.GetProperty("member").GetString());
            }

            // a node that does not answer (stopped) is named under "missing", not silently left out (the page's rendering
            // of it is checked below with a canned answer: Chromium's virtual time does not wait out the 5 s gather)
            Assert.True(ProcessRunner.Signal(second.Process.Pid, SigStop));
            try
            {
                var firstPort = await first.Process.HttpPortAsync(Limit);
                var silent = JsonDocument.Parse((await GetAsync(firstPort, "/stats.json")).Body).RootElement;
                Assert.Equal([second.Address], silent.GetProperty("missing").EnumerateArray().Select(a => a.GetString()));
                Assert.Equal([first.Address], silent.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("address").GetString()));
            }
            finally { ProcessRunner.Signal(second.Process.Pid, SigCont); }
        }
        finally
        {
            foreach (var (c, _) in clients) await c.DisposeAsync();
        }
    }

    [Fact]
    public async Task Stats_page_marks_a_draining_node_a_node_without_backend_and_a_node_that_did_not_answer()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} not found: the /stats page test needs Debian's chromium (apt-get install chromium)");
        // the page as served, with a canned /stats.json: the states are hard to bring about together in real processes
        const string holder = "akka.tcp://pooler@10.0.0.1:4053", draining = "akka.tcp://pooler@10.0.0.2:4053", silent = "akka.tcp://pooler@10.0.0.3:4053";
        var json = JsonSerializer.Serialize(new
        {
            generated = DateTime.UtcNow,
            members = new[] { holder, draining, silent }.Select(a => new { address = a, status = "Up", roles = new[] { "pooler" }, reachable = a != silent, leader = a == holder, oldest = a == holder }),
            vip = new { address = "10.0.0.100", driver = "ip", coordinator = holder, holder, local_state = "holding", held_here = true },
            missing = new[] { silent },
            nodes = new[]
            {
                StatsNode("10.0.0.1:4053", holder, false, false, [("db_a", 4, 1, 10, 10), ("db_b", 1, 0, 20, 20)]),
                StatsNode("10.0.0.2:4053", draining, true, true, [("db_a", 2, 0, 30, 7)]),
            },
        });
        using var server = CannedStatsServer.Start(json);
        using var profile = TestDirectory.Create("chromium");
        var dom = await RunChromiumAsync(profile.Combine("canned"), "--dump-dom", server.Url + "stats");

        var sections = NodeSection().Matches(dom).ToDictionary(m => Text(m.Groups[1].Value), m => (Heading: Text(m.Groups[2].Value), Rows: Rows(m.Groups[3].Value)));
        Assert.Equal(["10.0.0.1:4053", "10.0.0.2:4053", silent], sections.Keys);
        // the VIP holder without backend: both marks, and its total line adds up its two pools
        Assert.Equal("[VIP] BACKEND DOWN", sections["10.0.0.1:4053"].Heading);
        var total = sections["10.0.0.1:4053"].Rows.Single(r => r[0] == "Total");
        Assert.Equal(["Total", "", "", "5", "1", "5", "0", "0", "0", "20", "30", "60", "0", "backend down"], total);
        Assert.Equal("DRAINING", sections["10.0.0.2:4053"].Heading);
        Assert.Equal("draining", sections["10.0.0.2:4053"].Rows.Single(r => r[0] == "Total")[^1]);
        Assert.Equal("NO ANSWER", sections[silent].Heading);
        Assert.Equal("(did not answer)", Assert.Single(sections[silent].Rows)[0]);
        var members = Rows(Table(dom, "members"));
        Assert.Equal("NO", members.Single(r => r[0] == silent)[3]);
        Assert.Equal("holds VIP", members.Single(r => r[0] == holder)[5]);
        // a pool with a waiting client is flagged
        Assert.Matches("<tr class=\"warn\"><td>db_a</td>", Regex.Match(dom, "<div id=\"nodes\">(.*?)</div>", RegexOptions.Singleline).Value);
    }

    private static object StatsNode(string node, string address, bool draining, bool backend, (string Db, int Active, int Waiting, int MaxWaitMs, int Xacts)[] pools) => new
    {
        node, address, roles = new[] { "pooler" }, draining, backend_reachable = backend, clients = pools.Sum(p => p.Active + p.Waiting), servers = pools.Sum(p => p.Active),
        started_at = DateTime.UtcNow,
        pools = pools.Select(p => new
        {
            database = p.Db, user = "app", mode = "transaction", pool_size = 20, paused = false, maxwait_ms = p.MaxWaitMs,
            cl_active = p.Active, cl_waiting = p.Waiting, sv_active = p.Active, sv_idle = 0, sv_used = 0, sv_tested = 0, sv_login = 0,
            totals = new { xacts = p.Xacts, queries = p.Xacts * 2, received = 0, sent = 0, xact_us = 0, query_us = 0, wait_us = 0 },
            xacts_per_second = 0.0,
        }),
    };

    /// <summary>Serves the /stats page as the endpoint does, and a fixed /stats.json.</summary>
    private sealed class CannedStatsServer : IDisposable
    {
        private readonly HttpListener _listener;
        private readonly Task _loop;

        public string Url { get; }

        private CannedStatsServer(HttpListener listener, string url, string json)
        {
            _listener = listener;
            Url = url;
            _loop = Task.Run(async () =>
            {
                while (_listener.IsListening)
                {
                    HttpListenerContext ctx;
                    try { ctx = await _listener.GetContextAsync(); }
                    catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
                    var (type, body) = ctx.Request.Url!.AbsolutePath == "/stats.json"
                        ? ("application/json", json) : ("text/html; charset=utf-8", Pooler.Actors.Ops.StatsPage.Html);
                    var bytes = Encoding.UTF8.GetBytes(body);
                    ctx.Response.ContentType = type;
                    ctx.Response.ContentLength64 = bytes.Length;
                    await ctx.Response.OutputStream.WriteAsync(bytes);
                    ctx.Response.Close();
                }
            });
        }

        public static CannedStatsServer Start(string json)
        {
            for (var attempt = 0; ; attempt++)
            {
                var url = Url(FreePort.Next(), "/");
                var listener = new HttpListener();
                listener.Prefixes.Add(url);
                try
                {
                    listener.Start();
                    return new CannedStatsServer(listener, url, json);
                }
                catch (HttpListenerException) when (attempt < 5) { listener.Close(); } // the port was taken meanwhile
            }
        }

        public void Dispose()
        {
            _listener.Close();
            _loop.Wait(TimeSpan.FromSeconds(5));
        }
    }

    private static void AssertStatsJson(JsonElement json, LoopbackCluster cluster)
    {
        var (first, second) = (cluster.Nodes[0], cluster.Nodes[1]);
        var members = json.GetProperty("members").EnumerateArray().ToList();
        Assert.Equal(3, members.Count);
        Assert.All(members, m => Assert.Equal("Up", m.GetProperty("status").GetString()));
        Assert.All(members, m => Assert.True(m.GetProperty("reachable").GetBoolean()));
        Assert.Equal(new[] { cluster.Lighthouse.Address, first.Address, second.Address }.Order(StringComparer.Ordinal),
            members.Select(m => m.GetProperty("address").GetString()).Order(StringComparer.Ordinal));
        Assert.Contains("lighthouse", members.Single(m => m.GetProperty("address").GetString() == cluster.Lighthouse.Address)
            .GetProperty("roles").EnumerateArray().Select(r => r.GetString()));
        var vip = json.GetProperty("vip");
        Assert.Equal(cluster.VipHost, vip.GetProperty("address").GetString());
        Assert.Equal("bind", vip.GetProperty("driver").GetString());
        Assert.Equal(first.Address, vip.GetProperty("holder").GetString());

        var nodes = json.GetProperty("nodes").EnumerateArray().ToList();
        Assert.Equal(2, nodes.Count); // the pooler nodes: the Lighthouse has no pools
        Assert.Equal(0, json.GetProperty("missing").GetArrayLength());
        foreach (var (node, clients) in new[] { (first, 2), (second, 3) })
        {
            var n = Assert.Single(nodes, x => x.GetProperty("address").GetString() == node.Address);
            Assert.Equal(node.Name, n.GetProperty("node").GetString());
            Assert.Equal(clients, n.GetProperty("clients").GetInt32());
            var pool = Assert.Single(n.GetProperty("pools").EnumerateArray(), p => p.GetProperty("database").GetString() == PostgresFixture.Database);
            Assert.Equal(clients, pool.GetProperty("cl_active").GetInt32());
            Assert.Equal(clients, pool.GetProperty("sv_active").GetInt32());
        }
    }

    private static void AssertStatsDom(string dom, LoopbackCluster cluster)
    {
        var (first, second) = (cluster.Nodes[0], cluster.Nodes[1]);
        Assert.Equal("", Text(Regex.Match(dom, "<div id=\"error\">(.*?)</div>", RegexOptions.Singleline).Groups[1].Value));
        Assert.StartsWith("updated ", Text(Regex.Match(dom, "<span id=\"updated\">(.*?)</span>", RegexOptions.Singleline).Groups[1].Value), StringComparison.Ordinal);

        // the members table: one row per member, the holder's marked
        var members = Rows(Table(dom, "members"));
        Assert.Equal(3, members.Count);
        foreach (var node in new[] { first, second })
        {
            var row = Assert.Single(members, r => r[0] == node.Address);
            Assert.Equal("Up", row[1]);
            Assert.Equal(node == first ? "holds VIP" : "", row[5]);
        }
        var vip = Assert.Single(Rows(Table(dom, "vip")));
        Assert.Equal([cluster.VipHost, "bind", first.Address], vip.Take(3));

        // one pools table per pooler node under a heading naming it; the holder's heading is marked
        var sections = NodeSection().Matches(dom).ToDictionary(m => Text(m.Groups[1].Value), m => (Heading: Text(m.Groups[2].Value), Table: m.Groups[3].Value));
        foreach (var (node, clients) in new[] { (first, 2), (second, 3) })
        {
            Assert.True(sections.TryGetValue(node.Name, out var section), $"a section for node {node.Name}; sections: {string.Join(", ", sections.Keys)}");
            Assert.Equal(node == first ? "[VIP]" : "", section.Heading);
            var rows = Rows(section.Table);
            var n = clients.ToString(CultureInfo.InvariantCulture);
            var pool = Assert.Single(rows, r => r[0] == PostgresFixture.Database);
            Assert.Equal([PostgresFixture.Database, PostgresFixture.ScramUser, "transaction", n, "0", n], pool.Take(6));
            var total = Assert.Single(rows, r => r[0] == "Total");
            Assert.Equal(["Total", "", "", n, "0", n], total.Take(6));
            Assert.Equal("up", total[^1]);
        }
        // the Lighthouse is a member, not a node with pools
        Assert.Equal(2, sections.Count);
        Assert.DoesNotContain("NO ANSWER", Regex.Match(dom, "<div id=\"nodes\">(.*?)</div>", RegexOptions.Singleline).Groups[1].Value, StringComparison.Ordinal);
    }

    [GeneratedRegex("<h2>Node ([^\\s<]+)(.*?)</h2><table class=\"pools\">(.*?)</table>", RegexOptions.Singleline)]
    private static partial Regex NodeSection();

    private static string Table(string dom, string id)
    {
        var m = Regex.Match(dom, $"<table id=\"{id}\">(.*?)</table>", RegexOptions.Singleline);
        Assert.True(m.Success, $"table #{id} is in the page");
        return m.Groups[1].Value;
    }

    /// <summary>The body rows' cell texts (header rows have th cells and are left out).</summary>
    private static List<string[]> Rows(string table) =>
        Regex.Matches(table, "<tr[^>]*>(.*?)</tr>", RegexOptions.Singleline)
            .Select(r => Regex.Matches(r.Groups[1].Value, "<td[^>]*>(.*?)</td>", RegexOptions.Singleline).Select(c => Text(c.Groups[1].Value)).ToArray())
            .Where(cells => cells.Length > 0).ToList();

    private static string Text(string html) => WebUtility.HtmlDecode(Regex.Replace(html, "<[^>]*>", "")).Trim();

    /// <summary>Runs headless Chromium on a page (after 5 s of virtual time, so its script has fetched and rendered) and returns stdout.</summary>
    private async Task<string> RunChromiumAsync(string profileDir, params string[] args)
    {
        // as root Chromium needs --no-sandbox; a profile of its own keeps it apart from other Chromiums on the machine
        string[] all = ["--no-sandbox", "--headless=new", "--disable-gpu", "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage",
            $"--user-data-dir={profileDir}", "--virtual-time-budget=5000", .. args];
        var result = await ProcessRunner.RunAsync(Chromium, all, timeout: TimeSpan.FromSeconds(60));
        Assert.False(result.TimedOut, $"chromium did not finish within 60 s\n{result.StdErr}");
        Assert.True(result.ExitCode == 0, $"chromium exited with {result.ExitCode}\n{result.StdErr}");
        output.WriteLine($"chromium {string.Join(' ', args)}: {result.Elapsed.TotalSeconds:F1} s");
        return result.StdOut;
    }

    // ---------------- a cluster of processes (as in ClusterProcessTests) ----------------

    /// <summary>A Lighthouse and two pooler nodes (bind VIP); the first holds the VIP.</summary>
    private async Task<LoopbackCluster> StartClusterAsync()
    {
        var cluster = await LoopbackCluster.StartAsync(output);
        try
        {
            var first = await cluster.StartNodeAsync(pg);
            await first.Process.WaitForOutputAsync(LoopbackCluster.IsHoldingLine, "the first node holds the VIP", StartTimeout);
            await cluster.StartNodeAsync(pg);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    // ---------------- Prometheus text ----------------

    /// <summary>One sample line of the text exposition format.</summary>
    private sealed record Sample(string Name, IReadOnlyDictionary<string, string> Labels, double Value)
    {
        /// <summary>True when every given label has this value (other labels may be present).</summary>
        public bool Matches(IReadOnlyDictionary<string, string> labels) =>
            labels.All(l => Labels.TryGetValue(l.Key, out var v) && v == l.Value);
    }

    /// <summary>A parsed scrape: its samples and the metric families' # TYPE.</summary>
    private sealed record Exposition(IReadOnlyList<Sample> Samples, IReadOnlyDictionary<string, string> Types)
    {
        /// <summary>The value of the one series of <paramref name="name"/> with these labels (and no others).</summary>
        public double Value(string name, Dictionary<string, string>? labels = null)
        {
            labels ??= new Dictionary<string, string>();
            var found = Samples.Where(s => s.Name == name && s.Labels.Count == labels.Count && s.Matches(labels)).ToList();
            if (found.Count != 1)
            {
                var same = Samples.Where(s => s.Name == name).Select(s => "{" + string.Join(",", s.Labels.Select(l => $"{l.Key}=\"{l.Value}\"")) + "}");
                throw new Xunit.Sdk.XunitException($"{found.Count} series {name}{{{string.Join(",", labels.Select(l => $"{l.Key}=\"{l.Value}\""))}}}; "
                    + $"series of that name: [{string.Join(" ", same)}]");
            }
            return found[0].Value;
        }
    }

    /// <summary>A parser for Prometheus' text format 0.0.4: <c>name{label="value",...} value [timestamp]</c> and # TYPE lines.</summary>
    private static class Prometheus
    {
        public static Exposition Parse(string text)
        {
            var samples = new List<Sample>();
            var types = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var raw in text.Split('\n'))
            {
                var line = raw.TrimEnd('\r').Trim();
                if (line.Length == 0) continue;
                if (line.StartsWith('#'))
                {
                    var parts = line.Split(' ', 4, StringSplitOptions.RemoveEmptyEntries);
                    if (parts.Length >= 4 && parts[1] == "TYPE") types[parts[2]] = parts[3];
                    continue;
                }
                samples.Add(ParseSample(line));
            }
            return new Exposition(samples, types);
        }

        private static Sample ParseSample(string line)
        {
            var i = 0;
            var name = Name(line, ref i, "metric name");
            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            if (i < line.Length && line[i] == '{')
            {
                i++;
                while (true)
                {
                    if (i >= line.Length) throw Bad(line, "unterminated label set");
                    if (line[i] == '}') { i++; break; }
                    var label = Name(line, ref i, "label name");
                    if (i >= line.Length || line[i] != '=') throw Bad(line, "'=' expected after a label name");
                    if (++i >= line.Length || line[i] != '"') throw Bad(line, "a quoted label value expected");
                    var value = new StringBuilder();
                    for (i++; ; i++)
                    {
                        if (i >= line.Length) throw Bad(line, "unterminated label value");
                        var c = line[i];
                        if (c == '"') { i++; break; }
                        if (c != '\\') { value.Append(c); continue; }
                        if (++i >= line.Length) throw Bad(line, "unterminated escape");
                        value.Append(line[i] switch { 'n' => '\n', '\\' => '\\', '"' => '"', _ => throw Bad(line, $"unknown escape \\{line[i]}") });
                    }
                    if (!labels.TryAdd(label, value.ToString())) throw Bad(line, $"label {label} repeated");
                    if (i < line.Length && line[i] == ',') i++;
                    else if (i >= line.Length || line[i] != '}') throw Bad(line, "',' or '}' expected after a label");
                }
            }
            if (i >= line.Length || line[i] != ' ') throw Bad(line, "a space expected before the value");
            var rest = line[i..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (rest.Length is < 1 or > 2) throw Bad(line, "a value and an optional timestamp expected");
            var number = rest[0] switch
            {
                "+Inf" => double.PositiveInfinity,
                "-Inf" => double.NegativeInfinity,
                "NaN" => double.NaN,
                var v when double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
                _ => throw Bad(line, $"'{rest[0]}' is no number"),
            };
            if (rest.Length == 2 && !long.TryParse(rest[1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _))
                throw Bad(line, $"'{rest[1]}' is no timestamp");
            return new Sample(name, labels, number);
        }

        private static string Name(string line, ref int i, string what)
        {
            var start = i;
            while (i < line.Length && (char.IsAsciiLetter(line[i]) || line[i] is '_' or ':' || (i > start && char.IsAsciiDigit(line[i])))) i++;
            if (i == start) throw Bad(line, $"{what} expected at column {start + 1}");
            return line[start..i];
        }

        private static FormatException Bad(string line, string problem) => new($"not a Prometheus sample line ({problem}): {line}");
    }
}
