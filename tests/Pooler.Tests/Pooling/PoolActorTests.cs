using System.Diagnostics;
using Akka.Actor;
using Akka.Configuration;
using Akka.IO;
using Akka.TestKit;
using Pooler.Actors;
using Pooler.Actors.Config;
using Pooler.Actors.Pooling;
using Pooler.Actors.Server;
using Pooler.Tests.Infrastructure;
using Pooler.Tests.Integration;
using Xunit;

namespace Pooler.Tests.Pooling;

/// <summary>
/// The Pool actor's decisions seen from TestProbe clients: it opens servers (real ServerSessions against
/// the fixture's PostgreSQL) for clients queued in its <see cref="PoolExchange"/>, serves them FIFO,
/// honours pool-size, the reserve, query-wait-timeout, leaving the queue and the login-retry delay.
/// A probe client queues itself the way ClientSession does (TakeOrQueue, then Wakeup to the pool) and
/// releases its server by telling the server that the client left.
/// </summary>
[Collection(PostgresCollection.Name)]
public class PoolActorTests(PostgresFixture pg) : Akka.TestKit.Xunit2.TestKit("akka.loglevel = WARNING")
{
    private static readonly TimeSpan Connect = TimeSpan.FromSeconds(10);

    private sealed record Setup(PoolerRuntime Runtime, DatabaseSettings Db, PoolExchange Exchange, IActorRef Pool);

    private Setup StartPool(string settings, int? port = null)
    {
        var hocon = $$"""
            pooler {
              auth { type = trust }
              pool-mode = transaction
              {{settings}}
              databases { pooler_test { host = "127.0.0.1", port = {{port ?? pg.Port}}, dbname = "{{PostgresFixture.Database}}" } }
            }
            """;
        var loaded = SettingsLoader.Load(ConfigurationFactory.ParseString(hocon), null);
        var rt = new PoolerRuntime(loaded, null);
        var db = loaded.FindDatabase(PostgresFixture.Database)!;
        var exchange = new PoolExchange();
        var creds = new ServerCredentials(PostgresFixture.ScramUser, PostgresFixture.ScramPassword, null, null);
        var pool = Sys.ActorOf(Pool.Props(rt, db, creds, exchange));
        return new Setup(rt, db, exchange, pool);
    }

    private sealed record Client(TestProbe Probe, TestProbe Conn)
    {
        public IActorRef Ref => Probe.Ref;
        public Waiter? Waiter { get; set; }
    }

    private Client NewClient() => new(CreateTestProbe(), CreateTestProbe());

    /// <summary>What ClientSession does when it needs a server: take an idle one, or queue and wake the pool.</summary>
    private static void Acquire(Setup s, Client c)
    {
        var w = new Waiter(c.Probe.Ref, c.Conn.Ref, new ClientParams());
        w.NotifyWhenLinked(); // the probe waits for Linked (a ClientSession asks only when its reading is paused)
        c.Waiter = w;
        if (s.Exchange.TakeOrQueue(w, out _) is { } h)
        {
            w.TakenBy = h.Server;
            h.Server.Tell(new ServerSession.Assign(w, h.IdleSince));
        }
        else s.Pool.Tell(new Pool.Wakeup());
    }

    private static Link ExpectLinked(Client c, TimeSpan? within = null)
    {
        var linked = c.Probe.ExpectMsg<ServerSession.Linked>(within ?? Connect);
        Assert.Equal(c.Ref, linked.Link.Client);
        Assert.Equal(c.Conn.Ref, linked.Link.ClientConn);
        return linked.Link;
    }

    /// <summary>The client leaves between transactions: its server goes back to the pool.</summary>
    private static void Release(Link link) => link.Server.Tell(new ServerSession.ClientGone(link));

    private static Task<Pool.Stats> StatsAsync(Setup s) => s.Pool.Ask<Pool.Stats>(new Pool.GetStats(), TimeSpan.FromSeconds(3));

    private static Task WaitingIs(Setup s, int n)
        => Eventually.True(async () => (await StatsAsync(s)).Waiting == n, $"{n} clients waiting", timeout: TimeSpan.FromSeconds(5));

    [Fact]
    public async Task A_queued_client_with_no_server_makes_the_pool_open_one_and_is_linked_to_it()
    {
        var s = StartPool("default-pool-size = 2");
        Assert.Equal(0, (await StatsAsync(s)).Total);
        var c = NewClient();
        Acquire(s, c);
        var link = ExpectLinked(c);
        Assert.Equal(s.Pool.Path, link.Server.Path.Parent); // a ServerSession the pool opened
        Assert.Equal(1, s.Runtime.ServerCount);
        var stats = await StatsAsync(s);
        Assert.Equal(1, stats.Total);
        Assert.Equal(1, stats.Active);

        // the link is live: a query written to the server's socket is answered on the client's socket
        Assert.True(link.TryAddUnits(1));
        link.ServerConn.Tell(Tcp.Write.Create(ByteString.FromBytes(PgBytes.Query("select 1"))));
        var reply = c.Conn.FishForMessage<Tcp.Write>(w => w.Data.Count >= 6 && w.Data.ToArray()[^6] == (byte)'Z', Connect);
        Assert.Equal((byte)'I', reply.Data.ToArray()[^1]);
        // the transaction ended: the server parks itself as idle
        await Eventually.True(async () => (await StatsAsync(s)).Idle == 1, "the server is idle after the transaction");
        Assert.Equal(1, s.Exchange.IdleCount);
    }

    [Fact]
    public void Login_opens_the_first_server_and_welcomes_with_its_parameters()
    {
        var s = StartPool("default-pool-size = 2");
        var c = NewClient();
        s.Pool.Tell(new Pool.Login(c.Ref));
        var welcome = c.Probe.ExpectMsg<Pool.Welcome>(Connect);
        Assert.Contains(welcome.ServerParams, kv => kv.Key == "server_version");
        Assert.Same(s.Exchange, welcome.Exchange);
        // a later login is answered at once from the same template, without another server
        var d = NewClient();
        s.Pool.Tell(new Pool.Login(d.Ref));
        d.Probe.ExpectMsg<Pool.Welcome>(TimeSpan.FromSeconds(1));
        Assert.Equal(1, s.Runtime.ServerCount);
    }

    [Fact]
    public async Task Waiting_clients_are_served_in_FIFO_order()
    {
        var s = StartPool("default-pool-size = 1");
        var first = NewClient();
        Acquire(s, first);
        var link = ExpectLinked(first);
        var queue = Enumerable.Range(0, 4).Select(_ => NewClient()).ToArray();
        foreach (var c in queue) Acquire(s, c);
        await WaitingIs(s, 4);
        for (var i = 0; i < queue.Length; i++)
        {
            Release(link);
            link = ExpectLinked(queue[i], TimeSpan.FromSeconds(5));
            foreach (var later in queue.Skip(i + 1)) later.Probe.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        }
        Assert.Equal(1, s.Runtime.ServerCount);
        Assert.Equal(0, (await StatsAsync(s)).Waiting);
    }

    [Fact]
    public async Task Pool_size_limits_the_servers_opened_for_waiting_clients()
    {
        var s = StartPool("default-pool-size = 2");
        var clients = Enumerable.Range(0, 5).Select(_ => NewClient()).ToArray();
        foreach (var c in clients) Acquire(s, c);
        var l0 = ExpectLinked(clients[0]);
        var l1 = ExpectLinked(clients[1]);
        Assert.NotEqual(l0.Server, l1.Server);
        foreach (var c in clients.Skip(2)) c.Probe.ExpectNoMsg(TimeSpan.FromMilliseconds(400)); // well past a few pool ticks
        var stats = await StatsAsync(s);
        Assert.Equal(2, stats.Total);
        Assert.Equal(3, stats.Waiting);
        Assert.Equal(2, s.Runtime.ServerCount);
    }

    [Fact]
    public async Task Query_wait_timeout_sends_Failure_to_a_client_that_waited_too_long()
    {
        var s = StartPool("""
            default-pool-size = 1
            query-wait-timeout = 500ms
            """);
        var holder = NewClient();
        Acquire(s, holder);
        ExpectLinked(holder);
        var waiter = NewClient();
        var watch = Stopwatch.StartNew();
        Acquire(s, waiter);
        var failure = waiter.Probe.ExpectMsg<Pool.Failure>(TimeSpan.FromSeconds(3));
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(450), $"failed after {watch.ElapsedMilliseconds} ms");
        Assert.Equal("08P01", failure.SqlState);
        Assert.Equal("query_wait_timeout", failure.Message);
        holder.Probe.ExpectNoMsg(TimeSpan.FromMilliseconds(200)); // the linked client is not touched
        Assert.Equal(0, (await StatsAsync(s)).Waiting);
        Assert.Equal(0, s.Exchange.WaitingCount);
    }

    [Fact]
    public async Task Reserve_pool_opens_one_more_server_only_after_reserve_pool_timeout()
    {
        var s = StartPool("""
            default-pool-size = 1
            reserve-pool-size = 1
            reserve-pool-timeout = 1s
            """);
        var holder = NewClient();
        Acquire(s, holder);
        ExpectLinked(holder);
        var second = NewClient();
        var watch = Stopwatch.StartNew();
        Acquire(s, second);
        second.Probe.ExpectNoMsg(TimeSpan.FromMilliseconds(700));
        var reserve = ExpectLinked(second, TimeSpan.FromSeconds(6));
        Assert.True(watch.Elapsed >= TimeSpan.FromSeconds(0.95), $"reserve server after {watch.ElapsedMilliseconds} ms");
        Assert.Equal(2, s.Runtime.ServerCount);

        var third = NewClient();
        Acquire(s, third);
        third.Probe.ExpectNoMsg(TimeSpan.FromSeconds(1.6)); // past the timeout again: the reserve is spent
        var stats = await StatsAsync(s);
        Assert.Equal(2, stats.Total);
        Assert.Equal(1, stats.Waiting);
        Release(reserve);
        ExpectLinked(third, TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task A_client_that_leaves_the_queue_is_not_served()
    {
        var s = StartPool("default-pool-size = 1");
        var holder = NewClient();
        Acquire(s, holder);
        var link = ExpectLinked(holder);
        var leaving = NewClient();
        var staying = NewClient();
        Acquire(s, leaving);
        Acquire(s, staying);
        await WaitingIs(s, 2);
        Assert.True(s.Exchange.TryLeave(leaving.Waiter!, out var takenBy));
        Assert.Null(takenBy);
        await WaitingIs(s, 1);
        Release(link);
        ExpectLinked(staying, TimeSpan.FromSeconds(5));
        leaving.Probe.ExpectNoMsg(TimeSpan.FromMilliseconds(300));
    }

    [Fact]
    public async Task A_client_that_leaves_after_a_server_took_it_gives_the_server_back()
    {
        // a slow check query keeps the server between "took the waiter" and "linked"
        var s = StartPool("""
            default-pool-size = 1
            server-check-query = "select pg_sleep(0.5)"
            server-check-delay = 0
            """);
        var holder = NewClient();
        Acquire(s, holder);
        var link = ExpectLinked(holder);
        var leaving = NewClient();
        Acquire(s, leaving);
        await WaitingIs(s, 1);
        Release(link); // the server takes the waiter and starts its check query
        await Eventually.True(() => leaving.Waiter!.TakenBy != null, "the released server took the waiter", timeout: TimeSpan.FromSeconds(5));
        Assert.False(s.Exchange.TryLeave(leaving.Waiter!, out var takenBy));
        Assert.Equal(link.Server, takenBy);
        takenBy!.Tell(new ServerSession.ClientLeft(leaving.Ref)); // what ClientSession tells it
        leaving.Probe.ExpectNoMsg(TimeSpan.FromSeconds(1));
        await Eventually.True(() => s.Exchange.IdleCount == 1, "the server parked itself again", timeout: TimeSpan.FromSeconds(5));
        var next = NewClient();
        Acquire(s, next);
        Assert.Equal(link.Server, ExpectLinked(next, TimeSpan.FromSeconds(5)).Server);
        Assert.Equal(1, s.Runtime.ServerCount);
    }

    [Fact]
    public async Task Min_pool_size_opens_servers_with_no_client_at_all()
    {
        var s = StartPool("""
            default-pool-size = 5
            min-pool-size = 2
            """);
        await Eventually.True(async () => (await StatsAsync(s)).Idle == 2, "min-pool-size servers idle", timeout: Connect);
        Assert.Equal(2, s.Runtime.ServerCount);
        Assert.Equal(2, s.Exchange.IdleCount);
    }

    [Fact]
    public async Task A_failed_login_fails_the_waiters_and_holds_new_attempts_back_for_server_login_retry()
    {
        await using var fake = FakeBackend.Start(FakeBackendMode.RejectLogin);
        var s = StartPool("server-login-retry = 2s", port: fake.Port);
        var a = NewClient();
        var b = NewClient();
        Acquire(s, a);
        Acquire(s, b);
        var fa = a.Probe.ExpectMsg<Pool.Failure>(Connect);
        var fb = b.Probe.ExpectMsg<Pool.Failure>(Connect);
        Assert.Equal(FakeBackend.RejectSqlState, fa.SqlState);
        Assert.Contains(FakeBackend.RejectMessage, fa.Message);
        Assert.Equal(fa, fb);
        await Eventually.True(() => s.Runtime.ServerCount == 0, "the failed server sessions are gone");
        var attempts = fake.Accepted;
        Assert.InRange(attempts, 1, 2);

        // within server-login-retry a new client fails at once, without a new connection
        var c = NewClient();
        Acquire(s, c);
        Assert.Equal(fa, c.Probe.ExpectMsg<Pool.Failure>(TimeSpan.FromMilliseconds(500)));
        Assert.Equal(attempts, fake.Accepted);
        Assert.Equal(0, (await StatsAsync(s)).Waiting);
    }
}
