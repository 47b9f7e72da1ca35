using System.Net;
using Akka.Actor;

namespace Pooler.Actors.Cluster;

/// <summary>
/// HAProxy's leastconn for the VIP: each new client goes to the node with the fewest clients this VIP
/// listener has sent it and that are still connected; this node itself is one of the choices (a null
/// endpoint). Ties go round-robin. A node that could not be reached is skipped for a while.
/// </summary>
public sealed class LeastConn(Address self)
{
    private static readonly TimeSpan SuspectFor = TimeSpan.FromSeconds(5);

    private readonly Dictionary<Address, EndPoint> _remotes = new();
    private readonly Dictionary<Address, int> _active = new() { [self] = 0 };
    private readonly Dictionary<Address, DateTime> _suspect = new();
    private readonly Dictionary<IActorRef, Address> _byChild = new();
    private int _turn;

    public Address Self { get; } = self;

    /// <summary>The other nodes that may take clients now (Up, reachable, not leaving) and their listeners.</summary>
    public void SetRemotes(IReadOnlyDictionary<Address, EndPoint> remotes)
    {
        _remotes.Clear();
        foreach (var (a, e) in remotes)
            if (!a.Equals(Self)) _remotes[a] = e;
    }

    /// <summary>Clients currently sent to <paramref name="node"/> by this listener.</summary>
    public int Active(Address node) => _active.GetValueOrDefault(node);

    /// <summary>Where the next client goes: null endpoint = serve it here.</summary>
    public (Address Node, EndPoint? Endpoint) Choose(DateTime now)
    {
        var candidates = new List<(Address Node, EndPoint? Endpoint)> { (Self, null) };
        foreach (var (a, e) in _remotes)
            if (!_suspect.TryGetValue(a, out var until) || until <= now) candidates.Add((a, e));
        var least = candidates.Min(c => Active(c.Node));
        var tied = candidates.Where(c => Active(c.Node) == least).ToList();
        return tied[_turn++ % tied.Count];
    }

    /// <summary>A client went to <paramref name="node"/>, handled by <paramref name="child"/> (session or relay).</summary>
    public void Started(IActorRef child, Address node)
    {
        _byChild[child] = node;
        _active[node] = Active(node) + 1;
    }

    /// <summary>The child ended (client gone, or relay failed).</summary>
    public void Ended(IActorRef child)
    {
        if (!_byChild.Remove(child, out var node)) return;
        _active[node] = Math.Max(0, Active(node) - 1);
    }

    /// <summary>Connecting to <paramref name="node"/> failed: leave it out for a few seconds.</summary>
    public void Suspect(Address node, DateTime now) => _suspect[node] = now + SuspectFor;
}
