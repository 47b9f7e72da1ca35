using Pooler.Actors.Pooling;
using Xunit;

namespace Pooler.Tests.Pooling;

/// <summary>
/// ClientParams.Key: the one-string form of the tracked settings that lets a server skip the SET
/// check when its own settings are the same; equal exactly when every tracked value is equal.
/// </summary>
public class ClientParamsTests
{
    [Fact]
    public void Key_does_not_depend_on_the_order_settings_arrive_in_or_on_name_case()
    {
        var a = new ClientParams();
        a.Set("TimeZone", "UTC");
        a.Set("client_encoding", "UTF8");
        var b = new ClientParams();
        b.Set("CLIENT_ENCODING", "UTF8");
        b.Set("timezone", "UTC");
        Assert.Equal(a.Key, b.Key);
        Assert.Equal("client_encoding=UTF8\0TimeZone=UTC\0", a.Key);
    }

    [Fact]
    public void Key_changes_with_any_tracked_value_and_ignores_untracked_names()
    {
        var p = new ClientParams();
        p.Set("DateStyle", "ISO, MDY");
        var before = p.Key;
        p.Set("search_path", "x"); // not tracked
        Assert.Equal(before, p.Key);
        p.Set("DateStyle", "ISO, DMY");
        Assert.NotEqual(before, p.Key);
        p.Set("DateStyle", "ISO, MDY");
        Assert.Equal(before, p.Key);
    }

    [Fact]
    public void A_server_with_the_same_key_matches_and_a_different_one_is_compared_setting_by_setting()
    {
        var client = new ClientParams();
        client.Set("application_name", "app");
        var server = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { ["application_name"] = "app", ["server_version"] = "15" };
        var h = new ServerHandle(Akka.Actor.ActorRefs.Nobody, Akka.Actor.ActorRefs.Nobody, DateTime.UtcNow, 0)
        {
            Params = System.Collections.Frozen.FrozenDictionary.ToFrozenDictionary(server, StringComparer.OrdinalIgnoreCase),
            TrackedKey = ClientParams.KeyOf(n => server.GetValueOrDefault(n)),
        };
        Assert.Equal(client.Key, h.TrackedKey);
        Assert.True(h.Matches(client));

        client.Set("application_name", "other");
        Assert.False(h.Matches(client));

        // keys differ (the server reports a tracked setting the client has no value for) but every client value matches
        server["TimeZone"] = "UTC";
        h.TrackedKey = ClientParams.KeyOf(n => server.GetValueOrDefault(n));
        h.Params = System.Collections.Frozen.FrozenDictionary.ToFrozenDictionary(server, StringComparer.OrdinalIgnoreCase);
        client.Set("application_name", "app");
        Assert.NotEqual(client.Key, h.TrackedKey);
        Assert.True(h.Matches(client));
    }
}
