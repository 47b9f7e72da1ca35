using Pooler.Actors;
using Xunit;

namespace Pooler.Tests.Pooling;

public sealed class ConnectionBudgetTests
{
    [Fact]
    public void Alone_max_db_and_max_user_connections_cap_the_node()
    {
        var b = new ConnectionBudget();
        Assert.True(b.TryTake("db", "u", maxDb: 2, maxUser: 0));
        Assert.True(b.TryTake("db", "v", maxDb: 2, maxUser: 0));
        Assert.False(b.TryTake("db", "w", maxDb: 2, maxUser: 0));
        b.Return("db", "v");
        Assert.True(b.TryTake("db", "w", maxDb: 2, maxUser: 0));
        Assert.False(b.OverQuota("db"));
    }

    [Fact]
    public void In_a_cluster_the_granted_quota_caps_the_node_and_refusals_are_counted_for_the_next_report()
    {
        var b = new ConnectionBudget();
        b.EnableClusterQuotas();
        Assert.False(b.TryTake("db", "u", maxDb: 10, maxUser: 0)); // nothing granted yet
        b.SetQuota("db", 2);
        Assert.True(b.TryTake("db", "u", maxDb: 10, maxUser: 0));
        Assert.True(b.TryTake("db", "u", maxDb: 10, maxUser: 0));
        Assert.False(b.TryTake("db", "u", maxDb: 10, maxUser: 0));
        Assert.Equal((2, 2, 2), b.TakeReport("db"));
        Assert.Equal((2, 2, 0), b.TakeReport("db")); // refusals are reset by a report

        // the quota can never exceed the cluster-wide cap itself
        b.SetQuota("db", 50);
        Assert.True(b.TryTake("db", "u", maxDb: 3, maxUser: 0));
        Assert.False(b.TryTake("db", "u", maxDb: 3, maxUser: 0));

        // lowered below what is open: the node is over quota until servers close
        b.SetQuota("db", 1);
        Assert.True(b.OverQuota("db"));
        b.Return("db", "u");
        b.Return("db", "u");
        Assert.False(b.OverQuota("db"));
        Assert.Contains("db", b.Databases());
    }

    [Fact]
    public void In_a_cluster_databases_without_max_db_connections_are_not_capped()
    {
        var b = new ConnectionBudget();
        b.EnableClusterQuotas();
        for (var i = 0; i < 100; i++) Assert.True(b.TryTake("free", "u", maxDb: 0, maxUser: 0));
    }
}
