using Akka.Actor;
using Akka.IO;
using Pooler.Actors.Protocol.Prepared;

namespace Pooler.Actors.Pooling;

/// <summary>
/// One client bound to one server for a while (a transaction, a statement or a whole session).
/// Both sessions relay bytes straight to the other's socket actor, so they share this small
/// object to agree, without an extra message per query, on when the server may go back to the pool:
/// the client counts the "units" it sends (a Query, or an extended-protocol run ending in Sync),
/// each answered by exactly one ReadyForQuery; the server releases only when every unit has been
/// answered and the status is idle. The counter becomes negative once released, so a client that
/// races a release learns it before writing and asks for a new server instead.
/// </summary>
public sealed class Link(long id, IActorRef client, IActorRef clientConn, IActorRef server, IActorRef serverConn, ClientParams clientParams,
    StatementRelay? relay = null, ServerStatements? statements = null)
{
    private const int Released = int.MinValue / 2;
    private static long _seq;
    private int _pending;

    public static long NextId() => Interlocked.Increment(ref _seq);

    public long Id { get; } = id;
    public IActorRef Client { get; } = client;
    public IActorRef ClientConn { get; } = clientConn;
    public IActorRef Server { get; } = server;
    public IActorRef ServerConn { get; } = serverConn;

    /// <summary>The client's tracked settings; the server updates it from ParameterStatus while linked.</summary>
    public ClientParams Params { get; } = clientParams;

    /// <summary>The client's statement renaming (transaction and statement pooling), or null: bytes pass unchanged.</summary>
    public StatementRelay? Relay { get; } = relay;
    /// <summary>The server's prepared statements and the answers it owes; set with <see cref="Relay"/>.</summary>
    public ServerStatements? Statements { get; } = relay != null ? statements : null;

    /// <summary>Acks for writes to the client socket on this link (acks of an older link are ignored).</summary>
    public readonly Tcp.Event ClientAck = new WriteAck();
    /// <summary>Acks for writes to the server socket on this link.</summary>
    public readonly Tcp.Event ServerAck = new WriteAck();

    /// <summary>
    /// Set while the client has forwarded only part of a COPY message: its hold is one extra pending
    /// unit, so the server cannot be given away while PostgreSQL still waits for the rest of it.
    /// </summary>
    public volatile bool ClientHolds;

    /// <summary>Set when the pooler wants the server back at the next idle point even in session mode (drain).</summary>
    public volatile bool ReleaseWhenIdle;

    /// <summary>When the oldest unanswered unit was sent (Stopwatch timestamp), for query and transaction times.</summary>
    public long UnitStart;

    public int Pending => Volatile.Read(ref _pending);
    public bool IsReleased => Volatile.Read(ref _pending) < 0;

    /// <summary>Client side, before writing: adds n units unless the link is already released.</summary>
    public bool TryAddUnits(int n)
    {
        while (true)
        {
            var v = Volatile.Read(ref _pending);
            if (v < 0) return false;
            if (n == 0) return true;
            if (Interlocked.CompareExchange(ref _pending, v + n, v) == v) return true;
        }
    }

    /// <summary>Server side: one ReadyForQuery arrived.</summary>
    public void UnitDone()
    {
        while (true)
        {
            var v = Volatile.Read(ref _pending);
            if (v <= 0) return; // an answer nobody counted (or already released): nothing to do
            if (Interlocked.CompareExchange(ref _pending, v - 1, v) == v) return;
        }
    }

    /// <summary>Releases the link if nothing is outstanding; exactly one caller ever wins.</summary>
    public bool TryRelease() => Interlocked.CompareExchange(ref _pending, Released, 0) == 0;

    /// <summary>Releases whatever is outstanding (the server is gone or being closed).</summary>
    public void ForceRelease() => Volatile.Write(ref _pending, Released);

    private sealed class WriteAck : Tcp.Event;
}

/// <summary>
/// The session settings a client expects (those PostgreSQL reports with ParameterStatus), re-applied
/// when a transaction-pooled client lands on a server whose values differ.
/// </summary>
public sealed class ClientParams
{
    /// <summary>The tracked names, as PostgreSQL reports them.</summary>
    public static readonly string[] Tracked =
        ["client_encoding", "DateStyle", "TimeZone", "IntervalStyle", "standard_conforming_strings", "application_name"];

    private readonly Dictionary<string, string> _values = new(StringComparer.OrdinalIgnoreCase);

    public static string? Canonical(string name)
    {
        foreach (var t in Tracked) if (string.Equals(t, name, StringComparison.OrdinalIgnoreCase)) return t;
        return null;
    }

    public IReadOnlyDictionary<string, string> Values => _values;

    /// <summary>
    /// All tracked settings in one string (see <see cref="KeyOf"/>): a server whose own key is equal
    /// needs no SET, checked without walking two dictionaries on every transaction.
    /// </summary>
    public string Key { get; private set; } = "";

    public void Set(string name, string value)
    {
        var c = Canonical(name);
        if (c == null || (_values.TryGetValue(c, out var cur) && cur == value)) return;
        _values[c] = value;
        Key = KeyOf(n => _values.GetValueOrDefault(n));
    }

    /// <summary>The tracked names that have a value, in <see cref="Tracked"/> order, as name=value pairs.</summary>
    public static string KeyOf(Func<string, string?> get)
    {
        var sb = new System.Text.StringBuilder(128);
        foreach (var t in Tracked)
            if (get(t) is { } v) sb.Append(t).Append('=').Append(v).Append('\0');
        return sb.ToString();
    }

    public string? Get(string name) => _values.GetValueOrDefault(name);
}
