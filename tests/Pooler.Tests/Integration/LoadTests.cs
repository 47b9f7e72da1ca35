using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Integration;

/// <summary>
/// pgbench through the in-process pooler (transaction mode, default-pool-size = 10) into a fresh
/// database: every run must end with 0 failed transactions, and PostgreSQL must never see more than
/// the pool size of backends from the pooler's user on that database (sampled every 100 ms).
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class LoadTests(PostgresFixture pg, ITestOutputHelper output)
{
    private const int PoolSize = 10;
    private const string User = PostgresFixture.ScramUser;

    [Fact]
    public Task Select_only_with_50_clients() => RunAsync(clients: 50, perClient: 400, selectOnly: true);

    [Fact]
    public async Task Select_only_with_1000_clients()
    {
        // 1000 client sockets in this process (the pooler) and 1000 in pgbench, plus the servers.
        var limit = OpenFilesLimit();
        Assert.True(limit is null or >= 2500,
            $"the open files limit of the test process is {limit}; 1000 clients need more (raise 'ulimit -n', as .ci/run does)");
        // a fixed count, not a duration: on a loaded machine 1000 SCRAM logins (PBKDF2 in pgbench) can
        // take longer than a whole -T run, which would then process nothing
        await RunAsync(clients: 1000, perClient: 10, selectOnly: true);
    }

    [Fact]
    public Task Tpcb_like_with_50_clients() => RunAsync(clients: 50, perClient: 40, selectOnly: false);

    private async Task RunAsync(int clients, int perClient, bool selectOnly)
    {
        var db = $"load_{Guid.NewGuid().ToString("N")[..12]}";
        await pg.CreateDatabaseAsync(db, owner: User);
        try
        {
            // The users file holds PostgreSQL's own SCRAM verifier, as in production (see quickstart.sh): a
            // login then costs the pooler no key derivation, and it logs in to PostgreSQL with the client's keys.
            var verifier = (string)(await pg.ScalarAsync($"select rolpassword from pg_authid where rolname = '{User}'"))!;
            await using var p = await PoolerHarness.StartAsync(pg, $$"""
                default-pool-size = {{PoolSize}}
                databases {
                  {{db}} { host = "127.0.0.1", port = {{pg.Port}}, dbname = "{{db}}" }
                }
                """, usersFile: $"\"{User}\" \"{verifier}\"\n");

            // Initialize through the pooler too (COPY, VACUUM, CREATE INDEX in transaction mode).
            var init = await pg.RunPgbenchAsync(["-i", "-s", "1", "-q"], User, database: db, port: p.Port,
                host: "127.0.0.1", timeout: TimeSpan.FromMinutes(5));
            Assert.True(init.Succeeded, $"pgbench -i through the pooler failed: {init}");
            Assert.Equal(100_000L, await pg.ScalarAsync("select count(*) from pgbench_accounts", db));

            var args = new List<string>();
            if (selectOnly) args.Add("-S");
            args.AddRange(["-n", "-c", clients.ToString(CultureInfo.InvariantCulture), "-j", "2",
                "-t", perClient.ToString(CultureInfo.InvariantCulture)]);

            using var stop = new CancellationTokenSource();
            var sampler = SampleBackendsAsync(db, stop.Token);
            ProcessResult run;
            try
            {
                run = await pg.RunPgbenchAsync(args, User, database: db, port: p.Port, host: "127.0.0.1",
                    timeout: TimeSpan.FromMinutes(5));
            }
            finally
            {
                stop.Cancel();
            }
            var (max, samples) = await sampler;

            var tps = Field(run.StdOut, @"^tps = ([0-9.]+) \(without initial connection time\)");
            var processed = Field(run.StdOut, @"^number of transactions actually processed: (\d+)");
            var failed = Field(run.StdOut, @"^number of failed transactions: (\d+)");
            var latency = Field(run.StdOut, @"^latency average = ([0-9.]+) ms");
            var connect = Field(run.StdOut, @"^initial connection time = ([0-9.]+) ms");
            output.WriteLine($"pgbench {string.Join(' ', args)} via pooler (pool {PoolSize}, transaction mode): " +
                             $"tps {tps ?? "?"}, transactions {processed ?? "?"}, failed {failed ?? "?"}, latency {latency ?? "?"} ms, " +
                             $"initial connection {connect ?? "?"} ms; most backends seen {max} in {samples} samples");

            Assert.True(run.Succeeded, $"pgbench failed: {run}");
            Assert.Equal("0", failed);
            Assert.Equal((long)clients * perClient, long.Parse(processed ?? "0", CultureInfo.InvariantCulture));
            Assert.True(samples >= 3, $"only {samples} samples of pg_stat_activity were taken during the run");
            Assert.InRange(max, 1, PoolSize);
            await p.AssertDrainedAsync(servers: PoolSize, because: "after pgbench");
        }
        finally
        {
            await pg.DropDatabaseAsync(db);
        }
    }

    /// <summary>
    /// Counts the pooler's backends (its user on <paramref name="db"/>) every 100 ms until cancelled;
    /// returns the most seen and how many samples were taken.
    /// </summary>
    private Task<(int Max, int Samples)> SampleBackendsAsync(string db, CancellationToken stop) => Task.Run(async () =>
    {
        int max = 0, samples = 0;
        while (!stop.IsCancellationRequested)
        {
            var tick = Stopwatch.StartNew();
            max = Math.Max(max, await pg.ActiveConnectionsAsync(user: User, database: db));
            samples++;
            var rest = TimeSpan.FromMilliseconds(100) - tick.Elapsed;
            if (rest > TimeSpan.Zero)
            {
                try { await Task.Delay(rest, stop); }
                catch (OperationCanceledException) { break; }
            }
        }
        return (max, samples);
    });

    private static string? Field(string text, string pattern)
    {
        var m = Regex.Match(text, pattern, RegexOptions.Multiline);
        return m.Success ? m.Groups[1].Value : null;
    }

    /// <summary>The soft "Max open files" limit of this process (Linux), or null when unknown or unlimited.</summary>
    private static long? OpenFilesLimit()
    {
        try
        {
            var line = File.ReadLines("/proc/self/limits").FirstOrDefault(l => l.StartsWith("Max open files", StringComparison.Ordinal));
            var parts = line?.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return parts is { Length: >= 4 } && long.TryParse(parts[3], out var soft) ? soft : null;
        }
        catch (IOException)
        {
            return null;
        }
    }
}
