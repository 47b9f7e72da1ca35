using Akka.Actor;
using Akka.IO;
using Pooler.Actors.Pooling;
using Xunit;

namespace Pooler.Tests.Pooling;

/// <summary>
/// A queued client's bytes wait in its Waiter and the server that links writes them to its own
/// socket: in order, counted as units on the link, exactly once; later bytes go through the link.
/// </summary>
public class WaiterTests() : Akka.TestKit.Xunit2.TestKit("akka.loglevel = WARNING")
{
    private static ByteString Bytes(string s) => ByteString.FromString(s);

    private (Waiter Waiter, Link Link, Akka.TestKit.TestProbe ServerConn) Setup()
    {
        var client = CreateTestProbe();
        var serverConn = CreateTestProbe();
        var w = new Waiter(client.Ref, CreateTestProbe().Ref, new ClientParams());
        var link = new Link(Link.NextId(), client.Ref, w.ClientConn, CreateTestProbe().Ref, serverConn.Ref, w.Params);
        return (w, link, serverConn);
    }

    [Fact]
    public void Held_bytes_are_written_once_by_the_linking_server_with_their_units()
    {
        var (w, link, serverConn) = Setup();
        Assert.True(w.TryHold(Bytes("Q1"), 1, out var held));
        Assert.Equal(2, held);
        Assert.True(w.TryHold(Bytes("Q2"), 1, out held));
        Assert.Equal(4, held);

        Assert.False(w.LinkAndFlush(link, serverConn.Ref, TestActor)); // nobody asked to be told
        var write = serverConn.ExpectMsg<Tcp.Write>();
        Assert.Equal("Q1Q2", write.Data.ToString());
        Assert.Equal(2, link.Pending);
        Assert.Same(link, w.Link);

        // once linked, the client forwards by itself
        Assert.False(w.TryHold(Bytes("Q3"), 1, out _));
        Assert.False(w.NotifyWhenLinked());
        serverConn.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public void A_client_that_asked_is_told_and_a_link_with_nothing_held_writes_nothing()
    {
        var (w, link, serverConn) = Setup();
        Assert.True(w.NotifyWhenLinked());
        Assert.True(w.LinkAndFlush(link, serverConn.Ref, TestActor));
        serverConn.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        Assert.Equal(0, link.Pending);
    }

    [Fact]
    public async Task Bytes_held_concurrently_with_the_link_are_either_flushed_by_the_server_or_refused_never_lost()
    {
        for (var round = 0; round < 200; round++)
        {
            var (w, link, serverConn) = Setup();
            Assert.True(w.TryHold(Bytes("a"), 1, out _));
            var refused = new List<string>();
            var client = Task.Run(() =>
            {
                for (var i = 0; i < 50; i++)
                    if (!w.TryHold(Bytes("b"), 0, out _)) refused.Add("b");
            });
            w.LinkAndFlush(link, serverConn.Ref, TestActor);
            await client;
            var flushed = serverConn.ExpectMsg<Tcp.Write>().Data.ToString();
            Assert.StartsWith("a", flushed);
            Assert.Equal(51, flushed.Length + refused.Count);
        }
    }
}
