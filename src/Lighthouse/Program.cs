using System.Runtime.InteropServices;
using Akka.Actor;
using Akka.Configuration;
using Akka.Event;
using Pooler.Actors.Cluster;
using Pooler.Actors.Config;
using Pooler.Actors.Ops;

// Lighthouse: a seed node of the Pooler cluster with role "lighthouse" and no pools. Configured like
// petabridge/lighthouse: hocon/lighthouse.hocon, then CLUSTER_IP, CLUSTER_PORT (default 4053) and
// CLUSTER_SEEDS (comma list; default: this node itself). Its VIP witness votes in the lease majority.

if (args is ["--help" or "-h"])
{
    Console.WriteLine("usage: Lighthouse [[--config] FILE.hocon]   (default: lighthouse.hocon beside the binary)");
    Console.WriteLine("environment: CLUSTER_IP, CLUSTER_PORT (4053), CLUSTER_SEEDS (akka.tcp://pooler@host:port,...)");
    return 0;
}
string? configFile = args switch
{
    [] => null,
    ["--config", var f] => f,
    [var f] when !f.StartsWith('-') => f,
    _ => null,
};
if (args.Length > 0 && configFile is null)
{
    Console.Error.WriteLine("lighthouse: expected at most a HOCON file (--config FILE or FILE); try --help");
    return 2;
}

Config config;
PbmSettings pbmSettings;
try
{
    var file = configFile ?? Path.Combine(AppContext.BaseDirectory, "lighthouse.hocon");
    var env = Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
        .Select(e => KeyValuePair.Create((string)e.Key, e.Value as string ?? "")).ToList();
    // reference.conf (the same akka.cluster timings and split-brain settings as every pooler node: they must
    // agree), the file, CLUSTER_* and POOLER__/AKKA__ variables (e.g. POOLER__PBM__PORT)
    config = SettingsLoader.Layer(file, env, []);
    pbmSettings = SettingsLoader.LoadPbm(config);
    if (config.GetStringList("akka.cluster.seed-nodes").Count == 0)
    {
        var self = $"akka.tcp://{ClusterConfig.SystemName}@{config.GetString("akka.remote.dot-netty.tcp.public-hostname", null) ?? config.GetString("akka.remote.dot-netty.tcp.hostname")}:{config.GetInt("akka.remote.dot-netty.tcp.port")}";
        config = ConfigurationFactory.ParseString($"akka.cluster.seed-nodes = [{SettingsLoader.Quote(self)}]").WithFallback(config);
    }
}
catch (Exception e) when (e is IOException or ConfigurationException or ConfigException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"lighthouse: invalid configuration: {e.Message}");
    return 2;
}

var system = ActorSystem.Create(ClusterConfig.SystemName, config.WithFallback(ConfigurationFactory.Default()));
var log = Logging.GetLogger(system, "lighthouse");
var cluster = Akka.Cluster.Cluster.Get(system);
ClusterNode.StartWitness(system);
log.Info("lighthouse {0}: roles [{1}], seeds {2}", cluster.SelfAddress, string.Join(", ", cluster.SelfRoles),
    string.Join(", ", config.GetStringList("akka.cluster.seed-nodes")));

var stop = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
// pbm: cluster commands from here too; "node drain" / "cluster leave" stop this Lighthouse in order
var ops = system.ActorOf(OpsAgent.Props(null, string.Join(",", cluster.SelfRoles), ClusterNode.StartVipProxy(system), new LighthouseControl(stop)), OpsAgent.Name);
if (pbmSettings.Enabled)
{
    try { log.Info("pbm endpoint on {0}", await PbmEndpoint.StartAsync(system, pbmSettings, ops)); }
    catch (Exception e) { log.Error("pbm endpoint not started: {0}", e.Message); }
}
void OnSignal(PosixSignalContext c) { c.Cancel = true; stop.TrySetResult(c.Signal.ToString()); }
using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
var leaving = false;
cluster.RegisterOnMemberRemoved(() => { if (!Volatile.Read(ref leaving)) stop.TrySetResult("removed from the cluster (downed)"); });

var reason = await stop.Task;
log.Info("lighthouse {0}: {1}, leaving the cluster", cluster.SelfAddress, reason);
var downed = reason.StartsWith("removed", StringComparison.Ordinal);
Volatile.Write(ref leaving, true);
if (!downed)
{
    try { await cluster.LeaveAsync().WaitAsync(TimeSpan.FromSeconds(10)); }
    catch (TimeoutException) { log.Warning("lighthouse {0}: leaving took over 10 s, stopping anyway", cluster.SelfAddress); }
}
await system.Terminate();
return downed ? 1 : 0;

/// <summary>A Lighthouse has nothing to reload; stopping it (drain or not) is leaving the cluster and exiting.</summary>
internal sealed class LighthouseControl(TaskCompletionSource<string> stop) : INodeControl
{
    public string? Reload() => "a Lighthouse has no pooler settings to reload";
    public void Stop(bool drain) => stop.TrySetResult(drain ? "pbm node drain" : "SHUTDOWN");
}
