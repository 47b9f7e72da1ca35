using Akka.Actor;
using Pooler.Actors.Config;

namespace Pooler.Actors;

/// <summary>
/// The single-node pooler as the host sees it: start (binds the listener), reload, graceful stop.
/// </summary>
public sealed class PoolerService
{
    /// <summary>Starts the listener and pools; completes once the listen socket is bound (throws if it cannot bind).</summary>
    public static Task<PoolerService> StartAsync(ActorSystem system, PoolerSettings settings, string? baseDirectory = null)
        => throw new NotImplementedException("being written");

    /// <summary>The TCP port actually bound (useful with port 0).</summary>
    public int Port { get; private set; }

    /// <summary>Applies new databases, users and pool settings without dropping clients (SIGHUP / RELOAD).</summary>
    public void Reload(PoolerSettings settings) => throw new NotImplementedException("being written");

    /// <summary>Stops accepting, lets open transactions finish up to shutdown-timeout, then closes everything.</summary>
    public Task StopAsync() => throw new NotImplementedException("being written");
}
