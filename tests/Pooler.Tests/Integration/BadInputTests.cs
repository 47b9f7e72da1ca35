using System.Collections.Concurrent;
using System.Text;
using System.Text.RegularExpressions;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Integration;

/// <summary>
/// Malformed and hostile input over raw sockets: each bad client gets a protocol error (where the protocol
/// leaves room for one) and is closed, while well-behaved clients (pgbench) go on unharmed and nothing leaks.
/// </summary>
[Collection(PostgresCollection.Name)]
public class BadInputTests(PostgresFixture pg, ITestOutputHelper output)
{
    private const string Db = PostgresFixture.Database;
    private const string User = PostgresFixture.TrustUser;
    private const string LoginTimeout = "1s";

    /// <summary>One kind of bad input: what is sent (after a good login when <see cref="AfterLogin"/>), and what must come back.</summary>
    public sealed record BadInput(string Name, bool AfterLogin, byte[] Payload, bool HalfClose, string[]? ErrorStates)
    {
        public override string ToString() => Name;
    }

    private static readonly byte[] GoodStartup = PgBytes.Startup(("user", User), ("database", Db));

    public static IReadOnlyList<BadInput> Inputs { get; } =
    [
        new("negative length", false, [.. PgBytes.Int32(-1), .. PgBytes.Int32(PgBytes.Protocol30), 0, 0, 0, 0], false, ["08P01"]),
        new("huge length (2^31-1)", false, [.. PgBytes.Int32(int.MaxValue), .. PgBytes.Int32(PgBytes.Protocol30), .. new byte[64]], false, ["08P01"]),
        new("length 3", false, [.. PgBytes.Int32(3), .. PgBytes.Int32(PgBytes.Protocol30)], false, ["08P01"]),
        new("length 0", false, [0, 0, 0, 0, 0, 0, 0, 0], false, ["08P01"]),
        // two bytes of a length word, then end of stream: nothing to answer, the socket must just be closed
        new("truncated length", false, [0, 0], true, null),
        new("garbage before the startup packet", false, [.. Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: pooler\r\n\r\n"), .. GoodStartup], false, ["08P01"]),
        new("oversized startup packet (12000 bytes)", false, PgBytes.Startup(("user", User), ("database", Db), ("application_name", new string('x', 12000))), false, ["08P01"]),
        new("startup packet without terminator", false, [.. PgBytes.Int32(16), .. PgBytes.Int32(PgBytes.Protocol30), (byte)'u', (byte)'s', (byte)'e', (byte)'r', 0, (byte)'x', (byte)'y', (byte)'z'], false, ["08P01"]),
        new("cancel request of the wrong length", false, [.. PgBytes.Int32(20), .. PgBytes.Int32(80877102), .. new byte[12]], false, ["08P01"]),
        new("protocol version 2.0", false, [.. PgBytes.Int32(8), .. PgBytes.Int32(2 << 16)], false, ["08P01", "0A000"]),
        // half a startup packet, then nothing: closed after client-login-timeout
        new("half a startup packet, then a stall", false, GoodStartup[..(GoodStartup.Length / 2)], false, ["08P01"]),
        new("unknown message type after login", true, PgBytes.Message('y', [1, 2, 3]), false, ["08P01"]),
        new("byte 0xFF as message type after login", true, [0xFF, 0, 0, 0, 4], false, ["08P01"]),
        new("message length 2 after login", true, [(byte)'Q', .. PgBytes.Int32(2)], false, ["08P01"]),
        new("negative message length after login", true, [(byte)'Q', .. PgBytes.Int32(-5), .. new byte[16]], false, ["08P01"]),
        new("message length 2^31-1 after login", true, [(byte)'Q', .. PgBytes.Int32(int.MaxValue), .. Encoding.ASCII.GetBytes("select 1")], false, ["08P01"]),
        new("second startup packet after login", true, GoodStartup, false, ["08P01"]),
    ];

    public static TheoryData<string> InputNames()
    {
        var data = new TheoryData<string>();
        foreach (var i in Inputs) data.Add(i.Name);
        return data;
    }

    private static string Settings(string? database = null, int port = 0)
    {
        var s = $"""
            auth.type = trust
            client-login-timeout = {LoginTimeout}
            max-packet-size = 1048576

            """;
        if (database != null) s += $"databases {{ {database} {{ host = \"127.0.0.1\", port = {port}, dbname = \"{database}\" }} }}\n";
        return s;
    }

    private static async Task<RawOutcome> SendAsync(int port, BadInput input)
    {
        await using var raw = await RawConnection.ConnectAsync(port);
        if (input.AfterLogin) await raw.LoginAsync(User, Db);
        await raw.SendAsync(input.Payload);
        if (input.HalfClose) raw.ShutdownSend();
        return await raw.ReadUntilClosedAsync(TimeSpan.FromSeconds(8));
    }

    /// <summary>Null when the outcome is right, else what is wrong with it.</summary>
    private static string? Problem(BadInput input, RawOutcome o)
    {
        if (!o.Closed) return $"{input.Name}: the pooler did not close the connection: {o}";
        if (input.ErrorStates == null) return null;
        var e = o.FirstError;
        if (e == null) return $"{input.Name}: closed without an ErrorResponse: {o}";
        if (!input.ErrorStates.Contains(e.SqlState)) return $"{input.Name}: SQLSTATE {e.SqlState}, expected {string.Join("/", input.ErrorStates)}: {o}";
        if (e.Fields().GetValueOrDefault('S') != "FATAL") return $"{input.Name}: severity {e.Fields().GetValueOrDefault('S')}, expected FATAL: {o}";
        return null;
    }

    private static int OpenSockets() => Descriptors.OpenSockets();

    [Theory]
    [MemberData(nameof(InputNames))]
    public async Task Bad_input_gets_a_protocol_error_and_is_closed(string name)
    {
        var input = Inputs.Single(i => i.Name == name);
        await using var p = await PoolerHarness.StartAsync(pg, Settings());
        var outcome = await SendAsync(p.Port, input);
        Assert.Null(Problem(input, outcome));
        await Eventually.True(() => p.Runtime.ClientCount == 0, $"{name}: the bad client's session is gone", timeout: TimeSpan.FromSeconds(5));
        // and the pooler still serves a good client
        await using var good = await RawConnection.ConnectAsync(p.Port);
        await good.LoginAsync(User, Db);
        await good.SendAsync(PgBytes.Query("select 1"));
        Assert.DoesNotContain(await good.ReadUntilReadyAsync(TimeSpan.FromSeconds(5)), m => m.IsError);
    }

    [Fact]
    public async Task A_query_pipelined_behind_the_startup_packet_is_answered_or_refused_never_dropped()
    {
        // PostgreSQL itself answers it (trust: nothing to wait for between the two). A pooler may refuse it,
        // but must not swallow it and leave the client waiting for an answer that never comes.
        await using var p = await PoolerHarness.StartAsync(pg, Settings());
        await using var raw = await RawConnection.ConnectAsync(p.Port);
        await raw.SendAsync([.. GoodStartup, .. PgBytes.Query("select 42")]);
        var readies = 0;
        var got = new List<RawMessage>();
        for (var i = 0; i < 50 && readies < 2; i++)
        {
            RawMessage? m;
            try
            {
                m = await raw.ReadMessageAsync(TimeSpan.FromSeconds(5));
            }
            catch (TimeoutException)
            {
                Assert.Fail($"no answer to the pipelined query within 5 s; got [{string.Join("; ", got)}]");
                return;
            }
            if (m == null) break;
            got.Add(m);
            if (m.Type == (byte)'Z') readies++;
        }
        var refused = got.Any(m => m.IsError);
        Assert.True(readies == 2 || refused, $"got [{string.Join("; ", got)}]");
        if (!refused) Assert.Contains(got, m => m.Type == (byte)'D'); // the row of select 42
    }

    [Fact]
    public async Task Bad_input_and_abrupt_clients_leave_pgbench_unharmed_and_leak_nothing()
    {
        var db = "bench_" + Guid.NewGuid().ToString("N")[..10];
        await pg.CreateDatabaseAsync(db);
        try
        {
            var init = await pg.RunPgbenchAsync(["-i", "-s", "1", "-q"], database: db, timeout: TimeSpan.FromMinutes(2));
            Assert.True(init.Succeeded, init.ToString());

            var baseline = OpenSockets();
            await using var p = await PoolerHarness.StartAsync(pg, Settings(db, pg.Port));
            var bench = pg.RunPgbenchAsync(["-S", "-c", "8", "-T", "15", "-n"], database: db, port: p.Port, timeout: TimeSpan.FromSeconds(90));
            await Eventually.True(() => p.Runtime.ClientCount >= 8 || bench.IsCompleted, "pgbench's clients are connected", timeout: TimeSpan.FromSeconds(20));
            Assert.False(bench.IsCompleted, "pgbench ended before the bad input started: " + (bench.IsCompleted ? bench.Result.ToString() : ""));

            var watch = System.Diagnostics.Stopwatch.StartNew();
            var problems = new ConcurrentQueue<string>();
            for (var round = 0; round < 3; round++)
            {
                await Task.WhenAll(Inputs.Select(async input =>
                {
                    try
                    {
                        if (Problem(input, await SendAsync(p.Port, input)) is { } problem) problems.Enqueue($"round {round}: {problem}");
                    }
                    catch (Exception e)
                    {
                        problems.Enqueue($"round {round}: {input.Name}: {e.GetType().Name}: {e.Message}");
                    }
                })).WaitAsync(TimeSpan.FromSeconds(60));
            }

            output.WriteLine($"bad input rounds done after {watch.Elapsed.TotalSeconds:0.0}s");
            var abrupt = await OpenAndDropAsync(p.Port, count: 1000, concurrency: 40).WaitAsync(TimeSpan.FromSeconds(120));
            Assert.True(abrupt.Connected >= 990, $"only {abrupt.Connected} of 1000 abrupt clients connected; errors: {abrupt.FirstError}");
            Assert.True(abrupt.LoggedIn > 0, "no abrupt client got as far as logging in");
            output.WriteLine($"1000 abrupt clients done after {watch.Elapsed.TotalSeconds:0.0}s; pgbench still running: {!bench.IsCompleted}");

            var result = await bench.WaitAsync(TimeSpan.FromSeconds(90));
            output.WriteLine(result.StdOut);
            Assert.Empty(problems);
            Assert.True(result.Succeeded, result.ToString());
            var processed = Regex.Match(result.StdOut, @"number of transactions actually processed: (\d+)");
            Assert.True(processed.Success && long.Parse(processed.Groups[1].Value) > 0, result.StdOut);
            var failed = Regex.Match(result.StdOut, @"number of failed transactions: (\d+)");
            if (failed.Success) Assert.Equal("0", failed.Groups[1].Value);
            Assert.DoesNotContain("aborted", result.StdOut + result.StdErr, StringComparison.OrdinalIgnoreCase);

            // two pools (pgbench's user on the bench database, the raw clients' trust_user on pooler_test), 5 servers each at most,
            // and no server session outside them
            await Eventually.True(() => p.Runtime.ClientCount == 0, $"clients drained: {p.Runtime.ClientCount} left", timeout: TimeSpan.FromSeconds(20));
            var stats = await Eventually.Value(() => p.PoolStatsAsync(), st => st.Values.Sum(x => x.Total) == p.Runtime.ServerCount,
                $"every server session belongs to a pool (servers={p.Runtime.ServerCount})", timeout: TimeSpan.FromSeconds(10));
            output.WriteLine(string.Join("; ", stats.Select(kv => $"{kv.Key}: {kv.Value}")));
            Assert.All(stats.Values, st => Assert.InRange(st.Total, 0, 5));
            Assert.All(stats.Values, st => Assert.Equal(0, st.Waiting));
            output.WriteLine($"sockets: baseline {baseline}, now {OpenSockets()}, servers {p.Runtime.ServerCount}");
            // the listener and the pool's servers are the only sockets the pooler may still hold
            await Eventually.True(() => OpenSockets() <= baseline + 1 + p.Runtime.ServerCount,
                $"sockets back to baseline {baseline} + listener + {p.Runtime.ServerCount} servers: now {OpenSockets()}", timeout: TimeSpan.FromSeconds(20));
        }
        finally
        {
            await pg.DropDatabaseAsync(db);
        }
    }

    private sealed record AbruptResult(int Connected, int LoggedIn, string? FirstError);

    /// <summary>
    /// Opens <paramref name="count"/> connections, at most <paramref name="concurrency"/> at a time, and resets each
    /// at a different point: right away, mid-startup-packet, right after the startup packet, after login, with a query in flight.
    /// </summary>
    private static async Task<AbruptResult> OpenAndDropAsync(int port, int count, int concurrency)
    {
        var connected = 0;
        var loggedIn = 0;
        string? firstError = null;
        using var gate = new SemaphoreSlim(concurrency);
        var tasks = Enumerable.Range(0, count).Select(async i =>
        {
            await gate.WaitAsync();
            try
            {
                await using var raw = await RawConnection.ConnectAsync(port);
                Interlocked.Increment(ref connected);
                switch (i % 5)
                {
                    case 1:
                        await raw.SendAsync(GoodStartup[..7]);
                        break;
                    case 2:
                        await raw.SendAsync(GoodStartup);
                        break;
                    case 3:
                        await raw.LoginAsync(User, Db);
                        Interlocked.Increment(ref loggedIn);
                        break;
                    case 4 when i % 25 == 4:
                        await raw.LoginAsync(User, Db);
                        Interlocked.Increment(ref loggedIn);
                        await raw.SendAsync(PgBytes.Query("select pg_sleep(0.05)"));
                        break;
                }
                raw.Abort();
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref firstError, $"{e.GetType().Name}: {e.Message}", null);
            }
            finally
            {
                gate.Release();
            }
        }).ToArray();
        await Task.WhenAll(tasks);
        return new AbruptResult(connected, loggedIn, firstError);
    }
}
