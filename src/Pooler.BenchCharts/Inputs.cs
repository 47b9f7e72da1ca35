using System.Globalization;
using System.Text.Json;

namespace Pooler.BenchCharts;

/// <summary>One pgbench run of the matrix: a script, a target (direct, pgbouncer, pooler), a client count and its tps.</summary>
public sealed record MatrixRow(string Script, string Target, int Clients, double? Tps, string Status);

/// <summary>One latency distribution: (percentile, milliseconds) points of one workload run.</summary>
public sealed record LatencySeries(string Target, string Label, IReadOnlyList<(double Percentile, double Ms)> Points);

public static class Inputs
{
    /// <summary>
    /// Reads the matrix TSV that bench/run.sh writes: a header line naming the columns (at least script, target,
    /// clients, tps and status, in any order), then one line per run. A tps of "-" or a status other than "ok" is a
    /// failed run; it is kept with a null tps.
    /// </summary>
    public static List<MatrixRow> ReadMatrix(string path)
    {
        var lines = File.ReadAllLines(path).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        if (lines.Count == 0) throw new InvalidDataException($"{path}: empty");
        var header = lines[0].Split('\t');
        int Col(string name)
        {
            var i = Array.IndexOf(header, name);
            if (i < 0) throw new InvalidDataException($"{path}: no '{name}' column in the header");
            return i;
        }
        int script = Col("script"), target = Col("target"), clients = Col("clients"), tps = Col("tps"), status = Col("status");
        var rows = new List<MatrixRow>();
        for (var n = 1; n < lines.Count; n++)
        {
            var f = lines[n].Split('\t');
            if (f.Length < header.Length) throw new InvalidDataException($"{path}:{n + 1}: {f.Length} fields, header has {header.Length}");
            if (!int.TryParse(f[clients], NumberStyles.Integer, CultureInfo.InvariantCulture, out var c))
                throw new InvalidDataException($"{path}:{n + 1}: clients '{f[clients]}' is not a number");
            double? t = double.TryParse(f[tps], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && f[status] == "ok" ? v : null;
            rows.Add(new MatrixRow(f[script], f[target], c, t, f[status]));
        }
        return rows;
    }

    /// <summary>
    /// Reads the "distribution" of one step (default "__cycle__") from a Pooler.Workload run JSON:
    /// <c>{"distribution": {"__cycle__": [[50, 1.2], [99, 8.5], ...]}}</c>.
    /// </summary>
    public static List<(double Percentile, double Ms)> ReadDistribution(string path, string step = "__cycle__")
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        if (!doc.RootElement.TryGetProperty("distribution", out var dist) || dist.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: no \"distribution\" object");
        if (!dist.TryGetProperty(step, out var points) || points.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path}: no distribution for step '{step}'");
        var list = new List<(double, double)>();
        foreach (var p in points.EnumerateArray())
        {
            if (p.ValueKind != JsonValueKind.Array || p.GetArrayLength() < 2)
                throw new InvalidDataException($"{path}: a distribution point is not [percentile, ms]");
            list.Add((p[0].GetDouble(), p[1].GetDouble()));
        }
        list.Sort((a, b) => a.Item1.CompareTo(b.Item1));
        return list;
    }
}
