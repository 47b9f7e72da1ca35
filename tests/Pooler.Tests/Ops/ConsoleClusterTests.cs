using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Ops;

/// <summary>The console's cluster extras (SHOW CLUSTER, SHOW VIP, SHOW PEER_POOLS) on a Lighthouse and two pooler nodes.</summary>
[Collection(PostgresCollection.Name)]
public sealed class ConsoleClusterTests(PostgresFixture pg, ITestOutputHelper output)
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Show_cluster_vip_and_peer_pools_describe_the_whole_cluster()
    {
        await using var cluster = await LoopbackCluster.StartAsync(output);
        const string settings = "admin-users = [pooler_admin]";
        var first = await cluster.StartNodeAsync(pg, settings);
        await first.Process.WaitForOutputAsync(LoopbackCluster.IsHoldingLine, "the first node holds the VIP", LoopbackCluster.StartTimeout);
        var second = await cluster.StartNodeAsync(pg, settings);
        // a client on each node's own port, one database only on the second
        await using var a = await first.Process.OpenAsync(pg);
        await using var b = await second.Process.OpenAsync(pg, database: PostgresFixture.OtherDatabase);
        foreach (var c in new[] { a, b })
        {
            await using var cmd = c.CreateCommand();
            cmd.CommandText = "select 1";
            await cmd.ExecuteScalarAsync();
        }

        await using var console = await ConsoleClient.ConnectAsync(second.Process.Port, PostgresFixture.AdminUser, PostgresFixture.AdminPassword, "pgbouncer");

        var members = (await console.QueryAsync("SHOW CLUSTER")).EnsureOk().Maps().ToList();
        Assert.Equal(new[] { cluster.Lighthouse.Address, first.Address, second.Address }.Order(StringComparer.Ordinal),
            members.Select(m => m["member"]!).Order(StringComparer.Ordinal));
        Assert.All(members, m => Assert.Equal(("Up", "1"), (m["status"], m["reachable"])));
        Assert.Equal(first.Address, Assert.Single(members, m => m["vip_holder"] == "1")["member"]);
        Assert.Equal("lighthouse", members.Single(m => m["member"] == cluster.Lighthouse.Address)["roles"]);

        var vip = Assert.Single((await console.QueryAsync("SHOW VIP")).EnsureOk().Maps());
        Assert.Equal((cluster.VipHost, "bind", first.Address), (vip["address"], vip["driver"], vip["holder"]));

        // every pooler node's pools, each row named by its node; the asking node's own console is not a pool there
        await Eventually.True(async () =>
        {
            var rows = (await console.QueryAsync("SHOW PEER_POOLS")).EnsureOk().Maps().ToList();
            return rows.Any(r => r["node"] == first.Name && r["database"] == PostgresFixture.Database)
                && rows.Any(r => r["node"] == second.Name && r["database"] == PostgresFixture.OtherDatabase)
                && rows.All(r => r["node"] == first.Name || r["node"] == second.Name);
        }, "SHOW PEER_POOLS lists both nodes' pools", Limit);
    }
}
