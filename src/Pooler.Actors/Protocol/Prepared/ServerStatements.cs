namespace Pooler.Actors.Protocol.Prepared;

/// <summary>
/// What one server connection has prepared and what it still owes answers for. The client linked to it rewrites
/// what it sends (adding to the plan) while the server reads the answers (consuming it): two actors, so both
/// hold <see cref="Gate"/> while they touch it. Uncontended, as only one client is linked at a time.
/// </summary>
public sealed class ServerStatements(int capacity)
{
    public object Gate { get; } = new();
    public StatementCache Cache { get; } = new(capacity);
    public ResponsePlan Plan { get; } = new();

    /// <summary>Effects of the answers being read, applied once per chunk.</summary>
    public PlanEffects Effects { get; } = new();

    /// <summary>Still prepared on the server but no longer in <see cref="Cache"/>: closed before the next message goes out.</summary>
    internal List<string> Unclosed { get; } = [];

    /// <summary>
    /// A DISCARD ALL or DEALLOCATE ALL failed after the cache was cleared: the server may hold statements the cache
    /// does not know. The server session runs DEALLOCATE ALL when the link ends.
    /// </summary>
    public bool Unknown { get; private set; }

    /// <summary>DISCARD ALL, DEALLOCATE ALL or a server reset dropped every statement on the server.</summary>
    public void Clear()
    {
        Cache.Clear();
        Unclosed.Clear();
        Unknown = false;
    }

    /// <summary>Applies what an error undid to the cache and to the linked client's names (caller holds <see cref="Gate"/>).</summary>
    public void Apply(PlanEffects effects, ClientStatements? client)
    {
        foreach (var s in effects.NotPrepared) Cache.Remove(s);
        // an eviction that did not happen: the server still has it, so the next message closes it again
        Unclosed.AddRange(effects.NotClosed);
        foreach (var s in effects.Stale)
        {
            Cache.Remove(s);
            Unclosed.Add(s);
        }
        if (client != null) foreach (var c in effects.ForgottenClientNames) client.Remove(c);
        if (effects.StatementsUnknown) Unknown = true;
        effects.Clear();
    }
}

/// <summary>SHOW STATS counters for prepared statements (PgBouncer's client parse, server parse and bind counts).</summary>
public interface IStatementCounters
{
    void ClientParse();
    void ServerParse();
    void Bind();
}
