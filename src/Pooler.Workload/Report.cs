using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Pooler.Workload;

/// <summary>Everything the end of a run prints: the table on stdout and the JSON file.</summary>
public sealed record RunReport
{
    public required string Name { get; init; }
    public required string UriRedacted { get; init; }
    public int Connections { get; init; }
    public int Workers { get; init; }
    /// <summary>Cycles per worker as asked (null in duration mode).</summary>
    public long? Iterations { get; init; }
    public double? DurationSeconds { get; init; }
    public int DelayMs { get; init; }
    public int BatchSize { get; init; }
    public bool Prepare { get; init; }
    public bool Cockroach { get; init; }
    public IReadOnlyDictionary<string, double> Frequencies { get; init; } = new Dictionary<string, double>();
    public double OpenSeconds { get; init; }
    public double ElapsedSeconds { get; init; }
    /// <summary>Per name in <see cref="RunStats.Names"/> order.</summary>
    public required IReadOnlyList<KeyValuePair<string, StepSummary>> Steps { get; init; }
    public IReadOnlyList<(double Percentile, double Ms)> CycleDistribution { get; init; } = [];
    public IReadOnlyDictionary<string, long> Errors { get; init; } = new Dictionary<string, long>();

    public long ErrorsTotal => Errors.Values.Sum();
    public long Cycles => Steps.First(s => s.Key == Pooler.Workload.Steps.Cycle).Value.Count;
    public double CyclesPerSecond => ElapsedSeconds > 0 ? Cycles / ElapsedSeconds : 0;

    public static RunReport From(RunOptions o, RunStats stats, double openSeconds, double elapsedSeconds) => new()
    {
        Name = o.Name,
        UriRedacted = ConnectionStrings.Redact(o.Uri),
        Connections = o.Connections,
        Workers = o.Workers,
        Iterations = o.Iterations,
        DurationSeconds = o.Duration?.TotalSeconds,
        DelayMs = o.DelayMs,
        BatchSize = o.BatchSize,
        Prepare = o.Prepare,
        Cockroach = o.Cockroach,
        Frequencies = new Dictionary<string, double>
        {
            ["schedule"] = o.ScheduleFreq, ["status"] = o.StatusFreq, ["inventory"] = o.InventoryFreq, ["price"] = o.PriceFreq,
        },
        OpenSeconds = openSeconds,
        ElapsedSeconds = elapsedSeconds,
        Steps = RunStats.Names.Select(n => KeyValuePair.Create(n, StepSummary.From(stats.Snapshot(n), elapsedSeconds))).ToList(),
        CycleDistribution = StepSummary.Distribution(stats.Snapshot(Pooler.Workload.Steps.Cycle)),
        Errors = stats.Errors,
    };
}

public static class ReportFormatter
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>dbworkload-style box table (one row per step and <c>__cycle__</c>) plus the error line.</summary>
    public static string Table(RunReport r)
    {
        string[] headers = ["elapsed", "id", "threads", "tot_ops", "tot_ops/s", "mean(ms)", "p50(ms)", "p90(ms)", "p95(ms)", "p99(ms)", "max(ms)"];
        var rows = r.Steps.Select(kv => new[]
        {
            r.ElapsedSeconds.ToString("N0", Inv), kv.Key, r.Connections.ToString("N0", Inv), kv.Value.Count.ToString("N0", Inv),
            kv.Value.OpsPerSecond.ToString("N0", Inv), Ms(kv.Value.MeanMs), Ms(kv.Value.P50Ms), Ms(kv.Value.P90Ms),
            Ms(kv.Value.P95Ms), Ms(kv.Value.P99Ms), Ms(kv.Value.MaxMs),
        }).ToList();
        var widths = headers.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(row => row[i].Length))).ToArray();

        var sb = new StringBuilder();
        string Line(char left, char mid, char right) =>
            left + string.Join(mid, widths.Select(w => new string('─', w + 2))) + right;
        string Row(string[] cells) =>
            "│" + string.Join("│", cells.Select((c, i) => " " + (i == 1 ? c.PadRight(widths[i]) : c.PadLeft(widths[i])) + " ")) + "│";

        sb.Append(Inv, $"run {r.Name}: {r.Connections} connections, {r.Workers} worker(s), prepare={(r.Prepare ? "on" : "off")}, ")
          .Append(Inv, $"batch {r.BatchSize}, delay {r.DelayMs} ms, opened in {r.OpenSeconds:0.00} s, ran {r.ElapsedSeconds:0.00} s, ")
          .Append(Inv, $"{r.CyclesPerSecond:0.0} cycles/s\n");
        sb.Append(Line('┌', '┬', '┐')).Append('\n');
        sb.Append(Row(headers)).Append('\n');
        sb.Append(Line('├', '┼', '┤')).Append('\n');
        foreach (var row in rows) sb.Append(Row(row)).Append('\n');
        sb.Append(Line('└', '┴', '┘')).Append('\n');
        sb.Append(ErrorLine(r.Errors)).Append('\n');
        return sb.ToString();
    }

    public static string ErrorLine(IReadOnlyDictionary<string, long> errors) =>
        errors.Count == 0
            ? "errors: none"
            : "errors: " + string.Join(", ", errors.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => $"{e.Key}={e.Value}"))
              + $" (total {errors.Values.Sum()})";

    private static string Ms(double ms) => ms.ToString("N2", Inv);

    private static double Round(double v, int digits = 3) => Math.Round(v, digits, MidpointRounding.AwayFromZero);

    /// <summary>The JSON file of a run (snake_case keys, numbers as numbers).</summary>
    public static string Json(RunReport r)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("name", r.Name);
            w.WriteString("uri_redacted", r.UriRedacted);
            w.WriteNumber("connections", r.Connections);
            w.WriteNumber("workers", r.Workers);
            if (r.Iterations is { } it) w.WriteNumber("iterations", it); else w.WriteNull("iterations");
            if (r.DurationSeconds is { } d) w.WriteNumber("duration_seconds", Round(d)); else w.WriteNull("duration_seconds");
            w.WriteNumber("delay_ms", r.DelayMs);
            w.WriteNumber("batch_size", r.BatchSize);
            w.WriteBoolean("prepare", r.Prepare);
            w.WriteBoolean("cockroach", r.Cockroach);
            w.WriteStartObject("frequencies");
            foreach (var (k, v) in r.Frequencies) w.WriteNumber(k, v);
            w.WriteEndObject();
            w.WriteNumber("open_seconds", Round(r.OpenSeconds));
            w.WriteNumber("elapsed_seconds", Round(r.ElapsedSeconds));
            w.WriteNumber("cycles", r.Cycles);
            w.WriteNumber("cycles_per_second", Round(r.CyclesPerSecond));
            w.WriteStartObject("steps");
            foreach (var (name, s) in r.Steps)
            {
                w.WriteStartObject(name);
                w.WriteNumber("count", s.Count);
                w.WriteNumber("ops_per_second", Round(s.OpsPerSecond));
                w.WriteNumber("mean_ms", Round(s.MeanMs));
                w.WriteNumber("p50_ms", Round(s.P50Ms));
                w.WriteNumber("p90_ms", Round(s.P90Ms));
                w.WriteNumber("p95_ms", Round(s.P95Ms));
                w.WriteNumber("p99_ms", Round(s.P99Ms));
                w.WriteNumber("max_ms", Round(s.MaxMs));
                w.WriteEndObject();
            }
            w.WriteEndObject();
            w.WriteStartObject("distribution");
            w.WriteStartArray(Steps.Cycle);
            foreach (var (p, ms) in r.CycleDistribution)
            {
                w.WriteStartArray();
                w.WriteNumberValue(Round(p, 6));
                w.WriteNumberValue(Round(ms));
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteEndObject();
            WriteErrors(w, r.Errors);
            w.WriteNumber("errors_total", r.ErrorsTotal);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }

    internal static void WriteErrors(Utf8JsonWriter w, IReadOnlyDictionary<string, long> errors)
    {
        w.WriteStartObject("errors");
        foreach (var (k, v) in errors.OrderBy(e => e.Key, StringComparer.Ordinal)) w.WriteNumber(k, v);
        w.WriteEndObject();
    }

    /// <summary>The JSON file of <c>idle</c>.</summary>
    public static string IdleJson(int connections, int opened, double openSeconds, int failed, IReadOnlyDictionary<string, long> errors, double heldSeconds, bool indented = true)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = indented, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteNumber("connections", connections);
            w.WriteNumber("opened", opened);
            w.WriteNumber("open_seconds", Round(openSeconds));
            w.WriteNumber("failed", failed);
            WriteErrors(w, errors);
            w.WriteNumber("held_seconds", Round(heldSeconds));
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }
}
