using Pooler.Workload;
using Xunit;

namespace Pooler.Tests.Workload;

public sealed class WorkloadArgumentTests
{
    private const string Uri = "postgresql://app:secret@127.0.0.1:6432/defaultdb?sslmode=prefer";

    [Fact]
    public void Run_defaults_match_dbworkload_parameters_of_the_seed()
    {
        var o = ArgParser.ParseRun(["--uri", Uri]);
        Assert.Equal(256, o.Connections);
        Assert.Equal(1, o.Workers);
        Assert.Null(o.Iterations);
        Assert.Equal(TimeSpan.FromSeconds(60), o.Duration);
        Assert.Equal((10.0, 90.0, 75.0, 25.0), (o.ScheduleFreq, o.StatusFreq, o.InventoryFreq, o.PriceFreq));
        Assert.Equal(64, o.BatchSize);
        Assert.Equal(100, o.DelayMs);
        Assert.True(o.Prepare);
        Assert.Equal("direct", o.Name);
        Assert.Null(o.JsonFile);
        Assert.Equal(TimeSpan.FromSeconds(5), o.Progress);
        Assert.False(o.Cockroach);
    }

    [Fact]
    public void Run_takes_every_option_in_both_spellings()
    {
        var o = ArgParser.ParseRun([
            "--uri", Uri, "--connections=1024", "--workers", "4", "--iterations", "8192", "--schedule-freq", "5",
            "--status-freq=50.5", "--inventory-freq", "0", "--price-freq", "100", "--batch-size", "32", "--delay", "0",
            "--no-prepare", "--name", "pooling", "--json", "out/r.json", "--progress", "500ms", "--cockroach",
        ]);
        Assert.Equal(1024, o.Connections);
        Assert.Equal(4, o.Workers);
        Assert.Equal(8192, o.Iterations);
        Assert.Null(o.Duration);
        Assert.Equal((5.0, 50.5, 0.0, 100.0), (o.ScheduleFreq, o.StatusFreq, o.InventoryFreq, o.PriceFreq));
        Assert.Equal(32, o.BatchSize);
        Assert.Equal(0, o.DelayMs);
        Assert.False(o.Prepare);
        Assert.Equal("pooling", o.Name);
        Assert.Equal("out/r.json", o.JsonFile);
        Assert.Equal(TimeSpan.FromMilliseconds(500), o.Progress);
        Assert.True(o.Cockroach);
    }

    [Fact]
    public void Connections_are_split_over_workers_and_iterations_over_a_workers_connections()
    {
        var o = ArgParser.ParseRun(["--uri", Uri, "--connections", "1026", "--workers", "4", "--iterations", "8192"]);
        Assert.Equal([257, 257, 256, 256], Enumerable.Range(0, 4).Select(o.ConnectionsOf));
        Assert.Equal(1026, Enumerable.Range(0, 4).Sum(o.ConnectionsOf));
        // dbworkload: 8192 iterations over 256 threads = 32 each.
        Assert.All(Enumerable.Range(0, 256), i => Assert.Equal(32, o.IterationsOf(i, 256)));
        var ten = ArgParser.ParseRun(["--uri", Uri, "--iterations", "10"]);
        Assert.Equal([4L, 3, 3], Enumerable.Range(0, 3).Select(i => ten.IterationsOf(i, 3)));
        var timed = ArgParser.ParseRun(["--uri", Uri, "--duration", "2m"]);
        Assert.Equal(TimeSpan.FromMinutes(2), timed.Duration);
        Assert.Equal(long.MaxValue, timed.IterationsOf(0, 5));
    }

    [Fact]
    public void Init_and_idle_options()
    {
        var init = ArgParser.ParseInit(["--uri", Uri]);
        Assert.Equal(50_000, init.Flights);
        Assert.Equal(2000, ArgParser.ParseInit(["--uri", Uri, "--flights", "2000", "--cockroach"]).Flights);

        var idle = ArgParser.ParseIdle(["--uri", Uri, "--connections", "10000"]);
        Assert.Equal((10000, 64, TimeSpan.FromSeconds(10), false), (idle.Connections, idle.Parallel, idle.Hold, idle.HoldUntilStdinCloses));
        var held = ArgParser.ParseIdle(["--uri", Uri, "--connections", "5", "--hold-until-stdin-closes", "--parallel", "8", "--json", "i.json"]);
        Assert.True(held.HoldUntilStdinCloses);
        Assert.Equal(8, held.Parallel);
        Assert.Equal("i.json", held.JsonFile);
    }

    [Theory]
    [InlineData("500ms", 0.5)]
    [InlineData("10s", 10)]
    [InlineData("1.5s", 1.5)]
    [InlineData("5m", 300)]
    [InlineData("1h", 3600)]
    [InlineData("7", 7)]
    [InlineData("0", 0)]
    public void Durations(string text, double seconds)
    {
        Assert.True(ArgParser.TryParseDuration(text, out var d));
        Assert.Equal(seconds, d.TotalSeconds, 6);
    }

    [Theory]
    [InlineData("--connections", "run", "--uri", Uri, "--connections", "abc")]
    [InlineData("--connections", "run", "--uri", Uri, "--connections", "0")]
    [InlineData("--connections", "run", "--uri", Uri, "--connections")]
    [InlineData("--workers", "run", "--uri", Uri, "--connections", "2", "--workers", "3")]
    [InlineData("--iterations", "run", "--uri", Uri, "--iterations", "10", "--duration", "5s")]
    [InlineData("--duration", "run", "--uri", Uri, "--duration", "soon")]
    [InlineData("--duration", "run", "--uri", Uri, "--duration", "0s")]
    [InlineData("--status-freq", "run", "--uri", Uri, "--status-freq", "101")]
    [InlineData("--batch-size", "run", "--uri", Uri, "--batch-size", "-1")]
    [InlineData("--delay", "run", "--uri", Uri, "--delay", "1.5")]
    [InlineData("--bogus", "run", "--uri", Uri, "--bogus", "1")]
    [InlineData("--no-prepare", "run", "--uri", Uri, "--no-prepare=yes")]
    [InlineData("--uri", "run", "--connections", "4")]
    [InlineData("--uri", "run", "--uri", "postgresql://h:notaport/db")]
    [InlineData("--name", "run", "--uri", Uri, "--name", "a", "--name", "b")]
    [InlineData("--flights", "init", "--uri", Uri, "--flights", "many")]
    [InlineData("--connections", "idle", "--uri", Uri)]
    [InlineData("--hold", "idle", "--uri", Uri, "--connections", "3", "--hold", "1s", "--hold-until-stdin-closes")]
    [InlineData("unknown command", "bench", "--uri", Uri)]
    [InlineData("missing command")]
    [InlineData("unexpected argument", "run", "stray")]
    public async Task Bad_arguments_exit_2_naming_the_argument(string named, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await WorkloadProgram.RunAsync(args, stdout, stderr, CancellationToken.None);
        Assert.Equal(2, code);
        var first = stderr.ToString().Split('\n')[0];
        Assert.StartsWith("error: ", first);
        Assert.Contains(named, first);
        Assert.Equal("", stdout.ToString());
    }

    [Fact]
    public async Task Help_exits_0_with_the_usage()
    {
        var stdout = new StringWriter();
        Assert.Equal(0, await WorkloadProgram.RunAsync(["--help"], stdout, new StringWriter(), CancellationToken.None));
        Assert.Contains("Pooler.Workload run", stdout.ToString());
    }

    [Fact]
    public void Uri_becomes_npgsql_settings_and_is_redacted()
    {
        var b = ConnectionStrings.ToBuilder("postgresql://pgb:s%40cret@db.local:26257/defaultdb?sslmode=prefer&application_name=Transactions");
        Assert.Equal(("pgb", "s@cret", "db.local", 26257, "defaultdb"), (b.Username, b.Password, b.Host, b.Port, b.Database));
        Assert.Equal(Npgsql.SslMode.Prefer, b.SslMode);
        Assert.Equal("Transactions", b.ApplicationName);
        Assert.Equal(Npgsql.GssEncryptionMode.Disable, b.GssEncryptionMode);
        Assert.Equal(ConnectionStrings.DefaultCommandTimeoutSeconds, b.CommandTimeout);
        Assert.Equal("postgresql://pgb:***@db.local:26257/defaultdb?sslmode=prefer&application_name=Transactions",
            ConnectionStrings.Redact("postgresql://pgb:s%40cret@db.local:26257/defaultdb?sslmode=prefer&application_name=Transactions"));
        Assert.Equal("postgres://u@h/d", ConnectionStrings.Redact("postgres://u@h/d"));

        var multi = ConnectionStrings.ToBuilder("postgresql://u@h1:1,h2:2/d?Command%20Timeout=7");
        Assert.Equal("h1:1,h2:2", multi.Host);
        Assert.Equal(7, multi.CommandTimeout);

        var npgsql = ConnectionStrings.ToBuilder("Host=x;Username=u;Password=p;Database=d");
        Assert.Equal(("x", "d"), (npgsql.Host, npgsql.Database));
        Assert.DoesNotContain("=p", ConnectionStrings.Redact("Host=x;Username=u;Password=p;Database=d"));
    }

    [Fact]
    public void No_prepare_turns_off_server_side_statements_and_the_reset()
    {
        var prepared = RunCommand.WorkerSettings(ArgParser.ParseRun(["--uri", Uri]), 64);
        Assert.Equal(64, prepared.MaxPoolSize);
        Assert.False(prepared.NoResetOnClose);
        var plain = RunCommand.WorkerSettings(ArgParser.ParseRun(["--uri", Uri, "--no-prepare", "--name", "pooling"]), 256);
        Assert.Equal(0, plain.MaxAutoPrepare);
        Assert.True(plain.NoResetOnClose);
        Assert.Equal(256, plain.MaxPoolSize);
        Assert.True(plain.Pooling);
    }
}
