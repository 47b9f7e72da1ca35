using Pooler.Actors.Protocol;
using Pooler.Actors.Protocol.Prepared;
using Pooler.Tests.Infrastructure;
using static Pooler.Tests.Infrastructure.ExtendedProtocol;
using Xunit;

namespace Pooler.Tests.Protocol;

/// <summary>
/// The renaming pieces against a real PostgreSQL, without actors: one client's messages go through a rewriter
/// to one of two server connections (as transaction pooling would link it), the servers' answers go back
/// through that server's plan, and the client must see what PostgreSQL itself would have answered it.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class StatementRewriterPgTests(PostgresFixture pg)
{
    private sealed class Server(RawPgConnection conn, int capacity)
    {
        public RawPgConnection Conn { get; } = conn;
        public ServerStatements Statements { get; } = new(capacity);
        public StatementCache Cache => Statements.Cache;
        public ResponsePlan Plan => Statements.Plan;
    }

    private readonly StatementRelay _relay = new(int.MaxValue);
    private ClientStatements _client => _relay.Statements;

    /// <summary>Sends the client's messages to <paramref name="server"/> through the rewriter; returns what the client sees, up to ReadyForQuery.</summary>
    private async Task<List<RawPgMessage>> RunAsync(Server server, params byte[][] messages)
    {
        // one chunk, as a client would send its pipeline
        var output = _relay.Relay(Akka.IO.ByteString.FromBytes(messages.SelectMany(m => m).ToArray()), server.Statements);
        await server.Conn.WriteRawAsync(output.ToArray());
        var seen = new List<RawPgMessage>();
        var effects = new PlanEffects();
        foreach (var m in await server.Conn.ReadUntilReadyAsync())
        {
            switch (server.Plan.OnServerMessage((byte)m.Type, m.Body, effects))
            {
                case ResponseAction.Pass: seen.Add(m); break;
                case ResponseAction.AsParseComplete: seen.Add(m with { Type = '1' }); break;
                case ResponseAction.Swallow: break;
            }
        }
        server.Statements.Apply(effects, _client);
        return seen;
    }


    [Fact]
    public async Task A_statement_follows_its_client_across_servers_and_errors_stay_exact()
    {
        await using var a = await RawPgConnection.ConnectAsync(pg.Port, PostgresFixture.TrustUser, PostgresFixture.Database);
        await using var b = await RawPgConnection.ConnectAsync(pg.Port, PostgresFixture.TrustUser, PostgresFixture.Database);
        var serverA = new Server(a, 200);
        var serverB = new Server(b, 200);

        // prepared on A, run there
        var seen = await RunAsync(serverA, Parse("q1", "select $1::int + 1", 23), Bind("q1", "41"), Execute, Sync);
        Assert.Equal("12DCZ", Types(seen));
        Assert.Equal("42", seen[2].FirstColumn());

        // the next transaction lands on B, where q1 was never prepared: the pooler prepares it, the client sees no ParseComplete
        seen = await RunAsync(serverB, Describe("q1"), Bind("q1", "1"), Execute, Sync);
        Assert.Equal("tT2DCZ", Types(seen));
        Assert.Equal("2", seen[3].FirstColumn());

        // the same query under another name on B: B has it already, the stand-in is answered as ParseComplete
        seen = await RunAsync(serverB, Parse("q1_again", "select $1::int + 1", 23), Bind("q1_again", "9"), Execute, Sync);
        Assert.Equal("12DCZ", Types(seen));
        Assert.Equal("10", seen[2].FirstColumn());
        Assert.Equal(1, serverB.Cache.Count);

        // Close is answered for the client; the server keeps the statement for others; afterwards the name is unknown
        seen = await RunAsync(serverB, Close("q1"), Sync);
        Assert.Equal("3Z", Types(seen));
        seen = await RunAsync(serverB, Bind("q1", "1"), Execute, Sync);
        Assert.Equal("EZ", Types(seen));
        Assert.Equal("26000", seen[0].Fields()['C']);
        Assert.Contains("\"q1\"", seen[0].Fields()['M']);
        seen = await RunAsync(serverB, Bind("q1_again", "0"), Execute, Sync);
        Assert.Equal("2DCZ", Types(seen));

        // a failing Parse reaches the client as PostgreSQL sent it and leaves nothing behind
        seen = await RunAsync(serverA, Parse("bad", "selec 1"), Bind("bad"), Execute, Sync);
        Assert.Equal("EZ", Types(seen));
        Assert.Equal("42601", seen[0].Fields()['C']);
        Assert.False(_client.TryGet("bad", out _));
        Assert.Equal(1, serverA.Cache.Count);
        seen = await RunAsync(serverA, Bind("bad"), Execute, Sync);
        Assert.Equal("26000", seen[0].Fields()['C']);
    }

    [Fact]
    public async Task The_server_cache_stays_within_its_bound_and_evicted_statements_are_prepared_again()
    {
        await using var a = await RawPgConnection.ConnectAsync(pg.Port, PostgresFixture.TrustUser, PostgresFixture.Database);
        var server = new Server(a, 3);
        for (var i = 0; i < 10; i++)
        {
            var seen = await RunAsync(server, Parse($"s{i}", $"select {i} + $1::int", 23), Bind($"s{i}", "1"), Execute, Sync);
            Assert.Equal("12DCZ", Types(seen));
            Assert.Equal((i + 1).ToString(), seen[2].FirstColumn());
        }
        Assert.Equal(3, server.Cache.Count);
        Assert.Equal("3", await a.ScalarAsync("select count(*) from pg_prepared_statements"));

        // s0 was evicted long ago: using it prepares it again, transparently
        var again = await RunAsync(server, Bind("s0", "5"), Execute, Sync);
        Assert.Equal("2DCZ", Types(again));
        Assert.Equal("5", again[1].FirstColumn());
        Assert.Equal("3", await a.ScalarAsync("select count(*) from pg_prepared_statements"));

        // DISCARD ALL drops them on the server and in both maps
        Assert.Equal("CZ", Types(await RunAsync(server, Query("DISCARD ALL"))));
        Assert.Equal(0, server.Cache.Count);
        Assert.False(_client.TryGet("s1", out _));
        Assert.Equal("0", await a.ScalarAsync("select count(*) from pg_prepared_statements"));
    }
}
