using System.Collections.Concurrent;

namespace Pooler.Actors.Ops;

/// <summary>Errors the pooler itself sent to clients, by SQLSTATE (server errors are relayed, not parsed).</summary>
public sealed class ErrorCounters
{
    private readonly ConcurrentDictionary<string, long> _bySqlState = new();

    public void Add(string sqlState) => _bySqlState.AddOrUpdate(sqlState, 1, (_, n) => n + 1);

    /// <summary>A plain dictionary: reports cross nodes with the default JSON serializer, which cannot rebuild immutable ones.</summary>
    public IReadOnlyDictionary<string, long> Snapshot() => new Dictionary<string, long>(_bySqlState);
}
