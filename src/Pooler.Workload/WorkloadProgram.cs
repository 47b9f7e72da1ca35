using System.Diagnostics;
using System.Globalization;
using Npgsql;

namespace Pooler.Workload;

/// <summary>
/// Entry of the workload tool, callable in-process: returns the exit code (0 done, even with SQL errors;
/// 1 cannot connect; 2 bad arguments).
/// </summary>
public static class WorkloadProgram
{
    public const int Ok = 0;
    public const int CannotConnect = 1;
    public const int BadArguments = 2;

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct,
        TextReader? stdin = null)
    {
        if (args.Length == 0)
            return await BadAsync(stderr, "missing command (init, run or idle)");
        if (args[0] is "-h" or "--help" or "help")
        {
            await stdout.WriteLineAsync(ArgParser.Usage);
            return Ok;
        }
        var rest = args.Skip(1).ToList();
        try
        {
            switch (args[0])
            {
                case "init":
                    return await InitAsync(ArgParser.ParseInit(rest), stdout, stderr, ct);
                case "run":
                    return await RunCommand.RunAsync(ArgParser.ParseRun(rest), stdout, stderr, ct);
                case "idle":
                    return await IdleCommand.RunAsync(ArgParser.ParseIdle(rest), stdout, stderr, stdin, ct);
                default:
                    return await BadAsync(stderr, $"unknown command '{args[0]}' (init, run or idle)");
            }
        }
        catch (UsageException e)
        {
            return await BadAsync(stderr, e.Message);
        }
        catch (NpgsqlException e) when (e is not PostgresException)
        {
            await stderr.WriteLineAsync($"{args[0]}: cannot connect: {e.Message}");
            return CannotConnect;
        }
    }

    private static async Task<int> BadAsync(TextWriter stderr, string message)
    {
        await stderr.WriteLineAsync($"error: {message}");
        await stderr.WriteLineAsync(ArgParser.Usage);
        return BadArguments;
    }

    private static async Task<int> InitAsync(InitOptions o, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var b = ConnectionStrings.ToBuilder(o.Uri);
        b.Pooling = false;
        b.MaxAutoPrepare = 0;
        if (string.IsNullOrEmpty(b.ApplicationName)) b.ApplicationName = "workload-init";
        await using var db = NpgsqlDataSource.Create(b);
        var watch = Stopwatch.StartNew();
        IReadOnlyDictionary<string, long> counts;
        try
        {
            counts = await Schema.InitAsync(db, o.Flights, ct);
        }
        catch (PostgresException e)
        {
            await stderr.WriteLineAsync($"init: failed: {e.SqlState}: {e.MessageText}");
            return CannotConnect;
        }
        await stdout.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
            $"init: {string.Join(" ", counts.Select(kv => $"{kv.Key}={kv.Value}"))} in {watch.Elapsed.TotalSeconds:0.00} s"));
        return Ok;
    }
}
