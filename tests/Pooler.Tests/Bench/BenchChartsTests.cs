using System.Buffers.Binary;
using Pooler.BenchCharts;
using Pooler.Tests.Config;
using Xunit;

namespace Pooler.Tests.Bench;

/// <summary>The bench chart renderer draws real PNGs of the asked size from the files bench/run.sh writes.</summary>
public sealed class BenchChartsTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private const string Matrix =
        "script\ttarget\tclients\ttps\tavg_ms\tp99_ms\tstatus\n" +
        "select-only\tdirect\t1\t8522.1\t0.117\t0.2\tok\n" +
        "select-only\tdirect\t50\t7699\t6.4\t20.1\tok\n" +
        "select-only\tpgbouncer\t1\t5305\t0.19\t0.3\tok\n" +
        "select-only\tpgbouncer\t50\t6483\t7.7\t21\tok\n" +
        "select-only\tpooler\t1\t3067\t0.33\t0.6\tok\n" +
        "select-only\tpooler\t50\t-\t-\t-\tFAILED(timeout)\n" +
        "tpcb\tdirect\t1\t900\t1.1\t2\tok\n";

    [Fact]
    public void Tps_chart_is_a_png_of_the_requested_size()
    {
        var tsv = _dir.Write("matrix.tsv", Matrix);
        var rows = Inputs.ReadMatrix(tsv);
        Assert.Equal(7, rows.Count);
        Assert.Null(rows.Single(r => r.Target == "pooler" && r.Clients == 50).Tps);

        var png = Path.Combine(_dir.Path, "tps.png");
        Charts.RenderTps(rows, "select-only", "pgbench -S", png, 640, 400);
        AssertPng(png, 640, 400);
    }

    [Fact]
    public void Latency_chart_reads_workload_json_and_is_a_png_of_the_requested_size()
    {
        var series = new List<LatencySeries>();
        foreach (var (target, scale) in new[] { ("direct", 1.0), ("pgbouncer", 0.5), ("pooler", 0.7) })
        {
            var points = string.Join(",", new (double P, double Ms)[] { (99, 30), (0, 0.001), (50, 3), (90, 9), (99.9, 80), (100, 200) }
                .Select(p => FormattableString.Invariant($"[{p.P},{p.Ms * scale}]")));
            var json = _dir.Write($"{target}.json",
                "{\"name\":\"" + target + "\",\"distribution\":{\"__cycle__\":[" + points + "]}}");
            var read = Inputs.ReadDistribution(json);
            Assert.Equal(0, read[0].Percentile); // sorted; the chart leaves the 0th out
            series.Add(new LatencySeries(target, target, read));
        }
        var png = Path.Combine(_dir.Path, "sub", "latency.png");
        Charts.RenderLatency(series, "cycle latency", png, 800, 500);
        AssertPng(png, 800, 500);
    }

    [Fact]
    public void Command_line_writes_one_chart_per_script_and_rejects_bad_input()
    {
        var tsv = _dir.Write("matrix.tsv", Matrix);
        var prefix = Path.Combine(_dir.Path, "out", "tps");
        Assert.Equal(0, Pooler.BenchCharts.Program.Main(["tps", "--tsv", tsv, "--out-prefix", prefix, "--width", "300", "--height", "200"]));
        AssertPng(prefix + "-select-only.png", 300, 200);
        AssertPng(prefix + "-tpcb.png", 300, 200);

        Assert.Equal(1, Pooler.BenchCharts.Program.Main(["tps", "--tsv", _dir.Write("bad.tsv", "target\tclients\n"), "--out-prefix", prefix]));
        Assert.Equal(2, Pooler.BenchCharts.Program.Main(["latency", "--out", Path.Combine(_dir.Path, "x.png")]));
    }

    private static void AssertPng(string path, int width, int height)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.True(bytes.Length > 1000, $"{path}: only {bytes.Length} bytes");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(bytes, 12, 4));
        Assert.Equal(width, BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16, 4)));
        Assert.Equal(height, BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20, 4)));
    }
}
