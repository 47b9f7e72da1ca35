using System.Globalization;

namespace Pooler.Workload;

/// <summary>A bad command line: the message says which argument and why (exit code 2).</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>Options of <c>init</c>.</summary>
public sealed record InitOptions(string Uri, int Flights, bool Cockroach);

/// <summary>Options of <c>run</c>.</summary>
public sealed record RunOptions
{
    public required string Uri { get; init; }
    /// <summary>Total connections over all workers.</summary>
    public int Connections { get; init; } = 256;
    public int Workers { get; init; } = 1;
    /// <summary>Cycles per worker (null when the run is bounded by <see cref="Duration"/>).</summary>
    public long? Iterations { get; init; }
    /// <summary>Run length (null when the run is bounded by <see cref="Iterations"/>).</summary>
    public TimeSpan? Duration { get; init; }
    public double ScheduleFreq { get; init; } = 10;
    public double StatusFreq { get; init; } = 90;
    public double InventoryFreq { get; init; } = 75;
    public double PriceFreq { get; init; } = 25;
    public int BatchSize { get; init; } = 64;
    /// <summary>Mean pause before each cycle in milliseconds (the actual pause is uniform in 0.75..1.25 of it).</summary>
    public int DelayMs { get; init; } = 100;
    public bool Prepare { get; init; } = true;
    public string Name { get; init; } = "direct";
    public string? JsonFile { get; init; }
    /// <summary>Interval of the progress line on stderr; zero = none.</summary>
    public TimeSpan Progress { get; init; } = TimeSpan.FromSeconds(5);
    public bool Cockroach { get; init; }

    /// <summary>Connections of worker <paramref name="worker"/> (the remainder goes to the first workers).</summary>
    public int ConnectionsOf(int worker) => Split(Connections, Workers, worker);

    /// <summary>Cycles of loop <paramref name="loop"/> among <paramref name="loops"/> of one worker (iterations mode).</summary>
    public long IterationsOf(int loop, int loops) =>
        Iterations is { } n ? n / loops + (loop < n % loops ? 1 : 0) : long.MaxValue;

    private static int Split(int total, int parts, int index) => total / parts + (index < total % parts ? 1 : 0);
}

/// <summary>Options of <c>idle</c>.</summary>
public sealed record IdleOptions(string Uri, int Connections, TimeSpan Hold, int Parallel, string? JsonFile, bool HoldUntilStdinCloses);

/// <summary>
/// Hand-written parser for the three commands. Options take <c>--name value</c> or <c>--name=value</c>;
/// every mistake throws <see cref="UsageException"/> naming the argument.
/// </summary>
public static class ArgParser
{
    public const string Usage = """
        usage:
          Pooler.Workload init --uri URI [--flights 50000] [--cockroach]
          Pooler.Workload run  --uri URI [--connections 256] [--workers 1] [--iterations N | --duration 60s]
                               [--schedule-freq 10] [--status-freq 90] [--inventory-freq 75] [--price-freq 25]
                               [--batch-size 64] [--delay 100] [--no-prepare] [--name direct] [--json FILE]
                               [--progress 5s] [--cockroach]
          Pooler.Workload idle --uri URI --connections N [--hold 10s | --hold-until-stdin-closes] [--parallel 64] [--json FILE]
        URI: postgresql://user:password@host:port/db?sslmode=prefer (or an Npgsql connection string)
        durations: 500ms, 10s, 5m, 1h (a bare number is seconds)
        """;

    private static readonly HashSet<string> InitValues = ["--uri", "--flights"];
    private static readonly HashSet<string> InitFlags = ["--cockroach"];
    private static readonly HashSet<string> RunValues =
    [
        "--uri", "--connections", "--workers", "--iterations", "--duration", "--schedule-freq", "--status-freq",
        "--inventory-freq", "--price-freq", "--batch-size", "--delay", "--name", "--json", "--progress",
    ];
    private static readonly HashSet<string> RunFlags = ["--no-prepare", "--cockroach"];
    private static readonly HashSet<string> IdleValues = ["--uri", "--connections", "--hold", "--parallel", "--json"];
    private static readonly HashSet<string> IdleFlags = ["--hold-until-stdin-closes"];

    /// <summary>Splits the arguments after the command into options with values and flags.</summary>
    internal static (Dictionary<string, string> Values, HashSet<string> Flags) Split(
        string command, IReadOnlyList<string> args, HashSet<string> valueOptions, HashSet<string> flagOptions)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        var flags = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
                throw new UsageException($"{command}: unexpected argument '{arg}'");
            string name = arg;
            string? value = null;
            var eq = arg.IndexOf('=');
            if (eq > 0)
            {
                name = arg[..eq];
                value = arg[(eq + 1)..];
            }
            if (flagOptions.Contains(name))
            {
                if (value != null) throw new UsageException($"{command}: {name} takes no value");
                flags.Add(name);
            }
            else if (valueOptions.Contains(name))
            {
                if (value == null)
                {
                    if (i + 1 >= args.Count) throw new UsageException($"{command}: {name} needs a value");
                    value = args[++i];
                }
                if (!values.TryAdd(name, value)) throw new UsageException($"{command}: {name} given twice");
            }
            else
            {
                throw new UsageException($"{command}: unknown option '{name}'");
            }
        }
        return (values, flags);
    }

    public static InitOptions ParseInit(IReadOnlyList<string> args)
    {
        var (v, f) = Split("init", args, InitValues, InitFlags);
        return new InitOptions(RequiredUri(v), Int(v, "--flights", 50_000, min: 1), f.Contains("--cockroach"));
    }

    public static RunOptions ParseRun(IReadOnlyList<string> args)
    {
        var (v, f) = Split("run", args, RunValues, RunFlags);
        if (v.ContainsKey("--iterations") && v.ContainsKey("--duration"))
            throw new UsageException("run: give either --iterations or --duration, not both");
        var o = new RunOptions
        {
            Uri = RequiredUri(v),
            Connections = Int(v, "--connections", 256, min: 1),
            Workers = Int(v, "--workers", 1, min: 1),
            Iterations = v.ContainsKey("--iterations") ? Long(v, "--iterations", 0, min: 1) : null,
            Duration = v.ContainsKey("--iterations") ? null : Duration(v, "--duration", TimeSpan.FromSeconds(60), allowZero: false),
            ScheduleFreq = Percent(v, "--schedule-freq", 10),
            StatusFreq = Percent(v, "--status-freq", 90),
            InventoryFreq = Percent(v, "--inventory-freq", 75),
            PriceFreq = Percent(v, "--price-freq", 25),
            BatchSize = Int(v, "--batch-size", 64, min: 1),
            DelayMs = Int(v, "--delay", 100, min: 0),
            Prepare = !f.Contains("--no-prepare"),
            Name = v.TryGetValue("--name", out var name) ? NonEmpty("--name", name) : "direct",
            JsonFile = v.TryGetValue("--json", out var json) ? NonEmpty("--json", json) : null,
            Progress = Duration(v, "--progress", TimeSpan.FromSeconds(5), allowZero: true),
            Cockroach = f.Contains("--cockroach"),
        };
        if (o.Workers > o.Connections)
            throw new UsageException($"run: --workers ({o.Workers}) is more than --connections ({o.Connections}); every worker needs a connection");
        return o;
    }

    public static IdleOptions ParseIdle(IReadOnlyList<string> args)
    {
        var (v, f) = Split("idle", args, IdleValues, IdleFlags);
        if (!v.ContainsKey("--connections")) throw new UsageException("idle: --connections is required");
        var untilStdin = f.Contains("--hold-until-stdin-closes");
        if (untilStdin && v.ContainsKey("--hold"))
            throw new UsageException("idle: give either --hold or --hold-until-stdin-closes, not both");
        return new IdleOptions(RequiredUri(v), Int(v, "--connections", 0, min: 1),
            Duration(v, "--hold", TimeSpan.FromSeconds(10), allowZero: true), Int(v, "--parallel", 64, min: 1),
            v.TryGetValue("--json", out var json) ? NonEmpty("--json", json) : null, untilStdin);
    }

    private static string RequiredUri(Dictionary<string, string> v)
    {
        if (!v.TryGetValue("--uri", out var uri) || string.IsNullOrWhiteSpace(uri))
            throw new UsageException("--uri is required");
        try
        {
            ConnectionStrings.ToBuilder(uri);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or UriFormatException or KeyNotFoundException)
        {
            throw new UsageException($"--uri: {e.Message}");
        }
        return uri;
    }

    private static string NonEmpty(string name, string value) =>
        string.IsNullOrWhiteSpace(value) ? throw new UsageException($"{name}: must not be empty") : value;

    private static int Int(Dictionary<string, string> v, string name, int fallback, int min)
    {
        if (!v.TryGetValue(name, out var s)) return fallback;
        if (!int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < min)
            throw new UsageException($"{name}: expected an integer >= {min}, got '{s}'");
        return n;
    }

    private static long Long(Dictionary<string, string> v, string name, long fallback, long min)
    {
        if (!v.TryGetValue(name, out var s)) return fallback;
        if (!long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < min)
            throw new UsageException($"{name}: expected an integer >= {min}, got '{s}'");
        return n;
    }

    private static double Percent(Dictionary<string, string> v, string name, double fallback)
    {
        if (!v.TryGetValue(name, out var s)) return fallback;
        if (!double.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var n) || n is < 0 or > 100)
            throw new UsageException($"{name}: expected a percentage 0..100, got '{s}'");
        return n;
    }

    private static TimeSpan Duration(Dictionary<string, string> v, string name, TimeSpan fallback, bool allowZero)
    {
        if (!v.TryGetValue(name, out var s)) return fallback;
        if (!TryParseDuration(s, out var d) || (!allowZero && d == TimeSpan.Zero))
            throw new UsageException($"{name}: expected a duration like 500ms, 10s, 5m or 1h{(allowZero ? "" : " (more than zero)")}, got '{s}'");
        return d;
    }

    /// <summary>Parses 500ms, 10s, 1.5s, 5m, 1h or a bare number of seconds.</summary>
    public static bool TryParseDuration(string s, out TimeSpan value)
    {
        value = default;
        s = s.Trim();
        var (number, scale) = s switch
        {
            _ when s.EndsWith("ms", StringComparison.Ordinal) => (s[..^2], 0.001),
            _ when s.EndsWith('s') => (s[..^1], 1.0),
            _ when s.EndsWith('m') => (s[..^1], 60.0),
            _ when s.EndsWith('h') => (s[..^1], 3600.0),
            _ => (s, 1.0),
        };
        if (!double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var n) || n < 0 || n * scale > 1e7)
            return false;
        value = TimeSpan.FromSeconds(n * scale);
        return true;
    }
}
