using System.Data;
using System.Diagnostics;
using System.Globalization;
using Npgsql;

namespace Pooler.Workload;

/// <summary>
/// <c>run</c>: <see cref="RunOptions.Workers"/> data sources, each with its share of the connections; one
/// async loop per connection, holding it for the whole run.
/// </summary>
public static class RunCommand
{
    /// <summary>How many connections are opened at the same time before the clock starts.</summary>
    public const int OpenParallelism = 64;

    /// <summary>Npgsql settings of one worker's data source.</summary>
    public static NpgsqlConnectionStringBuilder WorkerSettings(RunOptions o, int connections)
    {
        var b = ConnectionStrings.ToBuilder(o.Uri);
        b.Pooling = true;
        b.MinPoolSize = 0;
        b.MaxPoolSize = Math.Max(1, connections);
        if (string.IsNullOrEmpty(b.ApplicationName)) b.ApplicationName = "workload-" + o.Name;
        if (!o.Prepare)
        {
            // Transaction pooling: no named statements may outlive a statement, and no DISCARD ALL on close.
            b.MaxAutoPrepare = 0;
            b.NoResetOnClose = true;
        }
        return b;
    }

    public static async Task<int> RunAsync(RunOptions o, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var stats = new RunStats();
        var sources = new List<NpgsqlDataSource>();
        var loops = new List<WorkloadLoop>();
        try
        {
            for (var w = 0; w < o.Workers; w++)
            {
                var n = o.ConnectionsOf(w);
                var source = NpgsqlDataSource.Create(WorkerSettings(o, n));
                sources.Add(source);
                for (var i = 0; i < n; i++)
                    loops.Add(new WorkloadLoop(source, o, stats, new StepPlanner(o, new Random(Random.Shared.Next())), o.IterationsOf(i, n)));
            }

            // Open every connection before the clock starts.
            var openWatch = Stopwatch.StartNew();
            using (var gate = new SemaphoreSlim(OpenParallelism))
            {
                await Task.WhenAll(loops.Select(async loop =>
                {
                    await gate.WaitAsync(ct);
                    try { await loop.TryOpenAsync(ct); }
                    finally { gate.Release(); }
                }));
            }
            var openSeconds = openWatch.Elapsed.TotalSeconds;
            var opened = loops.Count(l => l.IsOpen);
            if (opened == 0)
            {
                await stderr.WriteLineAsync($"run: cannot connect: {loops[0].LastError}");
                return 1;
            }
            if (opened < loops.Count)
                await stderr.WriteLineAsync($"run: {loops.Count - opened} of {loops.Count} connections failed to open ({ReportFormatter.ErrorLine(stats.Errors)}); they retry each cycle");
            await stderr.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"run {o.Name}: {opened} connections open in {openSeconds:0.00} s"));

            long flights;
            try
            {
                flights = await loops.First(l => l.IsOpen).CountFlightsAsync(ct);
            }
            catch (PostgresException e)
            {
                await stderr.WriteLineAsync($"run: cannot read flights ({e.SqlState}: {e.MessageText}); run 'init' first");
                return 1;
            }
            if (flights == 0)
            {
                await stderr.WriteLineAsync("run: the flights table is empty; run 'init' first");
                return 1;
            }
            foreach (var loop in loops) loop.Flights = flights;

            using var runCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            if (o.Duration is { } d) runCts.CancelAfter(d);
            using var progressCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var clock = Stopwatch.StartNew();
            var progress = o.Progress > TimeSpan.Zero
                ? ProgressAsync(o, stats, clock, stderr, progressCts.Token)
                : Task.CompletedTask;
            await Task.WhenAll(loops.Select(l => Task.Run(() => l.RunAsync(runCts.Token), CancellationToken.None)));
            var elapsed = clock.Elapsed.TotalSeconds;
            progressCts.Cancel();
            await progress;

            var report = RunReport.From(o, stats, openSeconds, elapsed);
            await stdout.WriteAsync(ReportFormatter.Table(report));
            await stdout.FlushAsync(CancellationToken.None);
            if (o.JsonFile != null)
            {
                var dir = Path.GetDirectoryName(Path.GetFullPath(o.JsonFile));
                if (dir != null) Directory.CreateDirectory(dir);
                await File.WriteAllTextAsync(o.JsonFile, ReportFormatter.Json(report), CancellationToken.None);
            }
            return 0;
        }
        finally
        {
            foreach (var loop in loops) await loop.DisposeAsync();
            foreach (var source in sources) await source.DisposeAsync();
        }
    }

    private static async Task ProgressAsync(RunOptions o, RunStats stats, Stopwatch clock, TextWriter stderr, CancellationToken ct)
    {
        long lastCycles = 0;
        var lastTime = TimeSpan.Zero;
        while (!ct.IsCancellationRequested)
        {
            try { await Task.Delay(o.Progress, ct); }
            catch (OperationCanceledException) { return; }
            var now = clock.Elapsed;
            var cycles = stats.Cycles;
            var rate = (cycles - lastCycles) / Math.Max(1e-9, (now - lastTime).TotalSeconds);
            var of = o.Iterations is { } n ? $"/{n * o.Workers}" : "";
            await stderr.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"[{o.Name} {now.TotalSeconds,7:0.0}s] cycles {cycles}{of}  {rate:0.0} cycles/s  errors {stats.ErrorsTotal}"));
            lastCycles = cycles;
            lastTime = now;
        }
    }
}

/// <summary>One connection's loop: pause, then the four steps each with its probability, timed.</summary>
internal sealed class WorkloadLoop(NpgsqlDataSource source, RunOptions o, RunStats stats, StepPlanner planner, long cycles)
    : IAsyncDisposable
{
    private NpgsqlConnection? _conn;
    private readonly Dictionary<Step, NpgsqlCommand> _updates = new();
    private NpgsqlCommand? _pick;

    public long Flights { get; set; }
    public bool IsOpen => _conn is { State: ConnectionState.Open };
    public string? LastError { get; private set; }

    /// <summary>Opens the connection and makes (and with prepare, prepares) its statements; a failure is counted, not thrown.</summary>
    public async Task<bool> TryOpenAsync(CancellationToken ct)
    {
        await CloseAsync();
        try
        {
            _conn = await source.OpenConnectionAsync(ct);
            foreach (var step in Steps.InOrder)
            {
                var cmd = new NpgsqlCommand(StepSql.Update(step, o.Cockroach), _conn);
                cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = StepSql.ValueType(step) });
                if (o.Cockroach)
                {
                    cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Array | NpgsqlTypes.NpgsqlDbType.Uuid });
                }
                else
                {
                    cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Bigint });
                    cmd.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Integer });
                }
                _updates[step] = cmd;
            }
            if (o.Cockroach)
            {
                _pick = new NpgsqlCommand(StepSql.PickIdsFollowerRead, _conn);
                _pick.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Bigint });
                _pick.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Integer });
            }
            if (o.Prepare)
            {
                foreach (var cmd in _updates.Values) await cmd.PrepareAsync(ct);
                if (_pick != null) await _pick.PrepareAsync(ct);
            }
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LastError = e.Message;
            stats.RecordError(ErrorCode(e));
            await CloseAsync();
            return false;
        }
    }

    public async Task<long> CountFlightsAsync(CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("SELECT count(*) FROM flights", _conn);
        return (long)(await cmd.ExecuteScalarAsync(ct))!;
    }

    /// <summary>Runs the cycles until they are done or <paramref name="stop"/> fires (end of --duration, Ctrl-C).</summary>
    public async Task RunAsync(CancellationToken stop)
    {
        for (long i = 0; i < cycles && !stop.IsCancellationRequested; i++)
        {
            try
            {
                await Task.Delay(planner.Pause(), stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            if (!IsOpen && !await TryOpenAsync(CancellationToken.None)) continue;

            var cycleStart = Stopwatch.GetTimestamp();
            var broken = false;
            foreach (var step in Steps.InOrder)
            {
                if (!planner.Takes(step)) continue;
                var value = planner.Value(step);
                var offset = planner.Offset(Flights);
                var start = Stopwatch.GetTimestamp();
                try
                {
                    await ExecuteAsync(step, value, offset);
                    stats.RecordStep(step, Micros(start));
                }
                catch (Exception e)
                {
                    LastError = e.Message;
                    stats.RecordError(ErrorCode(e));
                    if (e is not PostgresException || !IsOpen)
                    {
                        broken = true;
                        break;
                    }
                }
            }
            if (broken)
            {
                await CloseAsync();
                continue;
            }
            stats.RecordCycle(Micros(cycleStart));
        }
    }

    private async Task ExecuteAsync(Step step, object value, long offset)
    {
        var cmd = _updates[step];
        cmd.Parameters[0].Value = value;
        if (o.Cockroach)
        {
            _pick!.Parameters[0].Value = offset;
            _pick.Parameters[1].Value = o.BatchSize;
            var ids = new List<Guid>(o.BatchSize);
            await using (var reader = await _pick.ExecuteReaderAsync(CancellationToken.None))
            {
                while (await reader.ReadAsync(CancellationToken.None)) ids.Add(reader.GetGuid(0));
            }
            cmd.Parameters[1].Value = ids.ToArray();
        }
        else
        {
            cmd.Parameters[1].Value = offset;
            cmd.Parameters[2].Value = o.BatchSize;
        }
        await cmd.ExecuteNonQueryAsync(CancellationToken.None);
    }

    private static long Micros(long start) => Stopwatch.GetElapsedTime(start).Ticks / 10;

    /// <summary>
    /// SQLSTATE of a failure: the server's for a PostgresException; 57014 for a client-side timeout (Npgsql
    /// cancels the statement); otherwise 08006 (connection failure).
    /// </summary>
    public static string ErrorCode(Exception e) => e switch
    {
        PostgresException pe => pe.SqlState,
        NpgsqlException { InnerException: TimeoutException } => "57014",
        NpgsqlException { SqlState: { Length: 5 } s } => s,
        _ => "08006",
    };

    private async Task CloseAsync()
    {
        foreach (var cmd in _updates.Values) await cmd.DisposeAsync();
        _updates.Clear();
        if (_pick != null) await _pick.DisposeAsync();
        _pick = null;
        if (_conn != null)
        {
            try { await _conn.DisposeAsync(); }
            catch (Exception) { /* a broken connection may fail to close; it is gone either way */ }
        }
        _conn = null;
    }

    public async ValueTask DisposeAsync() => await CloseAsync();
}
