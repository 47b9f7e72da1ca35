using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;

namespace Pooler.Actors.Cluster;

/// <summary>
/// One per node (Lighthouse included), at <c>/user/vip-witness</c>: the cluster's memory of VIP leases.
/// It confirms an owner's ping only while that owner is Up and reachable in this node's own view, and
/// remembers when it last did, so a new owner can wait out any lease the old one may still hold
/// (see <see cref="VipLease"/>).
/// </summary>
public sealed class VipWitness : ReceiveActor
{
    public const string Name = "vip-witness";

    /// <summary>From an owner: "do you still see me?" <paramref name="Owner"/> is its unique address.</summary>
    public sealed record Ping(string Owner, long Seq);
    public sealed record Confirm(long Seq, string Witness);

    /// <summary>From a would-be owner: when did you last confirm someone else?</summary>
    public sealed record AskLastConfirm(string Requester, long Seq);
    /// <summary><paramref name="Age"/>: time since this witness last confirmed an owner other than the requester; null if none holds a lease here.</summary>
    public sealed record LastConfirm(long Seq, string Witness, TimeSpan? Age);

    /// <summary>From an owner that took the VIP down in an orderly way: its lease is over.</summary>
    public sealed record Released(string Owner, long Seq);
    public sealed record ReleaseAck(long Seq, string Witness);

    public static Props Props() => Akka.Actor.Props.Create(() => new VipWitness());

    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly Akka.Cluster.Cluster _cluster = Akka.Cluster.Cluster.Get(Context.System);
    private readonly Dictionary<string, TimeSpan> _lastConfirmed = new();
    private readonly string _self;

    public VipWitness()
    {
        _self = _cluster.SelfUniqueAddress.ToString();
        Receive<Ping>(p =>
        {
            if (!Sees(p.Owner)) return; // silence is the answer: the owner cannot count this vote
            _lastConfirmed[p.Owner] = Now;
            Sender.Tell(new Confirm(p.Seq, _self));
        });
        Receive<AskLastConfirm>(a =>
        {
            TimeSpan? age = null;
            foreach (var (owner, at) in _lastConfirmed)
                if (owner != a.Requester && (age is null || Now - at < age)) age = Now - at;
            Sender.Tell(new LastConfirm(a.Seq, _self, age));
        });
        Receive<Released>(r =>
        {
            if (_lastConfirmed.Remove(r.Owner)) _log.Info("vip witness {0}: owner {1} released the VIP", _self, r.Owner);
            Sender.Tell(new ReleaseAck(r.Seq, _self));
        });
    }

    private static TimeSpan Now => Stopwatch.GetElapsedTime(0);

    /// <summary>The owner is a member that is Up (or Leaving) and that this node can reach, and this node is in the cluster.</summary>
    private bool Sees(string owner)
    {
        var state = _cluster.State;
        var self = _cluster.SelfMember;
        if (self.Status is not (MemberStatus.Up or MemberStatus.Leaving or MemberStatus.WeaklyUp)) return false;
        var member = state.Members.FirstOrDefault(m => m.UniqueAddress.ToString() == owner);
        if (member is null || member.Status is not (MemberStatus.Up or MemberStatus.Leaving)) return false;
        return !state.Unreachable.Contains(member);
    }
}
