namespace Pooler.Actors.Cluster;

/// <summary>What the owner does with the VIP at a renewal tick.</summary>
public enum LeaseAction
{
    /// <summary>A majority confirmed this node within the last renewal interval: extend the address's lifetime.</summary>
    Renew,
    /// <summary>No fresh confirmation: do not extend; the kernel drops the address when its lifetime runs out.</summary>
    Lapse,
    /// <summary>Take the address down now: the lease has run out, or this process was paused (the previous
    /// tick is too long ago, so the cluster may already have moved on).</summary>
    Drop,
}

/// <summary>
/// The VIP lease arithmetic, apart from actors and clocks (times are monotonic, as TimeSpans since any
/// fixed origin). The owner pings every member's witness every <see cref="PingInterval"/>; a ping that a
/// majority of members confirms proves the cluster still sees this node at the time it was sent.
/// <para>
/// Safety argument: a renewal at time t happens only if a ping sent at s >= t - W (<see cref="RenewWindow"/>)
/// was confirmed by a majority, and sets the address to expire at t + L <= s + W + L. Every witness of that
/// majority recorded its confirmation at a time >= s. Any later owner first collects the last-confirmation
/// times of a majority of members (two majorities share a member), so one of them is >= s, and it waits
/// until that time + W + L + <see cref="Margin"/>: after every lease the old owner could still hold. Witnesses stop
/// confirming an owner once it is unreachable or downed in their view, which is what lets the new
/// owner's wait end.
/// </para>
/// </summary>
public sealed class VipLease(TimeSpan lifetime)
{
    /// <summary>
    /// Slack for the time between deciding to renew and the kernel applying it (running <c>ip</c>, 150 ms), and for
    /// the kernel's late removal of an expired address: IPv4 lifetimes are checked in whole seconds by a work item that
    /// runs at most once a second, rounded up to a quarter second (devinet.c, check_lifetime), so an address outlives
    /// its valid_lft by up to 1.25 s (0.08-0.32 s measured on an idle machine). Without it a frozen or cut-off old
    /// holder's kernel could still answer for the VIP when the new holder takes it.
    /// </summary>
    public static readonly TimeSpan Margin = TimeSpan.FromMilliseconds(150 + 1250);

    private TimeSpan? _confirmedPingSentAt;
    private TimeSpan? _lastTick;

    public TimeSpan Lifetime { get; } = lifetime > TimeSpan.Zero ? lifetime : throw new ArgumentOutOfRangeException(nameof(lifetime));

    /// <summary>R: renewal period, a third of the lifetime.</summary>
    public TimeSpan RenewInterval => Lifetime / 3;

    /// <summary>Pings go out twice per renewal period.</summary>
    public TimeSpan PingInterval => RenewInterval / 2;

    /// <summary>W: a renewal needs a majority-confirmed ping sent at most this long ago (the latest ping, with
    /// 20 % slack). Shorter than R, so a new owner waits less; a late ping only skips one renewal, and the
    /// address still has two thirds of its lifetime.</summary>
    public TimeSpan RenewWindow => PingInterval * 1.2;

    /// <summary>When the latest majority-confirmed ping was sent (null: none yet).</summary>
    public TimeSpan? ConfirmedAt => _confirmedPingSentAt;

    /// <summary>Votes needed out of <paramref name="members"/> (this node included).</summary>
    public static int Majority(int members) => members / 2 + 1;

    /// <summary>A ping sent at <paramref name="sentAt"/> was confirmed by a majority.</summary>
    public void Confirmed(TimeSpan sentAt)
    {
        if (_confirmedPingSentAt is not { } c || sentAt > c) _confirmedPingSentAt = sentAt;
    }

    /// <summary>Forget confirmations (after dropping the address: the next hold starts from fresh ones).</summary>
    public void Reset()
    {
        _confirmedPingSentAt = null;
        _lastTick = null;
    }

    /// <summary>The decision at a renewal tick at <paramref name="now"/>.</summary>
    public LeaseAction OnTick(TimeSpan now)
    {
        var previous = _lastTick;
        _lastTick = now;
        // A tick far later than planned means this process did not run (SIGSTOP, a long GC pause, a starved
        // VM): the cluster may have handed the VIP on meanwhile, so never renew on waking.
        if (previous is { } p && now - p > Lifetime / 2) return LeaseAction.Drop;
        if (_confirmedPingSentAt is not { } c) return LeaseAction.Lapse;
        if (now - c <= RenewWindow) return LeaseAction.Renew;
        return now - c >= Lifetime ? LeaseAction.Drop : LeaseAction.Lapse;
    }

    /// <summary>
    /// When a new owner may put the VIP up, given how long ago each answering witness last confirmed
    /// another owner (null: never, or that owner released the VIP). <paramref name="now"/> is when the
    /// answers arrived; ages are measured on the witnesses' own clocks, so the wire time only makes the
    /// result later (safer).
    /// </summary>
    public TimeSpan SafeToAcquireAt(TimeSpan now, IEnumerable<TimeSpan?> agesSinceLastConfirm)
    {
        TimeSpan? latest = null;
        foreach (var age in agesSinceLastConfirm)
            if (age is { } a && (latest is null || now - a > latest)) latest = now - a;
        return latest is { } l ? l + RenewWindow + Lifetime + Margin : now;
    }
}
