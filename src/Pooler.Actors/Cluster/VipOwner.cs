using Akka.Actor;
using Akka.Cluster;
using Akka.Event;

namespace Pooler.Actors.Cluster;

/// <summary>
/// The cluster singleton (role <c>pooler</c>) that decides which node holds the VIP: its own by default,
/// or the node it is asked to move it to (<see cref="MoveTo"/>, <c>pooler.vip.preferred-node</c>). The
/// holding itself is done, under a lease, by the <see cref="VipHolder"/> of that node; a holder never takes
/// the address while another one's lease may still run, so a wrong or late decision here costs time,
/// never a second owner. Every second it checks that exactly the chosen holder is active and corrects
/// the others.
/// </summary>
public sealed class VipOwner : ReceiveActor, IWithTimers
{
    /// <summary>The singleton's termination message: release a holder on this node first, then stop.</summary>
    public sealed record HandOver;
    /// <summary>Move the VIP to the pooler node at <paramref name="Node"/> (an address like akka.tcp://pooler@10.0.0.12:4053).
    /// The sender gets <see cref="MoveResult"/>.</summary>
    public sealed record MoveTo(string Node);
    public sealed record MoveResult(bool Ok, string Message);
    /// <summary>From a node about to leave: if the VIP is there, move it to another node now.</summary>
    public sealed record MoveAway(string Node);
    /// <summary>Asks for <see cref="Status"/>: where the VIP is meant to be.</summary>
    public sealed record GetStatus;
    public sealed record Status(string Coordinator, string Holder);

    private sealed record Reconcile;
    private sealed record HandOverTimeout;
    private sealed record MoveTimeout;

    public static Props Props(string preferredNode) => Akka.Actor.Props.Create(() => new VipOwner(preferredNode));

    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly Akka.Cluster.Cluster _cluster = Akka.Cluster.Cluster.Get(Context.System);
    private readonly string _preferred;
    private Address? _holder;
    private Address? _releasing;     // a holder asked to release before the next one is told to hold
    private Address? _next;
    private IActorRef? _mover;
    private readonly Dictionary<Address, VipHolder.HolderState> _states = new();

    public ITimerScheduler Timers { get; set; } = null!;

    public VipOwner(string preferredNode)
    {
        _preferred = preferredNode;
        Receive<VipHolder.Status>(s => _states[SenderNode()] = s.State);
        Receive<Reconcile>(_ => OnReconcile());
        Receive<ClusterEvent.IMemberEvent>(_ => OnReconcile());
        Receive<ClusterEvent.IReachabilityEvent>(_ => OnReconcile());
        Receive<ClusterEvent.CurrentClusterState>(_ => { });
        Receive<MoveTo>(m => Move(m.Node, Sender));
        Receive<MoveAway>(m =>
        {
            if (_holder?.ToString() != m.Node) { Sender.Tell(new MoveResult(true, "the VIP is not there")); return; }
            var others = Eligible().Where(a => a.ToString() != m.Node).ToList();
            if (others.Count == 0) { Sender.Tell(new MoveResult(false, "no other pooler node can take the VIP")); return; }
            Move(Pick(others).ToString(), Sender);
        });
        Receive<VipHolder.Released>(_ =>
        {
            _states[SenderNode()] = VipHolder.HolderState.Idle;
            if (SenderNode().Equals(_releasing)) OnReleased();
        });
        Receive<MoveTimeout>(_ => OnReleased()); // the releasing holder did not answer (it died): its lease guards the rest
        Receive<GetStatus>(_ => Sender.Tell(new Status(_cluster.SelfAddress.ToString(), _holder?.ToString() ?? "")));
        Receive<HandOver>(_ => OnHandOver());
    }

    private Address SenderNode() => Sender.Path.Address.HasGlobalScope ? Sender.Path.Address : _cluster.SelfAddress;

    /// <summary>Pooler nodes that may hold the VIP: Up, reachable from here, not leaving.</summary>
    private List<Address> Eligible()
    {
        var state = _cluster.State;
        return state.Members.Where(m => m.HasRole(ClusterNode.Role) && m.Status == MemberStatus.Up && !state.Unreachable.Contains(m))
            .Select(m => m.Address).ToList();
    }

    /// <summary>Where the VIP goes among <paramref name="candidates"/> (not empty): the preferred node, else this one, else the first.</summary>
    private Address Pick(List<Address> candidates)
        => candidates.FirstOrDefault(a => a.ToString() == _preferred)
           ?? (candidates.Contains(_cluster.SelfAddress) ? _cluster.SelfAddress : candidates[0]);

    private ActorSelection HolderAt(Address node) => Context.ActorSelection(new RootActorPath(node) / "user" / VipHolder.Name);

    protected override void PreStart()
    {
        _log.Info("vip owner {0}: deciding where the VIP goes", _cluster.SelfAddress);
        _cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot,
            typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
        // first learn whether a holder is still active (this singleton moved, the holder did not)
        foreach (var node in Eligible()) HolderAt(node).Tell(new VipHolder.GetStatus());
        Timers.StartSingleTimer("first", new Reconcile(), TimeSpan.FromMilliseconds(150));
        Timers.StartPeriodicTimer("reconcile", new Reconcile(), TimeSpan.FromSeconds(1));
    }

    protected override void PostStop() => _cluster.Unsubscribe(Self);

    private void OnReconcile()
    {
        if (_releasing is not null) return; // a move is under way
        var eligible = Eligible();
        if (eligible.Count == 0) return;
        if (_holder is { } old && !eligible.Contains(old) && _cluster.State.Members.Any(m => m.Address.Equals(old) && m.Status != MemberStatus.Down)
            && !_cluster.State.Unreachable.Any(m => m.Address.Equals(old)) && VipHolder.IsActive(_states.GetValueOrDefault(old)))
        {
            // the holder's node is leaving but still answers: it lets go first, then the next one takes over
            Move(Pick(eligible).ToString(), null);
            return;
        }
        if (_holder is null || !eligible.Contains(_holder))
        {
            // keep a holder that is still active; else the preferred node; else this one
            var active = _states.Where(s => s.Value is VipHolder.HolderState.Holding or VipHolder.HolderState.Acquiring && eligible.Contains(s.Key))
                .Select(s => s.Key).FirstOrDefault();
            var choice = active ?? Pick(eligible);
            if (!choice.Equals(_holder)) _log.Info("vip owner {0}: the VIP goes to {1}", _cluster.SelfAddress, choice);
            _holder = choice;
        }
        else if (_preferred.Length > 0 && _holder.ToString() != _preferred && eligible.Any(a => a.ToString() == _preferred))
        {
            Move(_preferred, null);
            return;
        }
        HolderAt(_holder).Tell(new VipHolder.Hold());
        // any other holder that is active stands down (e.g. one that re-fenced after a pause)
        foreach (var (node, state) in _states)
            if (!node.Equals(_holder) && VipHolder.IsActive(state)) HolderAt(node).Tell(new VipHolder.Release());
        foreach (var node in eligible) HolderAt(node).Tell(new VipHolder.GetStatus());
    }

    private void Move(string target, IActorRef? replyTo)
    {
        var node = Eligible().FirstOrDefault(a => a.ToString() == target);
        if (node is null) { replyTo?.Tell(new MoveResult(false, $"{target} is not an Up, reachable pooler node")); return; }
        if (node.Equals(_holder) && _releasing is null) { replyTo?.Tell(new MoveResult(true, $"the VIP is already on {target}")); return; }
        if (_releasing is not null) { replyTo?.Tell(new MoveResult(false, "a move is already under way")); return; }
        _log.Info("vip owner {0}: moving the VIP from {1} to {2}", _cluster.SelfAddress, _holder, node);
        _mover = replyTo;
        _next = node;
        _releasing = _holder ?? node;
        HolderAt(_releasing).Tell(new VipHolder.Release());
        Timers.StartSingleTimer("move", new MoveTimeout(), TimeSpan.FromSeconds(3));
    }

    private void OnReleased()
    {
        if (_releasing is null || _next is null) return;
        Timers.Cancel("move");
        _holder = _next;
        _releasing = null;
        _next = null;
        HolderAt(_holder).Tell(new VipHolder.Hold());
        _mover?.Tell(new MoveResult(true, $"the VIP is moving to {_holder}"));
        _mover = null;
    }

    private void OnHandOver()
    {
        // this node is leaving: a holder here lets go first, so the next one need not wait out its lease
        if (_holder is { } h && h.Equals(_cluster.SelfAddress))
        {
            HolderAt(h).Tell(new VipHolder.Release());
            Become(() =>
            {
                Receive<VipHolder.Released>(_ => Context.Stop(Self));
                Receive<HandOverTimeout>(_ => Context.Stop(Self));
                ReceiveAny(_ => { });
            });
            Timers.StartSingleTimer("handover", new HandOverTimeout(), TimeSpan.FromSeconds(2));
            return;
        }
        Context.Stop(Self);
    }
}
