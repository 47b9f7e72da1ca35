using System.Runtime.InteropServices;
using System.Threading.Channels;
using Akka.Actor;
using Akka.Configuration;
using Akka.Event;
using Pooler.Actors;
using Pooler.Actors.Cluster;
using Pooler.Actors.Config;
using Pooler.Actors.Ops;
using Pooler.Host;

// Socket completions run on .NET's socket event thread, where the inline dispatcher (reference.conf)
// carries each read through the sessions to the other socket's send without a thread hand-off.
// Read once, when the first socket is made: set before anything opens one. An explicit setting wins.
if (Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") == null)
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");

HostOptions options;
try
{
    options = HostOptions.Parse(args);
}
catch (UsageException e)
{
    Console.Error.WriteLine($"pooler: {e.Message}");
    Console.Error.WriteLine(HostOptions.Usage);
    return 2;
}
if (options.ShowHelp)
{
    Console.WriteLine(HostOptions.Usage);
    return 0;
}

Config config;
PoolerSettings settings;
try
{
    (config, settings) = options.Load(HostOptions.ProcessEnvironment());
}
catch (ConfigException e)
{
    Console.Error.WriteLine($"pooler: invalid configuration: {e.Message}");
    return 2;
}

ActorSystem system;
try
{
    system = ActorSystem.Create(ClusterConfig.SystemName, ClusterConfig.WithProvider(config).WithFallback(ConfigurationFactory.Default()));
}
catch (Exception e)
{
    Console.Error.WriteLine($"pooler: invalid configuration: akka: {e.Message}");
    return 2;
}
var log = Logging.GetLogger(system, "pooler");

// Signals are queued and handled one at a time on this (main) flow. Null stands for "this node was
// removed from the cluster without asking" (downed by the split-brain resolver).
var signals = Channel.CreateUnbounded<PosixSignal?>();
void Queue(PosixSignalContext context)
{
    context.Cancel = true;
    signals.Writer.TryWrite(context.Signal);
}
using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Queue);
using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Queue);
using var onHup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, Queue);

PoolerService service;
try
{
    service = await PoolerService.StartAsync(system, settings, options.BaseDirectory);
}
catch (Exception e)
{
    Console.Error.WriteLine($"pooler: cannot listen on {settings.Listen.Host}:{settings.Listen.Port}: {e.Message}");
    await system.Terminate();
    return 1;
}
log.Info("listening on {0}:{1}", settings.Listen.Host, service.Port);

// RELOAD (SIGHUP, admin console, pbm): one at a time; an invalid file keeps the current settings
var reloadGate = new object();
string? ReloadConfig(string source)
{
    lock (reloadGate)
    {
        try
        {
            var (_, reloaded) = options.Load(HostOptions.ProcessEnvironment());
            service.Reload(reloaded);
            Volatile.Write(ref settings, reloaded);
            log.Info("{0}: configuration reloaded", source);
            return null;
        }
        catch (Exception e) when (e is ConfigException or IOException or UnauthorizedAccessException or FormatException)
        {
            log.Error("{0}: invalid configuration, keeping the current settings: {1}", source, e.Message);
            return e.Message;
        }
    }
}
service.Runtime.Control = new HostControl(() => ReloadConfig("RELOAD"), drain => signals.Writer.TryWrite(drain ? PosixSignal.SIGTERM : PosixSignal.SIGQUIT));

ClusterNode? clusterNode = null;
var leaving = false;
if (ClusterConfig.IsClustered(config))
{
    clusterNode = ClusterNode.Start(system, service.Runtime, service.Port);
    clusterNode.Cluster.RegisterOnMemberRemoved(() =>
    {
        if (!Volatile.Read(ref leaving)) signals.Writer.TryWrite(null);
    });
    log.Info("cluster node {0}: joining {1} as role {2}", clusterNode.Cluster.SelfAddress,
        string.Join(", ", config.GetStringList("akka.cluster.seed-nodes")), ClusterNode.Role);
}

if (settings.Pbm.Enabled)
{
    try { log.Info("pbm endpoint on {0}", await PbmEndpoint.StartAsync(system, settings.Pbm, service.Runtime.Ops)); }
    catch (Exception e) { log.Error("pbm endpoint not started: {0}", e.Message); }
}
HttpEndpoint? http = null;
if (settings.Http.Enabled)
{
    try
    {
        http = await HttpEndpoint.StartAsync(system, service.Runtime.Ops, settings.Http);
        log.Info("http endpoint on {0}:{1} (/metrics, /health, /stats)", settings.Http.Host, http.Port);
    }
    catch (Exception e) { log.Error("http endpoint not started on {0}:{1}: {2}", settings.Http.Host, settings.Http.Port, e.Message); }
}

string stopReason = "SIGTERM";
var exitCode = 0;
await foreach (var signal in signals.Reader.ReadAllAsync())
{
    if (signal is null)
    {
        stopReason = "removed from the cluster (downed)";
        exitCode = 1; // a supervisor restarts the process, which joins again as a new node
        break;
    }
    if (signal != PosixSignal.SIGHUP)
    {
        stopReason = signal.ToString()!;
        break;
    }
    ReloadConfig("SIGHUP");
}

// SIGQUIT stands for the console's SHUTDOWN: leave in order, but do not wait for open transactions
var immediate = stopReason == nameof(PosixSignal.SIGQUIT);
if (immediate) stopReason = "SHUTDOWN";
log.Info("{0}: shutting down, waiting up to {1} for open transactions", stopReason, immediate ? TimeSpan.Zero : settings.ShutdownTimeout);
Volatile.Write(ref leaving, true);
service.Runtime.Draining = true; // /health answers 503 from now on
// In a cluster the node first moves the VIP away and leaves, still serving its own clients meanwhile; only
// then does it drain: a node that refused newcomers while still a member could be sent clients by the VIP.
if (clusterNode is not null && exitCode == 0)
{
    await clusterNode.LeaveAsync(TimeSpan.FromSeconds(10));
    log.Info("left the cluster; draining");
}
await service.StopAsync(immediate ? TimeSpan.Zero : null);
if (http != null) await http.DisposeAsync();
log.Info("stopped");
await system.Terminate();
return exitCode;

/// <summary>What the admin console and pbm may do to this process: reload the file, stop (drain or at once).</summary>
internal sealed class HostControl(Func<string?> reload, Action<bool> stop) : INodeControl
{
    public string? Reload() => reload();
    public void Stop(bool drain) => stop(drain);
}
