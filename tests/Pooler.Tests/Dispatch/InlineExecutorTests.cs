using System.Collections.Concurrent;
using Akka.Actor;
using Akka.Configuration;
using Xunit;

namespace Pooler.Tests.Dispatch;

/// <summary>
/// The inline executor (Pooler.Actors.Dispatch.InlineExecutor): a Tell from a pool thread runs the
/// receiver right there, up to the depth cap; from other threads it queues; and an actor already
/// running is never re-entered (its message waits for the turn in progress to end).
/// </summary>
public sealed class InlineExecutorTests : IDisposable
{
    private readonly ActorSystem _system = ActorSystem.Create("inline", ConfigurationFactory.ParseString("""
        akka.loglevel = WARNING
        akka.actor.default-dispatcher {
          executor = "Pooler.Actors.Dispatch.InlineExecutorConfigurator, Pooler.Actors"
          inline-max-depth = 4
        }
        """));

    public void Dispose() => _system.Terminate().Wait(TimeSpan.FromSeconds(10));

    private sealed record Hop(int Index);

    /// <summary>Records the thread and the moment it ran, then passes the message on to the next in the chain.</summary>
    private sealed class ChainLink(int index, IActorRef? next, ConcurrentDictionary<int, (int Thread, bool SenderReturned)> seen, Func<bool> senderReturned) : UntypedActor
    {
        protected override void OnReceive(object message)
        {
            seen[index] = (Environment.CurrentManagedThreadId, senderReturned());
            next?.Tell(message);
        }
    }

    private (IActorRef Head, ConcurrentDictionary<int, (int Thread, bool SenderReturned)> Seen, Func<bool> Returned, Action MarkReturned) Chain(int length)
    {
        var seen = new ConcurrentDictionary<int, (int, bool)>();
        var returned = 0;
        Func<bool> senderReturned = () => Volatile.Read(ref returned) == 1;
        IActorRef? next = null;
        for (var i = length - 1; i >= 0; i--)
            next = _system.ActorOf(Props.Create(() => new ChainLink(i, next, seen, senderReturned)));
        return (next!, seen, senderReturned, () => Volatile.Write(ref returned, 1));
    }

    private static async Task WaitFor(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out");
            await Task.Delay(5);
        }
    }

    [Fact]
    public async Task A_tell_from_a_pool_thread_runs_the_chain_inline_up_to_the_depth_cap()
    {
        var (head, seen, _, markReturned) = Chain(6);
        // let the actors start (their creation is itself scheduled) before measuring
        head.Tell(new Hop(0));
        await WaitFor(() => seen.Count == 6);
        seen.Clear();

        var senderThread = await Task.Run(() =>
        {
            head.Tell(new Hop(0));
            markReturned();
            return Environment.CurrentManagedThreadId;
        });
        await WaitFor(() => seen.Count == 6);

        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(senderThread, seen[i].Thread);
            Assert.False(seen[i].SenderReturned, $"actor {i} should have run inside the Tell");
        }
        // the fifth would be nested five deep: it is queued, so it runs on another pool thread (possibly while
        // the sender is still returning) or on the sender's thread after its Tell returned; never nested in it
        Assert.True(seen[4].SenderReturned || seen[4].Thread != senderThread, "actor 4 should have been queued (depth cap 4)");
    }

    [Fact]
    public async Task A_tell_from_a_thread_outside_the_pool_is_queued()
    {
        var (head, seen, _, markReturned) = Chain(1);
        head.Tell(new Hop(0));
        await WaitFor(() => seen.Count == 1);
        seen.Clear();

        var thread = new Thread(() => { head.Tell(new Hop(0)); markReturned(); });
        thread.Start();
        thread.Join();
        await WaitFor(() => seen.Count == 1);
        // queued: it ran on a pool thread (maybe before the sender got to mark its return), not in the Tell
        Assert.NotEqual(thread.ManagedThreadId, seen[0].Thread);
    }

    private sealed class PingPong(ConcurrentQueue<string> log) : UntypedActor
    {
        private IActorRef? _peer;

        protected override void OnReceive(object message)
        {
            switch (message)
            {
                case IActorRef peer: _peer = peer; break;
                case "ping":
                    log.Enqueue("ping start");
                    _peer!.Tell("echo", Self); // the peer runs inline and answers at once
                    log.Enqueue("ping end");
                    break;
                case "echo": Sender.Tell("pong"); break;
                case "pong": log.Enqueue("pong"); break;
            }
        }
    }

    [Fact]
    public async Task An_actor_that_is_running_is_not_reentered_by_an_inline_answer()
    {
        var log = new ConcurrentQueue<string>();
        var a = _system.ActorOf(Props.Create(() => new PingPong(log)));
        var b = _system.ActorOf(Props.Create(() => new PingPong(log)));
        a.Tell(b);
        await Task.Run(() => a.Tell("ping"));
        await WaitFor(() => log.Count == 3);
        Assert.Equal(["ping start", "ping end", "pong"], log.ToArray());
    }
}
