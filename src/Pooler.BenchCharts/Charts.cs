using System.Globalization;
using ScottPlot;

namespace Pooler.BenchCharts;

public static class Charts
{
    public const int DefaultWidth = 900;
    public const int DefaultHeight = 540;

    /// <summary>Fixed colours and names per target, so every chart reads the same.</summary>
    private static (Color Color, string Name) Style(string target) => target switch
    {
        "direct" => (Color.FromHex("#7f7f7f"), "PostgreSQL direct"),
        "pgbouncer" => (Color.FromHex("#1f77b4"), "PgBouncer"),
        "pooler" => (Color.FromHex("#d62728"), "Pooler"),
        _ => (Color.FromHex("#2ca02c"), target),
    };

    private static readonly string[] TargetOrder = ["direct", "pgbouncer", "pooler"];

    private static IEnumerable<string> Ordered(IEnumerable<string> targets) =>
        targets.Distinct().OrderBy(t => Array.IndexOf(TargetOrder, t) is var i && i < 0 ? int.MaxValue : i).ThenBy(t => t, StringComparer.Ordinal);

    /// <summary>
    /// Throughput by client count, one line per target, for one pgbench script. Client counts are evenly spaced
    /// categories (1, 50, 500, 1000 would crowd on a linear axis); failed runs are left out of their line.
    /// </summary>
    public static void RenderTps(IReadOnlyList<MatrixRow> rows, string script, string title, string path,
        int width = DefaultWidth, int height = DefaultHeight)
    {
        var mine = rows.Where(r => r.Script == script).ToList();
        if (mine.Count == 0) throw new ArgumentException($"no rows for script '{script}'", nameof(script));
        var clients = mine.Select(r => r.Clients).Distinct().Order().ToArray();

        var plot = new Plot();
        double top = 0;
        foreach (var target in Ordered(mine.Select(r => r.Target)))
        {
            var pts = mine.Where(r => r.Target == target && r.Tps is not null)
                .Select(r => (X: (double)Array.IndexOf(clients, r.Clients), Y: r.Tps!.Value)).OrderBy(p => p.X).ToArray();
            if (pts.Length == 0) continue;
            var (color, name) = Style(target);
            var line = plot.Add.Scatter(pts.Select(p => p.X).ToArray(), pts.Select(p => p.Y).ToArray(), color);
            line.LegendText = name;
            line.LineWidth = 2;
            line.MarkerSize = 8;
            top = Math.Max(top, pts.Max(p => p.Y));
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            clients.Select((_, i) => (double)i).ToArray(), clients.Select(c => c.ToString(CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.SetLimitsX(-0.3, clients.Length - 0.7);
        plot.Axes.SetLimitsY(0, top > 0 ? top * 1.15 : 1);
        plot.Title(title);
        plot.XLabel("pgbench clients");
        plot.YLabel("transactions per second");
        plot.ShowLegend(Alignment.LowerRight);
        Save(plot, path, width, height);
    }

    // Percentiles on a "nines" axis: x = log10(100 / (100 - p)), so 90 -> 1, 99 -> 2, 99.9 -> 3.
    private const double MaxPercentile = 99.99;
    private static double NinesX(double p) => Math.Log10(100.0 / (100.0 - Math.Min(p, MaxPercentile)));

    /// <summary>
    /// Latency distributions (ms by percentile) on a nines x axis and a log10 ms y axis. Series of the same target
    /// share a colour; only the first of them is named in the legend. A 100th percentile (the max) sits at 99.99;
    /// the 0th percentile is not drawn.
    /// </summary>
    public static void RenderLatency(IReadOnlyList<LatencySeries> series, string title, string path,
        int width = DefaultWidth, int height = DefaultHeight)
    {
        if (series.All(s => s.Points.All(p => p.Percentile <= 0))) throw new ArgumentException("no latency points", nameof(series));
        var plot = new Plot();
        var named = new HashSet<string>();
        double minMs = double.MaxValue, maxMs = 0, maxX = 0;
        foreach (var s in series.OrderBy(s => Array.IndexOf(TargetOrder, s.Target)))
        {
            // The 0th percentile is the histogram's lowest bucket, not a latency anyone waits; it is left out.
            var points = s.Points.Where(p => p.Percentile > 0).ToArray();
            if (points.Length == 0) continue;
            var xs = points.Select(p => NinesX(p.Percentile)).ToArray();
            var ms = points.Select(p => Math.Max(p.Ms, 0.001)).ToArray();
            var (color, name) = Style(s.Target);
            var line = plot.Add.Scatter(xs, ms.Select(Math.Log10).ToArray(), color);
            line.LineWidth = 2;
            line.MarkerSize = 4;
            if (named.Add(s.Target)) line.LegendText = name;
            minMs = Math.Min(minMs, ms.Min());
            maxMs = Math.Max(maxMs, ms.Max());
            maxX = Math.Max(maxX, xs.Max());
        }

        (double, string)[] nines = [(0, "0"), (NinesX(50), "50"), (NinesX(75), "75"), (1, "90"), (NinesX(95), "95"),
            (2, "99"), (3, "99.9"), (4, "max")];
        var xt = nines.Where(t => t.Item1 <= maxX + 1e-9).ToArray();
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(xt.Select(t => t.Item1).ToArray(), xt.Select(t => t.Item2).ToArray());
        plot.Axes.SetLimitsX(-0.05, Math.Max(maxX, 1) + 0.1);

        // 1-2-5 ticks per decade between the smallest and largest value (1 only when there are many decades).
        var lo = Math.Floor(Math.Log10(minMs));
        var hi = Math.Ceiling(Math.Log10(maxMs));
        if (hi <= lo) hi = lo + 1;
        double[] steps = hi - lo > 4 ? [1.0] : [1.0, 2.0, 5.0];
        var yt = new List<(double, string)>();
        for (var d = lo; d <= hi; d++)
            foreach (var m in steps)
            {
                var v = m * Math.Pow(10, d);
                if (Math.Log10(v) <= hi + 1e-9) yt.Add((Math.Log10(v), v.ToString("0.###", CultureInfo.InvariantCulture)));
            }
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(yt.Select(t => t.Item1).ToArray(), yt.Select(t => t.Item2).ToArray());
        plot.Axes.SetLimitsY(lo, hi);

        plot.Title(title);
        plot.XLabel("percentile");
        plot.YLabel("latency, ms (log scale)");
        plot.ShowLegend(Alignment.UpperLeft);
        Save(plot, path, width, height);
    }

    private static void Save(Plot plot, string path, int width, int height)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        plot.SavePng(path, width, height);
    }
}
