using Akka.Configuration;
using Pooler.Actors.Cluster;
using Pooler.Actors.Config;
using Xunit;

namespace Pooler.Tests.Cluster;

public sealed class ClusterConfigTests
{
    private static KeyValuePair<string, string> Env(string k, string v) => KeyValuePair.Create(k, v);

    [Fact]
    public void Lighthouse_style_variables_map_onto_the_standard_akka_keys()
    {
        var c = ClusterConfig.FromEnvironment([Env("CLUSTER_IP", "10.0.0.7"), Env("CLUSTER_PORT", "4053"),
            Env("CLUSTER_SEEDS", "akka.tcp://pooler@10.0.0.1:4053, akka.tcp://pooler@10.0.0.2:4053")])!;
        Assert.Equal("10.0.0.7", c.GetString("akka.remote.dot-netty.tcp.hostname"));
        Assert.Equal("10.0.0.7", c.GetString("akka.remote.dot-netty.tcp.public-hostname"));
        Assert.Equal(4053, c.GetInt("akka.remote.dot-netty.tcp.port"));
        Assert.Equal(["akka.tcp://pooler@10.0.0.1:4053", "akka.tcp://pooler@10.0.0.2:4053"], c.GetStringList("akka.cluster.seed-nodes"));
        Assert.True(ClusterConfig.IsClustered(c));
    }

    [Fact]
    public void No_variables_no_layer_and_no_cluster()
    {
        Assert.Null(ClusterConfig.FromEnvironment([Env("PATH", "/bin")]));
        var reference = SettingsLoader.Reference();
        Assert.False(ClusterConfig.IsClustered(reference));
        Assert.Same(reference, ClusterConfig.WithProvider(reference));
    }

    [Theory]
    [InlineData("CLUSTER_PORT", "http")]
    [InlineData("CLUSTER_PORT", "70000")]
    [InlineData("CLUSTER_SEEDS", "10.0.0.1:4053")]
    [InlineData("CLUSTER_SEEDS", "akka.tcp://pooler@10.0.0.1")]
    public void Malformed_values_are_refused_naming_the_variable(string name, string value)
    {
        var e = Assert.Throws<ConfigException>(() => ClusterConfig.FromEnvironment([Env(name, value)]));
        Assert.Equal(name, e.Key);
    }

    [Fact]
    public void Seeds_switch_the_provider_to_cluster_and_the_environment_layer_sits_under_akka_variables()
    {
        var c = SettingsLoader.Layer(null, [Env("CLUSTER_SEEDS", "akka.tcp://pooler@127.0.0.1:4053"), Env("CLUSTER_PORT", "5000"),
            Env("AKKA__REMOTE__DOT_NETTY__TCP__PORT", "5001")], []);
        Assert.Equal("cluster", ClusterConfig.WithProvider(c).GetString("akka.actor.provider"));
        Assert.Equal(5001, c.GetInt("akka.remote.dot-netty.tcp.port"));
    }

    [Fact]
    public void Every_node_runs_keep_majority_with_timings_that_fit_the_failover_target()
    {
        var c = SettingsLoader.Reference();
        Assert.Equal("Akka.Cluster.SBR.SplitBrainResolverProvider, Akka.Cluster", c.GetString("akka.cluster.downing-provider-class"));
        Assert.Equal("keep-majority", c.GetString("akka.cluster.split-brain-resolver.active-strategy"));
        // detection (heartbeat pause) + decision (stable-after) + removal margin must leave room under 5 s
        var total = c.GetTimeSpan("akka.cluster.failure-detector.acceptable-heartbeat-pause")
            + c.GetTimeSpan("akka.cluster.split-brain-resolver.stable-after")
            + c.GetTimeSpan("akka.cluster.down-removal-margin");
        Assert.True(total <= TimeSpan.FromSeconds(3), $"{total}");
        Assert.Equal(["pooler"], c.GetStringList("akka.cluster.roles"));
    }
}
