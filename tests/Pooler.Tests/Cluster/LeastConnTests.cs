using System.Net;
using Akka.Actor;
using Akka.Cluster;
using Akka.TestKit.Xunit2;
using Pooler.Actors.Cluster;
using Xunit;

namespace Pooler.Tests.Cluster;

public sealed class LeastConnTests : TestKit
{
    private static readonly Address Self = new("akka.tcp", "pooler", "10.0.0.1", 4053);
    private static readonly Address B = new("akka.tcp", "pooler", "10.0.0.2", 4053);
    private static readonly Address C = new("akka.tcp", "pooler", "10.0.0.3", 4053);
    private static readonly DateTime T0 = new(2026, 11, 26, 0, 0, 0, DateTimeKind.Utc);

    private static Dictionary<Address, EndPoint> Remotes(params Address[] nodes)
        => nodes.ToDictionary(n => n, n => (EndPoint)new IPEndPoint(IPAddress.Parse(n.Host!), 6432));

    [Fact]
    public void Alone_every_client_is_served_here()
    {
        var lc = new LeastConn(Self);
        Assert.Equal((Self, (EndPoint?)null), lc.Choose(T0));
    }

    [Fact]
    public void Clients_go_to_the_node_with_the_fewest_and_come_back_when_they_leave()
    {
        var lc = new LeastConn(Self);
        lc.SetRemotes(Remotes(B, C));
        var children = new List<(IActorRef Child, Address Node)>();
        for (var i = 0; i < 6; i++)
        {
            var (node, endpoint) = lc.Choose(T0);
            Assert.Equal(node.Equals(Self), endpoint is null);
            var child = CreateTestProbe().Ref;
            lc.Started(child, node);
            children.Add((child, node));
        }
        Assert.Equal([2, 2, 2], new[] { lc.Active(Self), lc.Active(B), lc.Active(C) });

        // two of B's clients leave: the next two go to B
        foreach (var (child, _) in children.Where(c => c.Node.Equals(B))) lc.Ended(child);
        Assert.Equal(B, lc.Choose(T0).Node);
        lc.Started(CreateTestProbe().Ref, B);
        Assert.Equal(B, lc.Choose(T0).Node);
    }

    [Fact]
    public void A_node_that_could_not_be_reached_is_skipped_for_a_while_and_a_node_that_left_is_forgotten()
    {
        var lc = new LeastConn(Self);
        lc.SetRemotes(Remotes(B));
        lc.Started(CreateTestProbe().Ref, Self);
        Assert.Equal(B, lc.Choose(T0).Node);
        lc.Suspect(B, T0);
        Assert.Equal(Self, lc.Choose(T0.AddSeconds(1)).Node);
        Assert.Equal(B, lc.Choose(T0.AddSeconds(6)).Node);

        lc.SetRemotes(Remotes()); // B left the cluster
        Assert.Equal(Self, lc.Choose(T0.AddSeconds(7)).Node);
    }

    [Fact]
    public void Ending_an_unknown_child_changes_nothing()
    {
        var lc = new LeastConn(Self);
        lc.Ended(CreateTestProbe().Ref);
        Assert.Equal(0, lc.Active(Self));
    }
}

public sealed class NodeTagTests
{
    [Fact]
    public void A_tag_is_stable_in_range_and_carried_by_the_pids_a_node_mints()
    {
        var node = new UniqueAddress(new Address("akka.tcp", "pooler", "127.0.0.1", 4601), 12345);
        var tag = NodeTag.Of(node);
        Assert.Equal(tag, NodeTag.Of(new UniqueAddress(new Address("akka.tcp", "pooler", "127.0.0.1", 4601), 12345)));
        Assert.InRange(tag, 1, 1023);
        Assert.NotEqual(tag, NodeTag.Of(new UniqueAddress(new Address("akka.tcp", "pooler", "127.0.0.1", 4601), 12346)));

        var registry = new Pooler.Actors.CancelRegistry { NodeTag = tag };
        for (var i = 0; i < 100; i++)
        {
            var (pid, _) = registry.Register(ActorRefs.Nobody);
            Assert.True(pid > 0);
            Assert.Equal(tag, NodeTag.FromPid(pid));
        }
    }

    [Fact]
    public void Outside_a_cluster_pids_are_plain_random_numbers()
    {
        Assert.Equal(12345, NodeTag.Pid(0, 12345));
        Assert.Equal(0, NodeTag.FromPid(NodeTag.Pid(0, 5)));
    }
}
