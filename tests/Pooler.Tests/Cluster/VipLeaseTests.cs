using Pooler.Actors.Cluster;
using Xunit;

namespace Pooler.Tests.Cluster;

public sealed class VipLeaseTests
{
    private static TimeSpan Ms(double ms) => TimeSpan.FromMilliseconds(ms);
    private readonly VipLease _lease = new(TimeSpan.FromSeconds(3));

    [Fact]
    public void Renews_every_third_of_the_lifetime_and_pings_twice_as_often()
    {
        Assert.Equal(Ms(1000), _lease.RenewInterval);
        Assert.Equal(Ms(500), _lease.PingInterval);
        Assert.Equal(Ms(600), _lease.RenewWindow);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 2)]
    [InlineData(4, 3)]
    [InlineData(5, 3)]
    public void Majority_is_more_than_half(int members, int votes) => Assert.Equal(votes, VipLease.Majority(members));

    [Fact]
    public void Renews_only_with_a_confirmation_of_a_ping_sent_within_the_renewal_window()
    {
        Assert.Equal(LeaseAction.Lapse, _lease.OnTick(Ms(0)));        // nothing confirmed yet
        _lease.Confirmed(Ms(500));
        Assert.Equal(LeaseAction.Renew, _lease.OnTick(Ms(1000)));     // 500 ms old
        Assert.Equal(LeaseAction.Lapse, _lease.OnTick(Ms(1200)));     // 700 ms old: let the kernel's lifetime run
        Assert.Equal(LeaseAction.Lapse, _lease.OnTick(Ms(2600)));
        Assert.Equal(LeaseAction.Drop, _lease.OnTick(Ms(3500)));      // 3 s old: the lease is over
    }

    [Fact]
    public void An_older_confirmation_arriving_late_does_not_move_the_lease_back()
    {
        _lease.Confirmed(Ms(900));
        _lease.Confirmed(Ms(400));
        Assert.Equal(Ms(900), _lease.ConfirmedAt);
    }

    [Fact]
    public void A_tick_long_after_the_previous_one_drops_the_vip_even_with_a_fresh_confirmation()
    {
        _lease.Confirmed(Ms(0));
        Assert.Equal(LeaseAction.Renew, _lease.OnTick(Ms(100)));
        // SIGSTOP for 15 s: a confirmation that was in flight lands first, then the late tick
        _lease.Confirmed(Ms(15_000));
        Assert.Equal(LeaseAction.Drop, _lease.OnTick(Ms(15_100)));
    }

    [Fact]
    public void Reset_forgets_confirmations_and_the_pause_clock()
    {
        _lease.Confirmed(Ms(0));
        _lease.OnTick(Ms(100));
        _lease.Reset();
        Assert.Null(_lease.ConfirmedAt);
        Assert.Equal(LeaseAction.Lapse, _lease.OnTick(Ms(60_000)));
    }

    [Fact]
    public void A_new_owner_waits_out_the_latest_confirmation_any_witness_saw_plus_window_and_lifetime()
    {
        var now = Ms(10_000);
        // witnesses last confirmed another owner 200 ms and 1500 ms ago; one never did
        var at = _lease.SafeToAcquireAt(now, [Ms(1500), Ms(200), null]);
        Assert.Equal(now - Ms(200) + _lease.RenewWindow + _lease.Lifetime + VipLease.Margin, at);
    }

    [Fact]
    public void A_new_owner_need_not_wait_when_no_witness_confirmed_anyone_or_the_lease_is_long_over()
    {
        var now = Ms(10_000);
        Assert.Equal(now, _lease.SafeToAcquireAt(now, [null, null]));
        Assert.True(_lease.SafeToAcquireAt(now, [Ms(9_000)]) < now);
    }
}
