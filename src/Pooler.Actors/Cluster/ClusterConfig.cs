using Akka.Actor;
using Akka.Configuration;
using Hocon = Akka.Configuration.Config;
using Pooler.Actors.Config;

namespace Pooler.Actors.Cluster;

/// <summary>
/// The cluster part of a node's configuration: petabridge/lighthouse-style environment variables
/// (<c>CLUSTER_IP</c>, <c>CLUSTER_PORT</c>, <c>CLUSTER_SEEDS</c>) mapped onto the standard Akka keys, and the
/// switch to the cluster provider when the node has seeds to join.
/// </summary>
public static class ClusterConfig
{
    /// <summary>The ActorSystem name every node of a Pooler cluster shares (seed addresses name it).</summary>
    public const string SystemName = "pooler";

    /// <summary>
    /// A layer for <c>CLUSTER_IP</c> (hostname, and the address other nodes use), <c>CLUSTER_PORT</c> and
    /// <c>CLUSTER_SEEDS</c> (comma list of akka.tcp://pooler@host:port); null when none is set.
    /// </summary>
    /// <exception cref="ConfigException">A malformed port or seed.</exception>
    public static Hocon? FromEnvironment(IEnumerable<KeyValuePair<string, string>> environment)
    {
        var env = environment.ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);
        var ip = env.GetValueOrDefault("CLUSTER_IP")?.Trim();
        var portText = env.GetValueOrDefault("CLUSTER_PORT")?.Trim();
        var seedsText = env.GetValueOrDefault("CLUSTER_SEEDS")?.Trim();
        if (string.IsNullOrEmpty(ip) && string.IsNullOrEmpty(portText) && string.IsNullOrEmpty(seedsText))
            return null;

        var lines = new List<string>();
        if (!string.IsNullOrEmpty(ip))
        {
            lines.Add($"akka.remote.dot-netty.tcp.hostname = {SettingsLoader.Quote(ip)}");
            lines.Add($"akka.remote.dot-netty.tcp.public-hostname = {SettingsLoader.Quote(ip)}");
        }
        if (!string.IsNullOrEmpty(portText))
        {
            if (!int.TryParse(portText, out var port) || port < 0 || port > 65535)
                throw new ConfigException("CLUSTER_PORT", $"must be a port number, got '{portText}'");
            lines.Add($"akka.remote.dot-netty.tcp.port = {port}");
        }
        if (!string.IsNullOrEmpty(seedsText))
        {
            var seeds = seedsText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            foreach (var seed in seeds)
                if (!Uri.TryCreate(seed, UriKind.Absolute, out var uri) || uri.Scheme != "akka.tcp" || uri.Port <= 0)
                    throw new ConfigException("CLUSTER_SEEDS", $"each seed must look like akka.tcp://{SystemName}@host:port, got '{seed}'");
            lines.Add($"akka.cluster.seed-nodes = [{string.Join(", ", seeds.Select(SettingsLoader.Quote))}]");
        }
        return lines.Count == 0 ? null : ConfigurationFactory.ParseString(string.Join('\n', lines));
    }

    /// <summary>Whether this actor system runs the cluster provider (a node of a cluster, not a single pooler).</summary>
    public static bool IsClustered(ActorSystem system) => system.Settings.ProviderClass.Contains("Cluster", StringComparison.Ordinal);

    /// <summary>True when the node should join a cluster: it has seed nodes, or the cluster provider is asked for.</summary>
    public static bool IsClustered(Hocon config)
    {
        var seeds = config.HasPath("akka.cluster.seed-nodes") ? config.GetStringList("akka.cluster.seed-nodes") : [];
        var provider = config.GetString("akka.actor.provider", "") ?? "";
        return seeds.Count > 0 || provider.Equals("cluster", StringComparison.OrdinalIgnoreCase)
            || provider.Contains("ClusterActorRefProvider", StringComparison.Ordinal);
    }

    /// <summary>The configuration with <c>akka.actor.provider = cluster</c> when <see cref="IsClustered"/>.</summary>
    public static Hocon WithProvider(Hocon config)
        => IsClustered(config) ? ConfigurationFactory.ParseString("akka.actor.provider = cluster").WithFallback(config) : config;
}
