using NpgsqlTypes;

namespace Pooler.Workload;

/// <summary>The four steps of a cycle, in the order they are taken.</summary>
public enum Step
{
    Schedule,
    Status,
    Inventory,
    Price,
}

public static class Steps
{
    public static readonly Step[] InOrder = [Step.Schedule, Step.Status, Step.Inventory, Step.Price];

    /// <summary>Name of the whole cycle in reports.</summary>
    public const string Cycle = "__cycle__";

    public static string Name(Step step) => step switch
    {
        Step.Schedule => "schedule",
        Step.Status => "status",
        Step.Inventory => "inventory",
        Step.Price => "price",
        _ => throw new ArgumentOutOfRangeException(nameof(step)),
    };

    public static readonly string[] StatusValues = ["on_time", "delayed", "cancelled"];
}

/// <summary>
/// The random decisions of one loop: which steps a cycle takes, the pause before it, the batch offset and
/// each step's value. All of it from one <see cref="Random"/> so a seeded one gives a repeatable sequence.
/// </summary>
public sealed class StepPlanner(RunOptions options, Random random)
{
    /// <summary>Probability of <paramref name="step"/> in percent.</summary>
    public double Frequency(Step step) => step switch
    {
        Step.Schedule => options.ScheduleFreq,
        Step.Status => options.StatusFreq,
        Step.Inventory => options.InventoryFreq,
        Step.Price => options.PriceFreq,
        _ => throw new ArgumentOutOfRangeException(nameof(step)),
    };

    /// <summary>True when this cycle takes <paramref name="step"/> (one draw per step, each cycle anew).</summary>
    public bool Takes(Step step) => random.NextDouble() * 100 < Frequency(step);

    /// <summary>The pause before a cycle: delay x uniform(0.75, 1.25).</summary>
    public TimeSpan Pause() => TimeSpan.FromMilliseconds(options.DelayMs * (0.75 + random.NextDouble() * 0.5));

    /// <summary>Where the batch starts among <paramref name="flights"/> ids ordered by id.</summary>
    public long Offset(long flights) => flights <= options.BatchSize ? 0 : random.NextInt64(flights - options.BatchSize + 1);

    /// <summary>Minutes a schedule step moves both times: +-5..60.</summary>
    public int ShiftMinutes()
    {
        var minutes = random.Next(5, 61);
        return random.Next(2) == 0 ? -minutes : minutes;
    }

    public string Status() => Steps.StatusValues[random.Next(Steps.StatusValues.Length)];

    /// <summary>Seat factor 1 + (random - 0.25) / 10, i.e. 0.975..1.075.</summary>
    public decimal InventoryFactor() => Math.Round(1m + ((decimal)random.NextDouble() - 0.25m) / 10m, 6);

    /// <summary>Price factor 1 + (random - 0.5) / 10, i.e. 0.95..1.05.</summary>
    public decimal PriceFactor() => Math.Round(1m + ((decimal)random.NextDouble() - 0.5m) / 10m, 6);

    /// <summary>The value parameter of <paramref name="step"/> ($1 of its statement).</summary>
    public object Value(Step step) => step switch
    {
        Step.Schedule => ShiftMinutes(),
        Step.Status => Status(),
        Step.Inventory => InventoryFactor(),
        Step.Price => PriceFactor(),
        _ => throw new ArgumentOutOfRangeException(nameof(step)),
    };
}

/// <summary>
/// The SQL of each step. PostgreSQL: one autocommit UPDATE whose ids come from a subquery
/// (<c>ORDER BY id OFFSET $2 LIMIT $3</c>). CockroachDB (<c>--cockroach</c>): the ids are picked first with a
/// follower read (<c>AS OF SYSTEM TIME follower_read_timestamp()</c>, which CockroachDB allows only on a
/// statement of its own), then one autocommit UPDATE takes them as <c>= ANY($2)</c>.
/// </summary>
public static class StepSql
{
    public const string PickIds = "SELECT id FROM flights ORDER BY id OFFSET $1 LIMIT $2";
    public const string PickIdsFollowerRead =
        "SELECT id FROM flights AS OF SYSTEM TIME follower_read_timestamp() ORDER BY id OFFSET $1 LIMIT $2";

    private const string Subquery = "(SELECT id FROM flights ORDER BY id OFFSET $2 LIMIT $3)";

    /// <summary>SET clause and target of a step; <c>$1</c> is the step's value.</summary>
    private static (string Table, string Key, string Set) Parts(Step step) => step switch
    {
        Step.Schedule => ("flights", "id",
            "scheduled_departure = scheduled_departure + $1 * interval '1 minute', " +
            "scheduled_arrival = scheduled_arrival + $1 * interval '1 minute', updated_at = now()"),
        Step.Status => ("flight_status", "flight_id", "status = $1, updated_at = now()"),
        Step.Inventory => ("seat_inventory", "flight_id",
            "seats_available = LEAST(1000, GREATEST(0, CAST(round(seats_available * $1) AS INT))), updated_at = now()"),
        Step.Price => ("flight_prices", "flight_id",
            "price_usd = LEAST(99999.99, GREATEST(1.00, round(price_usd * $1, 2))), updated_at = now()"),
        _ => throw new ArgumentOutOfRangeException(nameof(step)),
    };

    /// <summary>The UPDATE of <paramref name="step"/>: with $2 offset and $3 limit (PostgreSQL), or $2 uuid[] (CockroachDB).</summary>
    public static string Update(Step step, bool cockroach)
    {
        var (table, key, set) = Parts(step);
        return cockroach
            ? $"UPDATE {table} SET {set} WHERE {key} = ANY($2)"
            : $"UPDATE {table} SET {set} WHERE {key} IN {Subquery}";
    }

    /// <summary>Npgsql type of the step's value parameter ($1).</summary>
    public static NpgsqlDbType ValueType(Step step) => step switch
    {
        Step.Schedule => NpgsqlDbType.Integer,
        Step.Status => NpgsqlDbType.Text,
        Step.Inventory or Step.Price => NpgsqlDbType.Numeric,
        _ => throw new ArgumentOutOfRangeException(nameof(step)),
    };
}
