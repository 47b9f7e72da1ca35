using System.Globalization;
using System.Text;
using System.Text.Json;
using Pooler.Tests.Infrastructure;
using Pooler.Workload;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Workload;

/// <summary>
/// The workload tool against the fixture's PostgreSQL, directly and through an in-process pooler, each test
/// in a database of its own. The tool runs in-process through <see cref="WorkloadProgram.RunAsync"/>, except
/// for the one test that starts the built executable.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class WorkloadIntegrationTests(PostgresFixture pg, ITestOutputHelper output)
{
    private const string User = PostgresFixture.ScramUser;
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    private async Task<string> NewDatabaseAsync()
    {
        var db = $"wl_{Guid.NewGuid().ToString("N")[..12]}";
        await pg.CreateDatabaseAsync(db, owner: User);
        return db;
    }

    private async Task<(int Code, string Out, string Err)> WorkloadAsync(params string[] args)
    {
        var stdout = new LockedWriter();
        var stderr = new LockedWriter();
        using var cts = new CancellationTokenSource(Limit);
        var code = await WorkloadProgram.RunAsync(args, stdout, stderr, cts.Token);
        output.WriteLine($"$ workload {string.Join(' ', args)}\n-> exit {code}\n{stdout.Text}{stderr.Text}");
        return (code, stdout.Text, stderr.Text);
    }

    private string Direct(string db) => pg.ConnectionString(User, database: db);

    private Task<PoolerHarness> PoolerForAsync(string db) => PoolerHarness.StartAsync(pg, $$"""
        default-pool-size = 4
        databases {
          {{db}} { host = "127.0.0.1", port = {{pg.Port}}, dbname = "{{db}}" }
        }
        """);

    private async Task InitAsync(string uri, int flights = 2000)
    {
        var (code, stdout, _) = await WorkloadAsync("init", "--uri", uri, "--flights", flights.ToString(CultureInfo.InvariantCulture));
        Assert.Equal(0, code);
        Assert.Matches(@$"^init: .*flights={flights} .* in [0-9.]+ s", stdout);
    }

    [Fact]
    public async Task Init_creates_the_tables_with_their_row_counts()
    {
        var db = await NewDatabaseAsync();
        try
        {
            await InitAsync(Direct(db));
            // twice: init drops what is there
            await InitAsync(Direct(db));
            foreach (var (table, rows) in new[]
                     {
                         ("airlines", 20L), ("airports", 100L), ("planes", 500L), ("flights", 2000L),
                         ("flight_status", 2000L), ("seat_inventory", 2000L), ("flight_prices", 2000L),
                     })
                Assert.Equal(rows, await pg.ScalarAsync($"select count(*) from {table}", db));
            Assert.Equal(0L, await pg.ScalarAsync(
                "select count(*) from flights f left join flight_prices p on p.flight_id = f.id where p.flight_id is null", db));
            Assert.Equal(0L, await pg.ScalarAsync("select count(*) from flights where departure_airport_id = arrival_airport_id", db));
            // ANALYZE ran: the planner's row estimate is exact.
            Assert.Equal(2000f, await pg.ScalarAsync("select reltuples from pg_class where relname = 'flights'", db));
        }
        finally
        {
            await pg.DropDatabaseAsync(db);
        }
    }

    private async Task<JsonElement> RunAndReadJsonAsync(string uri, string db, params string[] extra)
    {
        var json = Path.Combine(Path.GetTempPath(), $"{db}.json");
        try
        {
            var (code, stdout, stderr) = await WorkloadAsync(["run", "--uri", uri, "--delay", "5", "--progress", "1s", "--json", json, .. extra]);
            Assert.Equal(0, code);
            Assert.Contains("__cycle__", stdout);
            Assert.Contains("errors: none", stdout);
            Assert.Contains("connections open in", stderr);
            using var doc = JsonDocument.Parse(await File.ReadAllTextAsync(json));
            return doc.RootElement.Clone();
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Fact]
    public async Task Run_directly_against_postgres_with_prepared_statements()
    {
        var db = await NewDatabaseAsync();
        try
        {
            await InitAsync(Direct(db));
            var before = await pg.ScalarAsync("select max(updated_at) from flight_status", db);
            var r = await RunAndReadJsonAsync(Direct(db), db, "--connections", "4", "--iterations", "40", "--name", "direct");
            Assert.Equal(0, r.GetProperty("errors_total").GetInt64());
            Assert.True(r.GetProperty("prepare").GetBoolean());
            Assert.Equal(40, r.GetProperty("steps").GetProperty("__cycle__").GetProperty("count").GetInt64());
            Assert.Equal(40, r.GetProperty("cycles").GetInt64());
            var status = r.GetProperty("steps").GetProperty("status").GetProperty("count").GetInt64();
            Assert.InRange(status, 20, 40); // 90 % of 40 cycles
            Assert.NotEqual(before, await pg.ScalarAsync("select max(updated_at) from flight_status", db));
        }
        finally
        {
            await pg.DropDatabaseAsync(db);
        }
    }

    [Fact]
    public async Task Run_through_the_pooler_in_transaction_mode_without_prepare()
    {
        var db = await NewDatabaseAsync();
        try
        {
            await using var p = await PoolerForAsync(db);
            var viaPooler = p.ConnectionString(database: db);
            await InitAsync(viaPooler);
            // 8 clients over 2 workers share the pooler's 4 server connections.
            var r = await RunAndReadJsonAsync(viaPooler, db, "--connections", "8", "--workers", "2", "--iterations", "30",
                "--no-prepare", "--name", "pooling");
            Assert.Equal(0, r.GetProperty("errors_total").GetInt64());
            Assert.False(r.GetProperty("prepare").GetBoolean());
            Assert.Equal(2, r.GetProperty("workers").GetInt32());
            Assert.Equal(60, r.GetProperty("steps").GetProperty("__cycle__").GetProperty("count").GetInt64()); // 30 per worker
            Assert.NotEmpty(r.GetProperty("distribution").GetProperty("__cycle__").EnumerateArray());
            await p.AssertDrainedAsync(servers: 4);
        }
        finally
        {
            await pg.DropDatabaseAsync(db);
        }
    }

    [Fact]
    public async Task Run_with_a_duration_stops_in_time()
    {
        var db = await NewDatabaseAsync();
        try
        {
            await InitAsync(Direct(db));
            var r = await RunAndReadJsonAsync(Direct(db), db, "--connections", "3", "--duration", "2s", "--no-prepare");
            Assert.Equal(JsonValueKind.Null, r.GetProperty("iterations").ValueKind);
            Assert.InRange(r.GetProperty("elapsed_seconds").GetDouble(), 1.5, 10);
            Assert.True(r.GetProperty("cycles").GetInt64() > 0);
        }
        finally
        {
            await pg.DropDatabaseAsync(db);
        }
    }

    [Fact]
    public async Task Sql_errors_are_counted_by_sqlstate_and_the_run_goes_on()
    {
        var db = await NewDatabaseAsync();
        try
        {
            await InitAsync(Direct(db));
            // Every price update now fails (23514 check_violation); the other steps still succeed.
            await pg.ExecuteAsync("ALTER TABLE flight_prices ADD CONSTRAINT never CHECK (price_usd < 0) NOT VALID", db);
            var json = Path.Combine(Path.GetTempPath(), $"{db}.json");
            var (code, stdout, _) = await WorkloadAsync("run", "--uri", Direct(db), "--connections", "2", "--iterations", "20",
                "--price-freq", "100", "--delay", "1", "--progress", "0", "--json", json);
            Assert.Equal(0, code);
            Assert.Contains("errors: 23514=20 (total 20)", stdout);
            using var doc = JsonDocument.Parse(await File.ReadAllTextAsync(json));
            File.Delete(json);
            Assert.Equal(20, doc.RootElement.GetProperty("errors").GetProperty("23514").GetInt64());
            Assert.Equal(20, doc.RootElement.GetProperty("steps").GetProperty("__cycle__").GetProperty("count").GetInt64());
            Assert.Equal(0, doc.RootElement.GetProperty("steps").GetProperty("price").GetProperty("count").GetInt64());
        }
        finally
        {
            await pg.DropDatabaseAsync(db);
        }
    }

    [Fact]
    public async Task Killed_connections_are_counted_and_reopened()
    {
        var db = await NewDatabaseAsync();
        try
        {
            await InitAsync(Direct(db));
            var json = Path.Combine(Path.GetTempPath(), $"{db}.json");
            var run = WorkloadAsync("run", "--uri", Direct(db), "--connections", "3", "--duration", "3s", "--delay", "20",
                "--progress", "0", "--name", "killed", "--json", json);
            await Task.Delay(1000);
            const string Backends = "select count(*) from pg_stat_activity where application_name = 'workload-killed'";
            Assert.Equal(3L, await pg.ScalarAsync(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = 'workload-killed'", db));
            // The loops notice at their next statement, count the failure and open new connections.
            await Eventually.True(async () => !run.IsCompleted && (long)(await pg.ScalarAsync(Backends, db))! == 3,
                "three new connections while the run goes on", timeout: TimeSpan.FromSeconds(1.8));
            var (code, _, _) = await run;
            Assert.Equal(0, code);
            using var doc = JsonDocument.Parse(await File.ReadAllTextAsync(json));
            File.Delete(json);
            var errors = doc.RootElement.GetProperty("errors").EnumerateObject().ToDictionary(e => e.Name, e => e.Value.GetInt64());
            Assert.InRange(errors.Where(e => e.Key is "57P01" or "08006").Sum(e => e.Value), 1, 6);
            Assert.True(doc.RootElement.GetProperty("steps").GetProperty("__cycle__").GetProperty("count").GetInt64() > 0);
        }
        finally
        {
            await pg.DropDatabaseAsync(db);
        }
    }

    [Fact]
    public async Task Run_without_a_server_exits_1()
    {
        var (code, _, stderr) = await WorkloadAsync("run", "--uri", $"postgresql://{User}@127.0.0.1:{FreePort.Next()}/x?connect_timeout=2",
            "--connections", "2", "--iterations", "2");
        Assert.Equal(1, code);
        Assert.Contains("cannot connect", stderr);
    }

    [Fact]
    public async Task Idle_holds_200_connections_through_the_pooler_until_stdin_closes()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var stdout = new LockedWriter();
        var stdin = new ClosableReader();
        var json = Path.Combine(Path.GetTempPath(), $"idle_{Guid.NewGuid():N}.json");
        using var cts = new CancellationTokenSource(Limit);
        var run = WorkloadProgram.RunAsync(["idle", "--uri", p.ConnectionString(), "--connections", "200", "--parallel", "32",
            "--hold-until-stdin-closes", "--json", json], stdout, new LockedWriter(), cts.Token, stdin);
        await Eventually.True(() => stdout.Text.Contains("HOLDING\n"), "the tool says HOLDING");
        Assert.Matches(@"idle: 200 open in [0-9.]+ s, 0 failed", stdout.Text);
        Assert.Equal(200, p.Runtime.ClientCount);
        await Task.Delay(300);
        Assert.False(run.IsCompleted, "holds while stdin is open");
        Assert.Equal(200, p.Runtime.ClientCount);

        stdin.Close();
        Assert.Equal(0, await run.WaitAsync(TimeSpan.FromSeconds(30)));
        output.WriteLine(stdout.Text);
        using var doc = JsonDocument.Parse(await File.ReadAllTextAsync(json));
        File.Delete(json);
        Assert.Equal(200, doc.RootElement.GetProperty("connections").GetInt32());
        Assert.Equal(0, doc.RootElement.GetProperty("failed").GetInt32());
        Assert.True(doc.RootElement.GetProperty("open_seconds").GetDouble() > 0);
        await Eventually.True(() => p.Runtime.ClientCount == 0, "the tool closed its connections");
    }

    /// <summary>
    /// The workload's own build output (src/Pooler.Workload/bin/CONFIG/TFM): the test folder gets ASP.NET Core's
    /// assemblies from the shared framework (Pooler.Actors serves HTTP on Kestrel), which the workload's own
    /// runtime config does not load, so it runs where its dependencies were copied.
    /// </summary>
    private static string WorkloadDll()
    {
        var testBin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)); // tests/Pooler.Tests/bin/CONFIG/TFM
        var config = testBin.Parent!.Name;
        var root = testBin.Parent.Parent!.Parent!.Parent!.Parent!.FullName;
        return Path.Combine(root, "src", "Pooler.Workload", "bin", config, testBin.Name, "Pooler.Workload.dll");
    }

    [Fact]
    public void The_built_executable_runs_idle_and_rejects_bad_arguments()
    {
        var dll = WorkloadDll();
        Assert.True(File.Exists(dll), $"{dll} is missing");
        var bad = ProcessRunner.Run("dotnet", [dll, "run", "--uri", Direct("x"), "--connections", "many"], timeout: Limit);
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("--connections", bad.StdErr);

        // ProcessRunner closes the child's stdin at once, so the holding ends right after HOLDING.
        var json = Path.Combine(Path.GetTempPath(), $"idle_{Guid.NewGuid():N}.json");
        var idle = ProcessRunner.Run("dotnet", [dll, "idle", "--uri", Direct(PostgresFixture.Database), "--connections", "5",
            "--hold-until-stdin-closes", "--json", json], timeout: Limit);
        output.WriteLine(idle.ToString());
        Assert.Equal(0, idle.ExitCode);
        Assert.Contains("idle: 5 open in", idle.StdOut);
        Assert.Contains("HOLDING", idle.StdOut);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        File.Delete(json);
        Assert.Equal(0, doc.RootElement.GetProperty("failed").GetInt32());
    }

    /// <summary>A TextWriter that several tasks may write to while the test reads it.</summary>
    private sealed class LockedWriter : TextWriter
    {
        private readonly StringBuilder _sb = new();
        public override Encoding Encoding => Encoding.UTF8;
        public override void Write(char value) { lock (_sb) _sb.Append(value); }
        public override void Write(string? value) { lock (_sb) _sb.Append(value); }
        public override void Write(char[] buffer, int index, int count) { lock (_sb) _sb.Append(buffer, index, count); }
        public override Task WriteAsync(string? value) { Write(value); return Task.CompletedTask; }
        public override Task WriteLineAsync(string? value) { Write(value + "\n"); return Task.CompletedTask; }
        public override Task FlushAsync() => Task.CompletedTask;
        public string Text { get { lock (_sb) return _sb.ToString(); } }
    }

    /// <summary>A stdin that reads nothing until <see cref="Close"/>, then reports its end.</summary>
    private sealed class ClosableReader : TextReader
    {
        private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public override void Close() => _closed.TrySetResult();
        public override async ValueTask<int> ReadAsync(Memory<char> buffer, CancellationToken cancellationToken = default)
        {
            await _closed.Task.WaitAsync(cancellationToken);
            return 0;
        }
    }
}
