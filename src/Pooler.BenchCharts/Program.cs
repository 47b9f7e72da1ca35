using System.Globalization;

namespace Pooler.BenchCharts;

/// <summary>
/// Draws bench/run.sh's charts.
///   tps --tsv MATRIX.tsv --out-prefix PREFIX [--title-prefix TEXT] [--width W] [--height H]
///       one PNG per pgbench script in the TSV: PREFIX-SCRIPT.png (tps by client count, one line per target)
///   latency --out FILE.png [--step STEP] [--title TEXT] [--width W] [--height H] TARGET=RUN.json ...
///       the latency distribution of STEP (default __cycle__) of each Pooler.Workload run JSON, coloured by TARGET
/// Exit codes: 0 done, 1 bad input, 2 bad command line.
/// </summary>
public static class Program
{
    private const string Usage = """
        usage: Pooler.BenchCharts tps --tsv MATRIX.tsv --out-prefix PREFIX [--title-prefix TEXT] [--width W] [--height H]
               Pooler.BenchCharts latency --out FILE.png [--step STEP] [--title TEXT] [--width W] [--height H] TARGET=RUN.json ...
        """;

    public static int Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.Out.WriteLine(Usage);
            return args.Length == 0 ? 2 : 0;
        }
        Dictionary<string, string> opts;
        List<string> rest;
        try
        {
            (opts, rest) = Parse(args.Skip(1));
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"bench-charts: {e.Message}\n{Usage}");
            return 2;
        }
        try
        {
            var width = Int(opts, "width", Charts.DefaultWidth);
            var height = Int(opts, "height", Charts.DefaultHeight);
            switch (args[0])
            {
                case "tps":
                {
                    var rows = Inputs.ReadMatrix(Required(opts, "tsv"));
                    var prefix = Required(opts, "out-prefix");
                    var titlePrefix = opts.GetValueOrDefault("title-prefix", "pgbench");
                    foreach (var script in rows.Select(r => r.Script).Distinct())
                    {
                        var path = $"{prefix}-{script}.png";
                        Charts.RenderTps(rows, script, $"{titlePrefix} {script}: tps by clients", path, width, height);
                        Console.Out.WriteLine(path);
                    }
                    return 0;
                }
                case "latency":
                {
                    var step = opts.GetValueOrDefault("step", "__cycle__");
                    var series = new List<LatencySeries>();
                    foreach (var spec in rest)
                    {
                        var eq = spec.IndexOf('=');
                        if (eq <= 0) throw new ArgumentException($"'{spec}' is not TARGET=FILE.json");
                        var file = spec[(eq + 1)..];
                        series.Add(new LatencySeries(spec[..eq], Path.GetFileNameWithoutExtension(file), Inputs.ReadDistribution(file, step)));
                    }
                    if (series.Count == 0) throw new ArgumentException("no TARGET=FILE.json given");
                    var output = Required(opts, "out");
                    Charts.RenderLatency(series, opts.GetValueOrDefault("title", $"{step} latency distribution"), output, width, height);
                    Console.Out.WriteLine(output);
                    return 0;
                }
                default:
                    Console.Error.WriteLine($"bench-charts: unknown command '{args[0]}'\n{Usage}");
                    return 2;
            }
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"bench-charts: {e.Message}\n{Usage}");
            return 2;
        }
        catch (Exception e) when (e is InvalidDataException or IOException or System.Text.Json.JsonException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"bench-charts: {e.Message}");
            return 1;
        }
    }

    private static (Dictionary<string, string>, List<string>) Parse(IEnumerable<string> args)
    {
        var opts = new Dictionary<string, string>(StringComparer.Ordinal);
        var rest = new List<string>();
        using var e = args.GetEnumerator();
        while (e.MoveNext())
        {
            var a = e.Current;
            if (a.StartsWith("--", StringComparison.Ordinal))
            {
                if (!e.MoveNext()) throw new ArgumentException($"{a} needs a value");
                opts[a[2..]] = e.Current;
            }
            else rest.Add(a);
        }
        return (opts, rest);
    }

    private static string Required(Dictionary<string, string> opts, string name) =>
        opts.TryGetValue(name, out var v) ? v : throw new ArgumentException($"--{name} is required");

    private static int Int(Dictionary<string, string> opts, string name, int fallback)
    {
        if (!opts.TryGetValue(name, out var v)) return fallback;
        return int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n is >= 100 and <= 10000
            ? n : throw new ArgumentException($"--{name} must be a number of pixels between 100 and 10000");
    }
}
