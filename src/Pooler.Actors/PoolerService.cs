using System.Net;
using Akka.Actor;
using Pooler.Actors.Auth;
using Pooler.Actors.Client;
using Pooler.Actors.Config;
using Pooler.Actors.Pooling;

namespace Pooler.Actors;

/// <summary>
/// The single-node pooler as the host sees it: start (binds the listener), reload, graceful stop.
/// </summary>
public sealed class PoolerService
{
    private readonly ActorSystem _system;
    private readonly IActorRef _listener;
    private readonly IActorRef _manager;

    private PoolerService(ActorSystem system, PoolerRuntime runtime, IActorRef listener, IActorRef manager, int port)
    {
        _system = system;
        Runtime = runtime;
        _listener = listener;
        _manager = manager;
        Port = port;
    }

    public PoolerRuntime Runtime { get; }

    /// <summary>The TCP port actually bound (useful with port 0).</summary>
    public int Port { get; }

    public IActorRef PoolManager => _manager;

    /// <summary>Starts the listener and pools; completes once the listen socket is bound (throws if it cannot bind).</summary>
    public static async Task<PoolerService> StartAsync(ActorSystem system, PoolerSettings settings, string? baseDirectory = null)
    {
        var users = LoadUsers(settings);
        var tls = Tls.TlsContexts.Load(settings);
        // in a cluster a node is known by its cluster address; alone, by the machine
        var address = ((ExtendedActorSystem)system).Provider.DefaultAddress;
        var name = address.HasGlobalScope ? $"{address.Host}:{address.Port}" : system.Name + "@" + Environment.MachineName;
        var rt = new PoolerRuntime(settings, users) { NodeName = name, Tls = tls };
        // before binding: see AcceptRaceGuard (Akka.IO drops accepts that complete before it is bound)
        system.ActorOf(AcceptRaceGuard.Props());
        var manager = system.ActorOf(Pooling.PoolManager.Props(rt), "pools");
        rt.PoolManager = manager;
        rt.Ops = system.ActorOf(Ops.OpsAgent.Props(rt, Cluster.ClusterNode.Role), Ops.OpsAgent.Name);
        var bound = new TaskCompletionSource<EndPoint>(TaskCreationOptions.RunContinuationsAsynchronously);
        var endpoint = new IPEndPoint(await BindAddress.ResolveAsync(settings.Listen.Host), settings.Listen.Port);
        var listener = system.ActorOf(Listener.Props(rt, endpoint, bound), "listener");
        EndPoint local;
        try { local = await bound.Task.WaitAsync(TimeSpan.FromSeconds(10)); }
        catch
        {
            system.Stop(listener);
            system.Stop(manager);
            throw;
        }
        rt.ListenPort = ((IPEndPoint)local).Port;
        return new PoolerService(system, rt, listener, manager, rt.ListenPort);
    }

    private static UserList? LoadUsers(PoolerSettings settings)
        => string.IsNullOrEmpty(settings.Auth.UsersFile) ? null : UserList.Load(settings.Auth.UsersFile);

    /// <summary>Applies new databases, users and pool settings without dropping clients (SIGHUP / RELOAD).
    /// The listen address is not rebound by a reload.</summary>
    public void Reload(PoolerSettings settings)
    {
        var users = LoadUsers(settings); // throws on a bad users file: nothing changes then
        var tls = Tls.TlsContexts.Load(settings); // the same for certificate files: re-read even when the paths did not change
        Runtime.Users = users;
        Runtime.Tls = tls;
        Runtime.Settings = settings;
        _manager.Tell(new PoolManager.SettingsChanged(settings));
    }

    /// <summary>Closes every server connection once it is idle and opens fresh ones (RECONNECT).</summary>
    public void Reconnect() => _manager.Tell(new PoolManager.ReconnectAll());

    /// <summary>Stops accepting, lets open transactions finish up to shutdown-timeout, then closes everything.</summary>
    /// <param name="timeout">How long open transactions may run on (default shutdown-timeout; zero for SHUTDOWN).</param>
    public async Task StopAsync(TimeSpan? timeout = null)
    {
        Runtime.Draining = true;
        _listener.Tell(new Listener.DrainAll());
        var deadline = DateTime.UtcNow + (timeout ?? Runtime.Settings.ShutdownTimeout);
        while (Runtime.ClientCount > 0 && DateTime.UtcNow < deadline)
            await Task.Delay(50);
        _listener.Tell(new Listener.Unbind()); // also cuts whoever is still connected after shutdown-timeout
        await _listener.GracefulStop(TimeSpan.FromSeconds(5));
        await _manager.GracefulStop(TimeSpan.FromSeconds(5));
    }
}
