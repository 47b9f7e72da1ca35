using Akka.Actor;
using Pooler.Actors.Pooling;
using Xunit;

namespace Pooler.Tests.Pooling;

public class LinkTests
{
    private static Link NewLink() => new(1, ActorRefs.Nobody, ActorRefs.Nobody, ActorRefs.Nobody, ActorRefs.Nobody, new ClientParams());

    [Fact]
    public void Release_waits_for_every_unit_to_be_answered()
    {
        var l = NewLink();
        Assert.True(l.TryAddUnits(2)); // a pipelined pair of Syncs
        l.UnitDone();
        Assert.False(l.TryRelease());
        l.UnitDone();
        Assert.True(l.TryRelease());
        Assert.True(l.IsReleased);
    }

    [Fact]
    public void A_client_racing_a_release_learns_it_before_writing()
    {
        var l = NewLink();
        Assert.True(l.TryRelease());
        Assert.False(l.TryAddUnits(1));
        Assert.False(l.TryAddUnits(0));
    }

    [Fact]
    public void Exactly_one_side_wins_under_contention()
    {
        for (var i = 0; i < 2000; i++)
        {
            var l = NewLink();
            bool added = false, released = false;
            Parallel.Invoke(() => added = l.TryAddUnits(1), () => released = l.TryRelease());
            Assert.True(added ^ released);
        }
    }

    [Fact]
    public void Unanswered_extra_ready_for_query_does_not_go_negative()
    {
        var l = NewLink();
        l.UnitDone();
        Assert.Equal(0, l.Pending);
        Assert.True(l.TryRelease());
    }

    [Fact]
    public void Client_params_track_only_reported_settings_case_insensitively()
    {
        var p = new ClientParams();
        p.Set("timezone", "UTC");
        p.Set("search_path", "x");
        Assert.Equal("UTC", p.Get("TimeZone"));
        Assert.Single(p.Values);
    }
}
