using System.Text.Json;
using Pooler.Workload;
using Xunit;

namespace Pooler.Tests.Workload;

public sealed class WorkloadLogicTests
{
    private static RunOptions Options(params string[] extra) =>
        ArgParser.ParseRun(["--uri", "postgresql://u@h/d", .. extra]);

    [Fact]
    public void Steps_are_taken_with_their_frequencies()
    {
        var planner = new StepPlanner(Options(), new Random(42));
        const int cycles = 20_000;
        var taken = Steps.InOrder.ToDictionary(s => s, _ => 0);
        for (var i = 0; i < cycles; i++)
            foreach (var step in Steps.InOrder)
                if (planner.Takes(step)) taken[step]++;
        Assert.InRange(taken[Step.Schedule] * 100.0 / cycles, 9, 11);
        Assert.InRange(taken[Step.Status] * 100.0 / cycles, 89, 91);
        Assert.InRange(taken[Step.Inventory] * 100.0 / cycles, 74, 76);
        Assert.InRange(taken[Step.Price] * 100.0 / cycles, 24, 26);
    }

    [Fact]
    public void Zero_and_hundred_percent_are_never_and_always()
    {
        var planner = new StepPlanner(Options("--schedule-freq", "0", "--status-freq", "100"), new Random(1));
        for (var i = 0; i < 5000; i++)
        {
            Assert.False(planner.Takes(Step.Schedule));
            Assert.True(planner.Takes(Step.Status));
        }
    }

    [Fact]
    public void A_seeded_random_gives_the_same_decisions()
    {
        static string Trace(int seed)
        {
            var p = new StepPlanner(Options(), new Random(seed));
            return string.Join(",", Enumerable.Range(0, 50).Select(_ =>
                string.Concat(Steps.InOrder.Select(s => p.Takes(s) ? "1" : "0")) + p.Offset(50_000) + p.Value(Step.Status)));
        }
        Assert.Equal(Trace(7), Trace(7));
        Assert.NotEqual(Trace(7), Trace(8));
    }

    [Fact]
    public void Random_values_stay_in_their_ranges()
    {
        var planner = new StepPlanner(Options("--delay", "100", "--batch-size", "64"), new Random(3));
        var shifts = new HashSet<int>();
        var statuses = new HashSet<string>();
        for (var i = 0; i < 20_000; i++)
        {
            Assert.InRange(planner.Pause().TotalMilliseconds, 75, 125);
            var shift = planner.ShiftMinutes();
            Assert.InRange(Math.Abs(shift), 5, 60);
            shifts.Add(shift);
            statuses.Add(planner.Status());
            Assert.InRange(planner.InventoryFactor(), 0.975m, 1.075m);
            Assert.InRange(planner.PriceFactor(), 0.95m, 1.05m);
            Assert.InRange(planner.Offset(2000), 0, 2000 - 64);
        }
        Assert.Contains(-60, shifts);
        Assert.Contains(5, shifts);
        Assert.Equal(Steps.StatusValues.ToHashSet(), statuses);
        Assert.Equal(0, planner.Offset(10)); // fewer flights than a batch: take them all
    }

    [Fact]
    public void Step_sql_updates_the_right_table_from_a_random_window_of_flights()
    {
        Assert.Equal(
            "UPDATE flight_status SET status = $1, updated_at = now() WHERE flight_id IN (SELECT id FROM flights ORDER BY id OFFSET $2 LIMIT $3)",
            StepSql.Update(Step.Status, cockroach: false));
        Assert.StartsWith("UPDATE flights SET scheduled_departure = scheduled_departure + $1 * interval '1 minute'", StepSql.Update(Step.Schedule, false));
        Assert.Contains("scheduled_arrival = scheduled_arrival + $1", StepSql.Update(Step.Schedule, false));
        Assert.StartsWith("UPDATE seat_inventory SET seats_available", StepSql.Update(Step.Inventory, false));
        Assert.StartsWith("UPDATE flight_prices SET price_usd", StepSql.Update(Step.Price, false));
        Assert.EndsWith("WHERE flight_id = ANY($2)", StepSql.Update(Step.Price, cockroach: true));
        Assert.Contains("AS OF SYSTEM TIME follower_read_timestamp()", StepSql.PickIdsFollowerRead);
        Assert.All(Steps.InOrder, s => Assert.DoesNotContain("AS OF SYSTEM TIME", StepSql.Update(s, false)));
    }

    /// <summary>1..1000 ms, once each, over 10 s, for a known summary.</summary>
    private static RunStats KnownStats()
    {
        var stats = new RunStats();
        for (var ms = 1; ms <= 1000; ms++)
        {
            stats.RecordCycle(ms * 1000L);
            if (ms % 4 == 0) stats.RecordStep(Step.Price, ms * 1000L);
        }
        stats.RecordError("40P01");
        stats.RecordError("40P01");
        stats.RecordError("08006");
        return stats;
    }

    [Fact]
    public void Summary_of_a_known_histogram()
    {
        var s = StepSummary.From(KnownStats().Snapshot(Steps.Cycle), elapsedSeconds: 10);
        Assert.Equal(1000, s.Count);
        Assert.Equal(100, s.OpsPerSecond, 6);
        Assert.InRange(s.MeanMs, 500, 501); // HdrHistogram keeps 3 significant digits
        Assert.Equal(500, s.P50Ms, 0);
        Assert.Equal(900, s.P90Ms, 0);
        Assert.Equal(950, s.P95Ms, 0);
        Assert.Equal(990, s.P99Ms, 0);
        Assert.Equal(1000, s.MaxMs, 0);
        Assert.Equal(0, StepSummary.From(KnownStats().Snapshot("schedule"), 10).Count);
    }

    private static RunReport KnownReport() =>
        RunReport.From(Options("--connections", "1024", "--workers", "4", "--iterations", "8192", "--no-prepare", "--name", "pooling"),
            KnownStats(), openSeconds: 1.25, elapsedSeconds: 10);

    [Fact]
    public void Json_has_the_agreed_shape()
    {
        using var doc = JsonDocument.Parse(ReportFormatter.Json(KnownReport()));
        var root = doc.RootElement;
        Assert.Equal("pooling", root.GetProperty("name").GetString());
        Assert.Equal("postgresql://u@h/d", root.GetProperty("uri_redacted").GetString());
        Assert.Equal(1024, root.GetProperty("connections").GetInt32());
        Assert.Equal(4, root.GetProperty("workers").GetInt32());
        Assert.Equal(8192, root.GetProperty("iterations").GetInt64());
        Assert.Equal(100, root.GetProperty("delay_ms").GetInt32());
        Assert.Equal(64, root.GetProperty("batch_size").GetInt32());
        Assert.False(root.GetProperty("prepare").GetBoolean());
        Assert.Equal(1.25, root.GetProperty("open_seconds").GetDouble());
        Assert.Equal(10, root.GetProperty("elapsed_seconds").GetDouble());
        Assert.Equal(100, root.GetProperty("cycles_per_second").GetDouble());

        var steps = root.GetProperty("steps");
        Assert.Equal(["__cycle__", "schedule", "status", "inventory", "price"], steps.EnumerateObject().Select(p => p.Name));
        var cycle = steps.GetProperty("__cycle__");
        foreach (var key in new[] { "count", "ops_per_second", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms" })
            Assert.Equal(JsonValueKind.Number, cycle.GetProperty(key).ValueKind);
        Assert.Equal(1000, cycle.GetProperty("count").GetInt64());
        Assert.Equal(250, steps.GetProperty("price").GetProperty("count").GetInt64());
        Assert.Equal(0, steps.GetProperty("schedule").GetProperty("count").GetInt64());

        var points = root.GetProperty("distribution").GetProperty("__cycle__").EnumerateArray()
            .Select(p => (P: p[0].GetDouble(), Ms: p[1].GetDouble())).ToList();
        Assert.InRange(points.Count, 20, 200);
        Assert.Equal(100, points[^1].P);
        Assert.Equal(1000, points[^1].Ms, 0);
        Assert.True(points.Zip(points.Skip(1)).All(x => x.First.P <= x.Second.P && x.First.Ms <= x.Second.Ms), "percentiles and values only grow");

        Assert.Equal(2, root.GetProperty("errors").GetProperty("40P01").GetInt64());
        Assert.Equal(1, root.GetProperty("errors").GetProperty("08006").GetInt64());
        Assert.Equal(3, root.GetProperty("errors_total").GetInt64());
    }

    [Fact]
    public void Table_has_a_row_per_step_and_the_errors()
    {
        var table = ReportFormatter.Table(KnownReport());
        var lines = table.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(lines, l => l.Contains("│ id ") && l.Contains("tot_ops/s") && l.Contains("p99(ms)"));
        var cycle = Assert.Single(lines, l => l.Contains("__cycle__"));
        Assert.Contains("1,000", cycle);
        Assert.Contains("1,024", cycle);
        Assert.Contains("500.", cycle);
        Assert.Single(lines, l => l.Contains("│ price "));
        Assert.Contains("errors: 08006=1, 40P01=2 (total 3)", table);
        // Every box line is as wide as the others.
        Assert.Single(lines.Where(l => l[0] is '┌' or '│' or '├' or '└').Select(l => l.Length).Distinct());
    }

    [Fact]
    public void Idle_json_shape()
    {
        using var doc = JsonDocument.Parse(ReportFormatter.IdleJson(10000, 9998, 3.5, 2, new Dictionary<string, long> { ["53300"] = 2 }, 10));
        var root = doc.RootElement;
        Assert.Equal(10000, root.GetProperty("connections").GetInt32());
        Assert.Equal(3.5, root.GetProperty("open_seconds").GetDouble());
        Assert.Equal(2, root.GetProperty("failed").GetInt32());
        Assert.Equal(2, root.GetProperty("errors").GetProperty("53300").GetInt64());
    }
}
