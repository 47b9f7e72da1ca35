namespace Pooler.Actors.Protocol.Prepared;

/// <summary>
/// The statements one server connection has prepared under their server names, least recently used
/// first out: <c>max-prepared-statements</c> bounds what a long-lived server keeps for the clients it
/// served. Owned by one ServerSession; not thread-safe.
/// </summary>
public sealed class StatementCache(int capacity)
{
    private readonly LinkedList<string> _order = new(); // most recently used first
    private readonly Dictionary<string, LinkedListNode<string>> _nodes = new(StringComparer.Ordinal);

    public int Capacity { get; } = capacity > 0 ? capacity : throw new ArgumentOutOfRangeException(nameof(capacity), "at least 1");
    public int Count => _nodes.Count;

    public bool Contains(string name) => _nodes.ContainsKey(name);

    /// <summary>True when prepared here; marks it used.</summary>
    public bool Touch(string name)
    {
        if (!_nodes.TryGetValue(name, out var node)) return false;
        _order.Remove(node);
        _order.AddFirst(node);
        return true;
    }

    /// <summary>Records a newly prepared statement; returns the one to close (DEALLOCATE) to stay within capacity, or null.</summary>
    public string? Add(string name)
    {
        if (Touch(name)) return null;
        _nodes[name] = _order.AddFirst(name);
        if (_nodes.Count <= Capacity) return null;
        var last = _order.Last!;
        _order.RemoveLast();
        _nodes.Remove(last.Value);
        return last.Value;
    }

    /// <summary>The server no longer has it (its Parse failed, or it was closed).</summary>
    public void Remove(string name)
    {
        if (_nodes.Remove(name, out var node)) _order.Remove(node);
    }

    /// <summary>DISCARD ALL, DEALLOCATE ALL or a server reset dropped every statement.</summary>
    public void Clear()
    {
        _nodes.Clear();
        _order.Clear();
    }
}

/// <summary>One client's named statements: its name for each, and what the servers call it.</summary>
public sealed class ClientStatements
{
    private readonly Dictionary<string, ClientStatement> _byName = new(StringComparer.Ordinal);

    public int Count => _byName.Count;

    /// <summary>A Parse with a name: PostgreSQL refuses a name in use (42P05), so the caller checks <see cref="TryGet"/> first.</summary>
    public ClientStatement Add(string name, ReadOnlySpan<byte> definition)
    {
        var s = new ClientStatement(ExtendedMessages.ServerName(definition), definition.ToArray());
        _byName[name] = s;
        return s;
    }

    public bool TryGet(string name, out ClientStatement statement) => _byName.TryGetValue(name, out statement!);

    public bool Remove(string name) => _byName.Remove(name);

    /// <summary>DEALLOCATE ALL / DISCARD ALL from the client.</summary>
    public void Clear() => _byName.Clear();
}

/// <summary>A client's statement: its server name and the Parse definition (query and parameter types) to prepare it anywhere.</summary>
public sealed record ClientStatement(string ServerName, byte[] Definition);
