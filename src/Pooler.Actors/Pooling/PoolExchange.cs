using System.Collections.Frozen;
using Akka.Actor;
using Akka.IO;
using Pooler.Actors.Protocol.Prepared;

namespace Pooler.Actors.Pooling;

/// <summary>An idle server as a client sees it when it takes one without asking the pool.</summary>
public sealed class ServerHandle(IActorRef server, IActorRef conn, DateTime openedAt, int generation, ServerStatements? statements = null)
{
    private const int Idle = 0, Taken = 1, Dead = 2;
    private int _state = Taken;

    public IActorRef Server { get; } = server;
    public IActorRef Conn { get; } = conn;
    public DateTime OpenedAt { get; } = openedAt;
    public int Generation { get; } = generation;
    /// <summary>The server's prepared statements, for a client that links itself to it.</summary>
    public ServerStatements Statements { get; } = statements ?? new ServerStatements(1);

    /// <summary>The server's session settings when it went idle (replaced whole, never mutated).</summary>
    public FrozenDictionary<string, string> Params { get; set; } = FrozenDictionary<string, string>.Empty;
    public DateTime IdleSince { get; set; }
    /// <summary>The server's tracked settings as <see cref="ClientParams.KeyOf"/> builds them.</summary>
    public string TrackedKey { get; set; } = "";

    internal void MarkIdle() => Volatile.Write(ref _state, Idle);
    /// <summary>Parked on the idle list (not taken, not dead).</summary>
    public bool IsParked => Volatile.Read(ref _state) == Idle;
    internal bool TryTake() => Interlocked.CompareExchange(ref _state, Taken, Idle) == Idle;

    /// <summary>The server found its socket closed while idle; false if a client took it first.</summary>
    public bool TryMarkDead() => Interlocked.CompareExchange(ref _state, Dead, Idle) == Idle;

    /// <summary>True when the server already has every setting the client wants.</summary>
    public bool Matches(ClientParams p)
    {
        if (p.Key == TrackedKey) return true;
        foreach (var (k, v) in p.Values)
            if (!Params.TryGetValue(k, out var cur) || cur != v) return false;
        return true;
    }
}

/// <summary>
/// A client queued for a server. <see cref="TakenBy"/> is set (under the exchange's lock) by the server
/// that takes it. The bytes the client sent while waiting are kept here, and the server that links
/// writes them to its own socket: the client is not woken for that (one actor turn less per queued
/// transaction); it learns of <see cref="Link"/> at its next message, or through a Linked message if
/// it asked for one (its reading is paused, or a test probe waits).
/// </summary>
public sealed class Waiter(IActorRef client, IActorRef clientConn, ClientParams clientParams, StatementRelay? relay = null)
{
    private readonly object _gate = new();
    private ByteString? _held;
    private int _heldUnits;
    private bool _notify;
    private Link? _link;

    public IActorRef Client { get; } = client;
    public IActorRef ClientConn { get; } = clientConn;
    public ClientParams Params { get; } = clientParams;
    /// <summary>The client's statement renaming: the server that links rewrites the held bytes for itself with it.</summary>
    public StatementRelay? Relay { get; } = relay;
    public DateTime Since { get; set; } = DateTime.UtcNow;
    public IActorRef? TakenBy { get; internal set; }

    /// <summary>The link a server made for this client, once it has (the client then relays through it).</summary>
    public Link? Link => Volatile.Read(ref _link);

    /// <summary>Client side: keeps bytes for the server; false once linked (the client forwards them itself).</summary>
    public bool TryHold(ByteString data, int units, out int heldBytes)
    {
        lock (_gate)
        {
            heldBytes = 0;
            if (_link != null) return false;
            _held = _held == null ? data : _held.Concat(data);
            _heldUnits += units;
            heldBytes = _held.Count;
            return true;
        }
    }

    /// <summary>Asks for a Linked message when a server links; false if one already has (nothing will be sent).</summary>
    public bool NotifyWhenLinked()
    {
        lock (_gate)
        {
            if (_link != null) return false;
            _notify = true;
            return true;
        }
    }

    /// <summary>
    /// Server side: links and writes the held bytes to the server socket. The write is queued inside
    /// the gate, so bytes the client forwards after seeing the link cannot overtake it. Returns whether
    /// the client asked to be told.
    /// </summary>
    public bool LinkAndFlush(Link link, IActorRef serverConn, IActorRef server)
    {
        lock (_gate)
        {
            if (_held != null)
            {
                link.TryAddUnits(_heldUnits);
                var bytes = _held;
                if (link is { Relay: { } relay, Statements: { } statements })
                    lock (statements.Gate) bytes = relay.Relay(bytes, statements);
                if (bytes.Count > 0) serverConn.Tell(Tcp.Write.Create(bytes), server);
                _held = null;
            }
            Volatile.Write(ref _link, link);
            return _notify;
        }
    }
}

/// <summary>
/// Where the clients and servers of one pool meet, under one lock: a client needing a server takes
/// an idle one or queues itself (FIFO); a releasing server takes the first queued client or parks
/// itself as idle. So a transaction costs the pool actor no message at all; the pool actor only opens
/// servers for queued clients, expires idle servers and impatient clients, and reports.
/// </summary>
public sealed class PoolExchange
{
    private readonly object _lock = new();
    private readonly List<ServerHandle> _idle = new(); // LIFO: the most recently used server is reused first
    private readonly LinkedList<Waiter> _waiting = new();
    private int _generation;
    private bool _full;
    private bool _paused;

    public int Generation => Volatile.Read(ref _generation);

    /// <summary>The pool's SHOW STATS totals, added to by its sessions.</summary>
    public Ops.PoolCounters Counters { get; } = new();
    public int IdleCount { get { lock (_lock) return _idle.Count; } }
    public int WaitingCount { get { lock (_lock) return _waiting.Count; } }

    /// <summary>PAUSE: no client gets a server (new transactions queue), released servers go idle.</summary>
    public bool Paused
    {
        get { lock (_lock) return _paused; }
        set { lock (_lock) _paused = value; }
    }

    /// <summary>RESUME: pairs queued clients with idle servers (the pool then assigns each).</summary>
    public List<(Waiter Waiter, ServerHandle Server)> MatchWaiters()
    {
        var pairs = new List<(Waiter, ServerHandle)>();
        lock (_lock)
        {
            while (_waiting.First is { } n && TakeIdle() is { } h)
            {
                _waiting.RemoveFirst();
                n.Value.TakenBy = h.Server;
                pairs.Add((n.Value, h));
            }
        }
        return pairs;
    }

    /// <summary>Servers opened before this call are closed instead of reused (RECONNECT, reload).</summary>
    public void NewGeneration() => Interlocked.Increment(ref _generation);

    /// <summary>
    /// Client side: an idle server, or null after queueing the waiter. <paramref name="poolMayGrow"/>
    /// says whether the pool actor should hear of the new waiter: not when it has all the servers it
    /// may open anyway (read under the lock the pool sets it with, so no waiter slips past a shrink).
    /// </summary>
    public ServerHandle? TakeOrQueue(Waiter w, out bool poolMayGrow)
    {
        lock (_lock)
        {
            var h = TakeIdle();
            if (h == null) { w.Since = DateTime.UtcNow; _waiting.AddLast(w); }
            poolMayGrow = !_full;
            return h;
        }
    }

    /// <summary>Pool side: whether the pool is at its size (queued clients need not wake it).</summary>
    public void SetFull(bool full)
    {
        lock (_lock) _full = full;
    }

    /// <summary>Client side, fast path: an idle server or null (nothing queued).</summary>
    public ServerHandle? TryTakeIdle()
    {
        lock (_lock) return TakeIdle();
    }

    private ServerHandle? TakeIdle()
    {
        if (_paused) return null;
        while (_idle.Count > 0)
        {
            var h = _idle[^1];
            _idle.RemoveAt(_idle.Count - 1);
            if (h.TryTake()) return h;
        }
        return null;
    }

    /// <summary>Server side: the first queued client (now taken by this server), or null after parking as idle.</summary>
    public Waiter? TakeWaiterOrPark(ServerHandle h)
    {
        lock (_lock)
        {
            if (!_paused && _waiting.First is { } n)
            {
                _waiting.RemoveFirst();
                n.Value.TakenBy = h.Server;
                return n.Value;
            }
            h.MarkIdle();
            _idle.Add(h);
            return null;
        }
    }

    /// <summary>Puts a waiter back at the head of the queue (its server failed before linking), unless an idle server can take it now.</summary>
    public ServerHandle? RequeueFront(Waiter w)
    {
        lock (_lock)
        {
            w.TakenBy = null;
            var h = TakeIdle();
            if (h == null) _waiting.AddFirst(w);
            return h;
        }
    }

    /// <summary>Client side: leave the queue. False when a server already took the waiter (see <see cref="Waiter.TakenBy"/>).</summary>
    public bool TryLeave(Waiter w, out IActorRef? takenBy)
    {
        lock (_lock)
        {
            takenBy = w.TakenBy;
            return _waiting.Remove(w);
        }
    }

    /// <summary>Pool side: removes the waiters queued before <paramref name="cutoff"/> (query-wait-timeout).</summary>
    public List<Waiter> TakeWaitersSince(DateTime cutoff)
    {
        var expired = new List<Waiter>();
        lock (_lock)
        {
            while (_waiting.First is { } n && n.Value.Since < cutoff)
            {
                _waiting.RemoveFirst();
                expired.Add(n.Value);
            }
        }
        return expired;
    }

    public List<Waiter> TakeAllWaiters()
    {
        lock (_lock)
        {
            var all = _waiting.ToList();
            _waiting.Clear();
            return all;
        }
    }

    /// <summary>When the oldest waiter was queued, if any (for reserve-pool-timeout).</summary>
    public DateTime? OldestWaiterSince()
    {
        lock (_lock) return _waiting.First?.Value.Since;
    }

    /// <summary>Pool side: takes out the idle servers that match (for idle timeout, lifetime, reconnect).</summary>
    public List<ServerHandle> TakeIdleWhere(Func<ServerHandle, bool> predicate)
    {
        var taken = new List<ServerHandle>();
        lock (_lock)
        {
            for (var i = 0; i < _idle.Count; i++)
            {
                var h = _idle[i];
                if (!predicate(h) || !h.TryTake()) continue;
                _idle.RemoveAt(i--);
                taken.Add(h);
            }
        }
        return taken;
    }

    /// <summary>Pool side: parks a server it took out but decided to keep.</summary>
    public void Park(ServerHandle h)
    {
        lock (_lock)
        {
            h.MarkIdle();
            _idle.Add(h);
        }
    }
}
