using System.Collections.Frozen;
using Akka.Actor;

namespace Pooler.Actors.Pooling;

/// <summary>An idle server as a client sees it when it takes one without asking the pool.</summary>
public sealed class ServerHandle(IActorRef server, IActorRef conn, DateTime openedAt, int generation)
{
    private const int Idle = 0, Taken = 1, Dead = 2;
    private int _state = Taken;

    public IActorRef Server { get; } = server;
    public IActorRef Conn { get; } = conn;
    public DateTime OpenedAt { get; } = openedAt;
    public int Generation { get; } = generation;

    /// <summary>The server's session settings when it went idle (replaced whole, never mutated).</summary>
    public FrozenDictionary<string, string> Params { get; set; } = FrozenDictionary<string, string>.Empty;
    public DateTime IdleSince { get; set; }

    internal void MarkIdle() => Volatile.Write(ref _state, Idle);
    internal bool TryTake() => Interlocked.CompareExchange(ref _state, Taken, Idle) == Idle;

    /// <summary>The server found its socket closed while idle; false if a client took it first.</summary>
    public bool TryMarkDead() => Interlocked.CompareExchange(ref _state, Dead, Idle) == Idle;

    /// <summary>True when the server already has every setting the client wants.</summary>
    public bool Matches(ClientParams p)
    {
        foreach (var (k, v) in p.Values)
            if (!Params.TryGetValue(k, out var cur) || cur != v) return false;
        return true;
    }
}

/// <summary>
/// The idle servers of one pool and the number of clients its actor has queued, under one lock:
/// a releasing server parks itself here unless clients wait (then the pool gets it), and a client
/// needing a server takes one here; so a transaction costs the pool actor no message at all.
/// </summary>
public sealed class IdleServers
{
    private readonly List<ServerHandle> _idle = new(); // LIFO: the most recently used server is reused first
    private int _waiting;
    private int _generation;

    public int Generation => Volatile.Read(ref _generation);
    public int Count { get { lock (_idle) return _idle.Count; } }
    public int Waiting { get { lock (_idle) return _waiting; } }

    public void NewGeneration() => Interlocked.Increment(ref _generation);

    /// <summary>Client side: an idle server, or null.</summary>
    public ServerHandle? TryTake()
    {
        lock (_idle)
        {
            while (_idle.Count > 0)
            {
                var h = _idle[^1];
                _idle.RemoveAt(_idle.Count - 1);
                if (h.TryTake()) return h;
            }
            return null;
        }
    }

    /// <summary>Server side: park as idle; false when clients wait (tell the pool instead).</summary>
    public bool TryPark(ServerHandle h)
    {
        lock (_idle)
        {
            if (_waiting > 0) return false;
            h.MarkIdle();
            _idle.Add(h);
            return true;
        }
    }

    /// <summary>Pool side: take an idle server for a queued client, or count one more waiter.</summary>
    public ServerHandle? TakeOrWait()
    {
        lock (_idle)
        {
            var h = TryTake();
            if (h == null) _waiting++;
            return h;
        }
    }

    /// <summary>Pool side: park a server nobody waits for.</summary>
    public void Park(ServerHandle h)
    {
        lock (_idle)
        {
            h.MarkIdle();
            _idle.Add(h);
        }
    }

    public void WaiterLeft()
    {
        lock (_idle) _waiting = Math.Max(0, _waiting - 1);
    }

    /// <summary>Pool side: takes out the idle servers that match (for idle timeout, lifetime, reconnect).</summary>
    public List<ServerHandle> TakeWhere(Func<ServerHandle, bool> predicate, int keep)
    {
        var taken = new List<ServerHandle>();
        lock (_idle)
        {
            for (var i = 0; i < _idle.Count && _idle.Count > keep; i++)
            {
                var h = _idle[i];
                if (!predicate(h) || !h.TryTake()) continue;
                _idle.RemoveAt(i--);
                taken.Add(h);
            }
        }
        return taken;
    }
}
