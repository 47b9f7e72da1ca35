using System.Net.Sockets;
using System.Text;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Ops;

/// <summary>
/// The operator's ways in leave nothing behind: many admin console sessions, pbm requests (some cut off
/// mid-request) and HTTP scrapes later, the process has as many open descriptors and as many clients as
/// before, and the pool still serves.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class OpsLeakTests(PostgresFixture pg, ITestOutputHelper output)
{
    private static int OpenDescriptors(int pid) => Directory.GetFiles($"/proc/{pid}/fd").Length;

    [Fact]
    public async Task Console_pbm_and_http_sessions_return_descriptors_and_clients_to_baseline()
    {
        await using var p = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg, settings: "auth.type = trust\nadmin-users = [pooler_admin]"));
        var pbmPort = await p.PbmPortAsync();
        var httpPort = await p.HttpPortAsync();
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{httpPort}") };
        // warm each path once (Kestrel, JIT, thread pool) before the baseline
        await ConsoleOnce(p.Port);
        await PbmOnce(pbmPort, complete: true);
        (await http.GetAsync("/metrics")).EnsureSuccessStatusCode();
        var baseline = OpenDescriptors(p.Pid);
        output.WriteLine($"baseline: {baseline} descriptors");

        for (var i = 0; i < 60; i++)
        {
            await ConsoleOnce(p.Port);
            await PbmOnce(pbmPort, complete: i % 3 != 0); // every third hangs up before its request line ends
            if (i % 10 == 0) (await http.GetAsync("/stats.json")).EnsureSuccessStatusCode();
        }

        // HttpClient keeps one pooled connection; everything else must be closed again
        await Eventually.True(() => OpenDescriptors(p.Pid) <= baseline + 2,
            $"descriptors back to baseline {baseline} (now {OpenDescriptors(p.Pid)})", TimeSpan.FromSeconds(30));
        await using var admin = await RawPgConnection.ConnectAsync(p.Port, PostgresFixture.AdminUser, "pgbouncer");
        var clients = (await admin.QueryAsync("SHOW CLIENTS")).Count(m => m.Type == 'D');
        Assert.Equal(1, clients); // this session only
        await using var app = await p.OpenAsync(pg, PostgresFixture.TrustUser);
        await using var cmd = app.CreateCommand();
        cmd.CommandText = "select 42";
        Assert.Equal(42, await cmd.ExecuteScalarAsync());
    }

    private static async Task ConsoleOnce(int port)
    {
        await using var c = await RawPgConnection.ConnectAsync(port, PostgresFixture.AdminUser, "pgbouncer");
        Assert.Contains(await c.QueryAsync("SHOW POOLS"), m => m.Type == 'T');
        await c.TerminateAsync();
    }

    private static async Task PbmOnce(int port, bool complete)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", port);
        var stream = tcp.GetStream();
        var request = """{"args":["node","status"],"json":false}""";
        await stream.WriteAsync(Encoding.UTF8.GetBytes(complete ? request + "\n" : request[..10]));
        if (!complete) return;
        var reader = new StreamReader(stream);
        while (await reader.ReadLineAsync() is { } line)
            if (line.StartsWith("{\"exit\":", StringComparison.Ordinal)) { Assert.Equal("{\"exit\":0}", line); return; }
        Assert.Fail("pbm closed without an exit line");
    }
}
