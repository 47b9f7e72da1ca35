using System.Collections.Concurrent;
using HdrHistogram;

namespace Pooler.Workload;

/// <summary>
/// Latencies of one run in microseconds: one HdrHistogram per step and one for the whole cycle, shared by
/// every loop (recording takes a lock per histogram; at a few thousand records a second that is nothing,
/// and a histogram per loop would cost ~150 KB x 5 x connections). Also the error counts by SQLSTATE.
/// </summary>
public sealed class RunStats
{
    /// <summary>Largest latency kept: one hour; longer ones are recorded as one hour.</summary>
    public const long HighestMicros = 3_600_000_000L;

    private readonly Dictionary<string, LongHistogram> _histograms = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _errors = new(StringComparer.Ordinal);
    private long _cycles;
    private long _errorsTotal;

    public RunStats()
    {
        _histograms[Steps.Cycle] = NewHistogram();
        foreach (var step in Steps.InOrder) _histograms[Steps.Name(step)] = NewHistogram();
    }

    public static LongHistogram NewHistogram() => new(1, HighestMicros, 3);

    /// <summary>Names in report order: <c>__cycle__</c>, then the steps in the order a cycle takes them.</summary>
    public static IReadOnlyList<string> Names { get; } = [Steps.Cycle, .. Steps.InOrder.Select(Steps.Name)];

    public long Cycles => Interlocked.Read(ref _cycles);
    public long ErrorsTotal => Interlocked.Read(ref _errorsTotal);

    public void RecordStep(Step step, long micros) => Record(Steps.Name(step), micros);

    public void RecordCycle(long micros)
    {
        Record(Steps.Cycle, micros);
        Interlocked.Increment(ref _cycles);
    }

    private void Record(string name, long micros)
    {
        var h = _histograms[name];
        var v = Math.Clamp(micros, 1, HighestMicros);
        lock (h) h.RecordValue(v);
    }

    public void RecordError(string sqlState)
    {
        _errors.AddOrUpdate(sqlState, 1, (_, n) => n + 1);
        Interlocked.Increment(ref _errorsTotal);
    }

    /// <summary>A copy of the histogram of <paramref name="name"/> (step name or <c>__cycle__</c>).</summary>
    public HistogramBase Snapshot(string name)
    {
        var h = _histograms[name];
        lock (h) return h.Copy();
    }

    public IReadOnlyDictionary<string, long> Errors =>
        new SortedDictionary<string, long>(_errors.ToDictionary(kv => kv.Key, kv => kv.Value), StringComparer.Ordinal);
}

/// <summary>Summary of one histogram, in milliseconds.</summary>
public sealed record StepSummary(long Count, double OpsPerSecond, double MeanMs, double P50Ms, double P90Ms, double P95Ms,
    double P99Ms, double MaxMs)
{
    /// <summary>Summarises a histogram of microseconds over a run of <paramref name="elapsedSeconds"/>.</summary>
    public static StepSummary From(HistogramBase h, double elapsedSeconds)
    {
        var count = h.TotalCount;
        if (count == 0) return new StepSummary(0, 0, 0, 0, 0, 0, 0, 0);
        static double Ms(long micros) => micros / 1000.0;
        return new StepSummary(count, elapsedSeconds > 0 ? count / elapsedSeconds : 0, h.GetMean() / 1000.0,
            Ms(h.GetValueAtPercentile(50)), Ms(h.GetValueAtPercentile(90)), Ms(h.GetValueAtPercentile(95)),
            Ms(h.GetValueAtPercentile(99)), Ms(h.GetMaxValue()));
    }

    /// <summary>
    /// (percentile, ms) points of HdrHistogram's percentile iteration (5 ticks per half distance), thinned
    /// to at most <paramref name="maxPoints"/> keeping the first and the last.
    /// </summary>
    public static IReadOnlyList<(double Percentile, double Ms)> Distribution(HistogramBase h, int maxPoints = 200)
    {
        if (h.TotalCount == 0) return [];
        var points = h.Percentiles(5).Select(v => (v.PercentileLevelIteratedTo, v.ValueIteratedTo / 1000.0)).ToList();
        if (points.Count <= maxPoints) return points;
        var thinned = new List<(double, double)>(maxPoints);
        var step = (points.Count - 1) / (double)(maxPoints - 1);
        for (var i = 0; i < maxPoints; i++) thinned.Add(points[(int)Math.Round(i * step)]);
        return thinned;
    }
}
