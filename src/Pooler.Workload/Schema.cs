using Npgsql;

namespace Pooler.Workload;

/// <summary>
/// The flight schedules schema and its fill. Plain PostgreSQL SQL that CockroachDB accepts too; the rows are
/// made on the server with <c>generate_series</c> (no data crosses the network), flights in chunks of
/// <see cref="Chunk"/> rows per statement.
/// </summary>
public static class Schema
{
    public const int Airlines = 20;
    public const int Airports = 100;
    public const int Planes = 500;
    public const int Chunk = 10_000;

    public static readonly string[] Tables =
        ["flight_prices", "seat_inventory", "flight_status", "flights", "planes", "airports", "airlines"];

    public static IReadOnlyList<string> Ddl { get; } =
    [
        "DROP TABLE IF EXISTS " + string.Join(", ", Tables) + " CASCADE",
        """
        CREATE TABLE airlines (
            id INT PRIMARY KEY,
            code TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE airports (
            id INT PRIMARY KEY,
            code TEXT NOT NULL UNIQUE,
            city TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE planes (
            id INT PRIMARY KEY,
            airline_id INT NOT NULL REFERENCES airlines (id),
            model TEXT NOT NULL,
            seats INT NOT NULL
        )
        """,
        """
        CREATE TABLE flights (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            airline_id INT NOT NULL REFERENCES airlines (id),
            plane_id INT NOT NULL REFERENCES planes (id),
            departure_airport_id INT NOT NULL REFERENCES airports (id),
            arrival_airport_id INT NOT NULL REFERENCES airports (id),
            scheduled_departure TIMESTAMPTZ NOT NULL,
            scheduled_arrival TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE TABLE flight_status (
            flight_id UUID PRIMARY KEY REFERENCES flights (id) ON DELETE CASCADE,
            status TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE TABLE seat_inventory (
            flight_id UUID PRIMARY KEY REFERENCES flights (id) ON DELETE CASCADE,
            seats_available INT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE TABLE flight_prices (
            flight_id UUID PRIMARY KEY REFERENCES flights (id) ON DELETE CASCADE,
            price_usd NUMERIC(10, 2) NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """,
    ];

    public static IReadOnlyList<string> Dimensions { get; } =
    [
        $"INSERT INTO airlines (id, code, name) SELECT g, 'A' || g, 'Airline ' || g FROM generate_series(1, {Airlines}) AS g",
        $"INSERT INTO airports (id, code, city) SELECT g, 'P' || g, 'City ' || g FROM generate_series(1, {Airports}) AS g",
        $"INSERT INTO planes (id, airline_id, model, seats) SELECT g, 1 + g % {Airlines}, 'Model ' || (g % 7), 100 + (g % 5) * 50 " +
        $"FROM generate_series(1, {Planes}) AS g",
    ];

    /// <summary>Flights <paramref name="from"/>..<paramref name="to"/>: departures spread over 30 days, 45 min to 10 h long, never to the departure airport.</summary>
    public static string Flights(long from, long to) =>
        "INSERT INTO flights (airline_id, plane_id, departure_airport_id, arrival_airport_id, scheduled_departure, scheduled_arrival) " +
        "SELECT 1 + g % " + Airlines + ", 1 + (g * 7) % " + Planes + ", 1 + g % " + Airports + ", " +
        "1 + (g + 1 + (g / " + Airports + ") % " + (Airports - 1) + ") % " + Airports + ", " +
        "t, t + (45 + (g * 37) % 555) * interval '1 minute' " +
        "FROM (SELECT g, date_trunc('hour', now()) + (g % 720) * interval '1 hour' + ((g * 13) % 60) * interval '1 minute' AS t " +
        $"FROM generate_series({from}, {to}) AS g) AS s";

    public static IReadOnlyList<string> HotTables { get; } =
    [
        "INSERT INTO flight_status (flight_id, status) SELECT id, 'on_time' FROM flights",
        "INSERT INTO seat_inventory (flight_id, seats_available) SELECT id, 50 + CAST(floor(random() * 250) AS INT) FROM flights",
        "INSERT INTO flight_prices (flight_id, price_usd) SELECT id, round(CAST(50 + random() * 950 AS NUMERIC), 2) FROM flights",
    ];

    /// <summary>Drops, creates and fills the schema, then ANALYZE. Returns the row count per table.</summary>
    public static async Task<IReadOnlyDictionary<string, long>> InitAsync(NpgsqlDataSource db, int flights, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        async Task<long> Exec(string sql)
        {
            await using var cmd = new NpgsqlCommand(sql, conn) { CommandTimeout = 0 };
            return await cmd.ExecuteNonQueryAsync(ct);
        }
        foreach (var sql in Ddl) await Exec(sql);
        foreach (var sql in Dimensions) await Exec(sql);
        for (long from = 1; from <= flights; from += Chunk)
            await Exec(Flights(from, Math.Min(flights, from + Chunk - 1)));
        foreach (var sql in HotTables) await Exec(sql);
        foreach (var table in Tables) await Exec($"ANALYZE {table}");

        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var table in Tables.Reverse())
        {
            await using var cmd = new NpgsqlCommand($"SELECT count(*) FROM {table}", conn);
            counts[table] = (long)(await cmd.ExecuteScalarAsync(ct))!;
        }
        return counts;
    }

    /// <summary>Number of flights (the id range the steps pick from).</summary>
    public static async Task<long> CountFlightsAsync(NpgsqlDataSource db, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand("SELECT count(*) FROM flights", conn);
        return (long)(await cmd.ExecuteScalarAsync(ct))!;
    }
}
