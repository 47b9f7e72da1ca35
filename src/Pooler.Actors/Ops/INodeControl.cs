namespace Pooler.Actors.Ops;

/// <summary>What only the hosting process can do, offered to the admin console, pbm and HTTP.</summary>
public interface INodeControl
{
    /// <summary>Re-reads the configuration and applies it; null when applied, else why not (the old settings stay).</summary>
    string? Reload();

    /// <summary>Stops the process: <paramref name="drain"/> as SIGTERM (hand the VIP over, let clients finish up to
    /// shutdown-timeout, leave, exit 0), else at once (PgBouncer's SHUTDOWN; the cluster is still left first).</summary>
    void Stop(bool drain);
}
