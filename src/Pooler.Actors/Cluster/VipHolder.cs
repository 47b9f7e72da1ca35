using System.Diagnostics;
using System.Net;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using Pooler.Actors.Client;
using Pooler.Actors.Config;

namespace Pooler.Actors.Cluster;

/// <summary>
/// One per pooler node, at <c>/user/vip-holder</c>: puts the VIP up on this node when the
/// <see cref="VipOwner"/> singleton tells it to, and keeps it only under a lease. Behaviours:
/// Idle; Fencing (ask a majority of witnesses how recently they confirmed another owner, wait out that
/// lease, ask again); Acquiring (put the VIP up on the first fresh majority confirmation); Holding (ping,
/// renew, or drop); Releasing (taken down in an orderly way, witnesses told). See <see cref="VipLease"/>
/// for why two nodes never hold the address at once, whatever the singleton decides.
/// </summary>
public sealed class VipHolder : ReceiveActor, IWithTimers
{
    /// <summary>The behaviour a holder is in; Fencing, Acquiring and Holding are <see cref="IsActive"/>.</summary>
    public enum HolderState { Idle, Fencing, Acquiring, Holding, Releasing }

    /// <summary>Going for the VIP or holding it: a holder the owner did not choose must stand down.</summary>
    public static bool IsActive(HolderState state) => state is HolderState.Fencing or HolderState.Acquiring or HolderState.Holding;

    public const string Name = "vip-holder";

    /// <summary>From the VipOwner: take the VIP (fence first).</summary>
    public sealed record Hold;
    /// <summary>From the VipOwner (or the host on SIGTERM): take the VIP down and tell the witnesses its lease is
    /// over, so the next holder need not wait it out; <see cref="Released"/> goes back to the sender.</summary>
    public sealed record Release;
    public sealed record Released(string Node);
    /// <summary>Asks for <see cref="Status"/>.</summary>
    public sealed record GetStatus;
    public sealed record Status(string Node, HolderState State, string Vip, bool Holding);

    private sealed record PingTick;
    private sealed record RenewTick;
    private sealed record AskTick;
    private sealed record AcquireAt;
    private sealed record ReleaseTimeout;

    public static Props Props(PoolerRuntime runtime, IVipDriver? driver = null)
        => Akka.Actor.Props.Create(() => new VipHolder(runtime, driver)).WithDispatcher(DispatcherId);

    /// <summary>Runs on a thread of its own: drivers may block for a child process or a bind.</summary>
    public const string DispatcherId = "akka.actor.pooler-vip-dispatcher";

    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly Akka.Cluster.Cluster _cluster = Akka.Cluster.Cluster.Get(Context.System);
    private readonly PoolerRuntime _rt;
    private readonly VipSettings _vip;
    private readonly VipLease _lease;
    private readonly IVipDriver _driver;
    private readonly string _self;
    private readonly Dictionary<long, (TimeSpan SentAt, HashSet<string> Votes)> _pings = new();
    private readonly Dictionary<string, TimeSpan?> _answers = new();
    private readonly HashSet<string> _acks = new();
    private long _seq;
    private long _askSeq;
    private bool _up;
    private HolderState _state = HolderState.Idle;
    private readonly List<IActorRef> _releaseWaiters = new();

    public ITimerScheduler Timers { get; set; } = null!;

    public VipHolder(PoolerRuntime runtime, IVipDriver? driver)
    {
        _rt = runtime;
        _vip = runtime.Settings.Vip;
        _lease = new VipLease(_vip.Lifetime);
        var log = _log;
        var node = runtime.NodeName;
        _driver = driver ?? VipDrivers.Create(_vip, warning => log.Warning("vip node {0}: {1}", node, warning));
        _self = _cluster.SelfUniqueAddress.ToString();
        Idle();
    }

    private void Idle()
    {
        _state = HolderState.Idle;
        Become(Common);
    }

    private static TimeSpan Now => Stopwatch.GetElapsedTime(0);

    private void Log(string what) => _log.Info("vip node {0}: {1} ({2})", _rt.NodeName, what, _driver.Describe);

    /// <summary>Members whose votes count: everyone not yet downed or removed (Lighthouse included).</summary>
    private List<Member> Voters()
        => _cluster.State.Members.Where(m => m.Status is not (MemberStatus.Down or MemberStatus.Removed)).ToList();

    private static ActorSelection Witness(IActorContext ctx, Member m) => ctx.ActorSelection(new RootActorPath(m.Address) / "user" / VipWitness.Name);

    // ------------------------------------------------------------------ Fencing

    private void Fencing()
    {
        _state = HolderState.Fencing;
        Become(() =>
        {
            Common();
            Receive<AskTick>(_ => Ask());
            Receive<VipWitness.LastConfirm>(OnLastConfirm);
            // the wait is over: ask again, and take the VIP only if no one was confirmed meanwhile
            // (an owner that is still alive and seen by the majority keeps its VIP)
            Receive<AcquireAt>(_ => Ask());
        });
        Ask();
    }

    private void Ask()
    {
        _askSeq++;
        _answers.Clear();
        foreach (var m in Voters()) Witness(Context, m).Tell(new VipWitness.AskLastConfirm(_self, _askSeq));
        Timers.StartSingleTimer("ask", new AskTick(), TimeSpan.FromSeconds(1)); // no majority answered: ask again
    }

    private void OnLastConfirm(VipWitness.LastConfirm a)
    {
        if (a.Seq != _askSeq) return;
        _answers[a.Witness] = a.Age;
        if (_answers.Count < VipLease.Majority(Voters().Count)) return;
        Timers.Cancel("ask");
        var now = Now;
        var at = _lease.SafeToAcquireAt(now, _answers.Values);
        if (at > now)
        {
            Log($"becoming the owner: waiting {(at - now).TotalMilliseconds:F0} ms for a previous owner's lease to run out");
            Timers.StartSingleTimer("acquire", new AcquireAt(), at - now);
            _askSeq++; // later answers are moot
        }
        else
        {
            Acquiring();
        }
    }

    // ------------------------------------------------------------------ Acquiring

    private void Acquiring()
    {
        _state = HolderState.Acquiring;
        _lease.Reset();
        Become(() =>
        {
            Common();
            Receive<PingTick>(_ => Ping());
            Receive<VipWitness.Confirm>(c =>
            {
                OnConfirm(c);
                if (_lease.ConfirmedAt is { } at && Now - at <= _lease.RenewWindow) TryUp();
            });
        });
        Ping();
        Timers.StartPeriodicTimer("ping", new PingTick(), _lease.PingInterval);
    }

    private void TryUp()
    {
        try
        {
            _up = true; // from the first step on, Down() undoes whatever part got done
            _driver.Up();
            if (_driver.Listens) Listen();
        }
        catch (Exception e)
        {
            Down();
            _log.Warning("vip node {0}: cannot put up {1}: {2}; retrying", _rt.NodeName, _driver.Describe, e.Message);
            _lease.Reset(); // the next fresh confirmation tries again
            return;
        }
        Log("holding the VIP");
        Holding();
    }

    // ------------------------------------------------------------------ Holding

    private void Holding()
    {
        _state = HolderState.Holding;
        Become(() =>
        {
            Common();
            Receive<PingTick>(_ => Ping());
            Receive<VipWitness.Confirm>(OnConfirm);
            Receive<RenewTick>(_ => Renew());
        });
        _lease.OnTick(Now); // the first tick measures pauses from here
        Timers.StartPeriodicTimer("renew", new RenewTick(), _lease.RenewInterval);
    }

    private void Renew()
    {
        switch (_lease.OnTick(Now))
        {
            case LeaseAction.Renew:
                try { _driver.Renew(); }
                catch (Exception e) { Drop($"renewal failed: {e.Message}"); }
                break;
            case LeaseAction.Lapse:
                _log.Warning("vip node {0}: no majority confirmed this node within {1} ms: not renewing the VIP", _rt.NodeName, _lease.RenewWindow.TotalMilliseconds);
                break;
            case LeaseAction.Drop:
                Drop("the lease ran out or this process was paused");
                break;
        }
    }

    private void Drop(string why)
    {
        Down();
        _log.Warning("vip node {0}: dropped the VIP: {1}; fencing before taking it again", _rt.NodeName, why);
        Timers.Cancel("renew");
        Timers.Cancel("ping");
        _pings.Clear();
        Fencing();
    }

    // ------------------------------------------------------------------ pings

    private void Ping()
    {
        var seq = ++_seq;
        _pings[seq] = (Now, new HashSet<string>());
        foreach (var old in _pings.Keys.Where(k => k < seq - 8).ToList()) _pings.Remove(old);
        foreach (var m in Voters()) Witness(Context, m).Tell(new VipWitness.Ping(_self, seq));
    }

    private void OnConfirm(VipWitness.Confirm c)
    {
        if (!_pings.TryGetValue(c.Seq, out var p)) return;
        p.Votes.Add(c.Witness);
        if (p.Votes.Count >= VipLease.Majority(Voters().Count)) _lease.Confirmed(p.SentAt);
    }

    // ------------------------------------------------------------------ hand-over

    private void Common()
    {
        Receive<GetStatus>(_ => Sender.Tell(new Status(_rt.NodeName, _state, _driver.Describe, _up)));
        Receive<Hold>(_ =>
        {
            if (_state == HolderState.Idle) Fencing(); // fencing, acquiring or holding already: nothing to do
        });
        Receive<Release>(_ =>
        {
            if (_state == HolderState.Idle) { Sender.Tell(new Released(_self)); return; }
            _releaseWaiters.Add(Sender);
            Releasing();
        });
    }

    private void Releasing()
    {
        Timers.CancelAll();
        _pings.Clear();
        var held = _up;
        Down();
        _state = HolderState.Releasing;
        if (held) Log("released the VIP");
        _acks.Clear();
        var voters = Voters();
        foreach (var m in voters) Witness(Context, m).Tell(new VipWitness.Released(_self, ++_seq));
        var needed = VipLease.Majority(Math.Max(1, voters.Count));
        Become(() =>
        {
            Receive<GetStatus>(_ => Sender.Tell(new Status(_rt.NodeName, _state, _driver.Describe, false)));
            Receive<Release>(_ => _releaseWaiters.Add(Sender));
            Receive<VipWitness.ReleaseAck>(a =>
            {
                _acks.Add(a.Witness);
                if (_acks.Count >= needed) Done();
            });
            // witnesses that do not answer only make the next holder wait out the lease: safe, just slower
            Receive<ReleaseTimeout>(_ => Done());
            ReceiveAny(_ => { });
        });
        Timers.StartSingleTimer("release", new ReleaseTimeout(), TimeSpan.FromSeconds(1));

        void Done()
        {
            Timers.Cancel("release");
            foreach (var w in _releaseWaiters) w.Tell(new Released(_self));
            _releaseWaiters.Clear();
            Idle();
        }
    }

    private void Down()
    {
        if (!_up) return;
        if (_listener is { } l)
        {
            // Akka.IO closes the clients accepted on the VIP with it: a VIP that moves takes its clients along
            l.Tell(new Listener.Unbind());
            Context.Stop(l);
            _listener = null;
        }
        _driver.Down();
        _up = false;
    }

    private IActorRef? _listener;
    private long _generation;

    /// <summary>Listens on VIP:port and spreads clients over the nodes (leastconn); blocks until bound (this actor's own thread).</summary>
    private void Listen()
    {
        var bound = new TaskCompletionSource<EndPoint>(TaskCreationOptions.RunContinuationsAsynchronously);
        var endpoint = new IPEndPoint(IPAddress.Parse(_vip.Host), _vip.Port);
        _listener = Context.ActorOf(Listener.Props(_rt, endpoint, bound, route: true), $"vip-listener-{++_generation}");
        try
        {
            if (!bound.Task.Wait(TimeSpan.FromSeconds(5))) throw new TimeoutException($"binding {endpoint} took over 5 s");
        }
        catch (AggregateException e) when (e.InnerException is { } inner)
        {
            throw new InvalidOperationException(inner.Message);
        }
    }

    protected override void PostStop() => Down();
}
