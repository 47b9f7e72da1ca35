using System.Diagnostics;

namespace Pooler.Actors.Ops;

/// <summary>
/// A pool's running totals (PgBouncer's SHOW STATS columns), added to by its client and server sessions
/// on the relay path: one interlocked add per chunk or per ReadyForQuery, no lock, no allocation.
/// Times are kept in Stopwatch ticks and reported in microseconds.
/// </summary>
public sealed class PoolCounters : Protocol.Prepared.IStatementCounters
{
    private long _xacts, _queries, _received, _sent, _xactTicks, _queryTicks, _waitTicks;
    private long _clientParses, _serverParses, _binds;

    public void ClientParse() => Interlocked.Increment(ref _clientParses);
    public void ServerParse() => Interlocked.Increment(ref _serverParses);
    public void Bind() => Interlocked.Increment(ref _binds);

    /// <summary>The pool's series of the Prometheus wait-time histogram (set by the pool, which knows its labels).</summary>
    public Prometheus.Histogram.Child? WaitHistogram { get; set; }

    public void AddReceived(int bytes) => Interlocked.Add(ref _received, bytes);
    public void AddSent(int bytes) => Interlocked.Add(ref _sent, bytes);

    /// <summary>A query (one ReadyForQuery) took <paramref name="ticks"/>.</summary>
    public void Query(long ticks)
    {
        Interlocked.Increment(ref _queries);
        Interlocked.Add(ref _queryTicks, ticks);
    }

    /// <summary>A transaction (or a query outside one) ended after <paramref name="ticks"/>.</summary>
    public void Transaction(long ticks)
    {
        Interlocked.Increment(ref _xacts);
        Interlocked.Add(ref _xactTicks, ticks);
    }

    /// <summary>A queued client got a server after <paramref name="wait"/>.</summary>
    public void Waited(TimeSpan wait)
    {
        var seconds = Math.Max(0, wait.TotalSeconds);
        Interlocked.Add(ref _waitTicks, (long)(seconds * Stopwatch.Frequency));
        WaitHistogram?.Observe(seconds);
    }

    public PoolTotals Snapshot() => new(
        Volatile.Read(ref _xacts), Volatile.Read(ref _queries), Volatile.Read(ref _received), Volatile.Read(ref _sent),
        Us(Volatile.Read(ref _xactTicks)), Us(Volatile.Read(ref _queryTicks)), Us(Volatile.Read(ref _waitTicks)),
        Volatile.Read(ref _clientParses), Volatile.Read(ref _serverParses), Volatile.Read(ref _binds));

    private static long Us(long ticks) => (long)(ticks * 1_000_000.0 / Stopwatch.Frequency);
}

/// <summary>A pool's totals at one moment (times in microseconds).</summary>
/// <param name="ClientParses">Named Parse messages from clients (PgBouncer's client parse count).</param>
/// <param name="ServerParses">Parse messages the pooler sent servers for named statements (server parse count).</param>
/// <param name="Binds">Bind messages of named statements (bind count).</param>
public sealed record PoolTotals(long Xacts, long Queries, long Received, long Sent, long XactUs, long QueryUs, long WaitUs,
    long ClientParses = 0, long ServerParses = 0, long Binds = 0)
{
    public static readonly PoolTotals Zero = new(0, 0, 0, 0, 0, 0, 0);

    public PoolTotals Plus(PoolTotals o) => new(Xacts + o.Xacts, Queries + o.Queries, Received + o.Received, Sent + o.Sent,
        XactUs + o.XactUs, QueryUs + o.QueryUs, WaitUs + o.WaitUs, ClientParses + o.ClientParses, ServerParses + o.ServerParses, Binds + o.Binds);

    public PoolTotals Minus(PoolTotals o) => new(Xacts - o.Xacts, Queries - o.Queries, Received - o.Received, Sent - o.Sent,
        XactUs - o.XactUs, QueryUs - o.QueryUs, WaitUs - o.WaitUs, ClientParses - o.ClientParses, ServerParses - o.ServerParses, Binds - o.Binds);
}
