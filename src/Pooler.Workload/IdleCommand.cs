using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Npgsql;

namespace Pooler.Workload;

/// <summary>
/// <c>idle</c>: opens N unpooled connections (each completes its login and gets ReadyForQuery), prints
/// <c>HOLDING</c> when all are open, holds them without a query, then closes them.
/// </summary>
public static class IdleCommand
{
    public static async Task<int> RunAsync(IdleOptions o, TextWriter stdout, TextWriter stderr, TextReader? stdin, CancellationToken ct)
    {
        var b = ConnectionStrings.ToBuilder(o.Uri);
        b.Pooling = false;
        b.MaxAutoPrepare = 0;
        if (string.IsNullOrEmpty(b.ApplicationName)) b.ApplicationName = "workload-idle";
        var cs = b.ConnectionString;

        var conns = new NpgsqlConnection?[o.Connections];
        var errors = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);
        string? lastError = null;
        var watch = Stopwatch.StartNew();
        try
        {
            using (var gate = new SemaphoreSlim(o.Parallel))
            {
                await Task.WhenAll(Enumerable.Range(0, o.Connections).Select(async i =>
                {
                    await gate.WaitAsync(ct);
                    var c = new NpgsqlConnection(cs);
                    try
                    {
                        await c.OpenAsync(ct);
                        conns[i] = c;
                    }
                    catch (Exception e) when (e is not OperationCanceledException)
                    {
                        lastError = e.Message;
                        errors.AddOrUpdate(WorkloadLoop.ErrorCode(e), 1, (_, n) => n + 1);
                        await c.DisposeAsync();
                    }
                    finally
                    {
                        gate.Release();
                    }
                }));
            }
            var openSeconds = watch.Elapsed.TotalSeconds;
            var opened = conns.Count(c => c != null);
            var failed = o.Connections - opened;
            await stdout.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"idle: {opened} open in {openSeconds:0.00} s, {failed} failed"));
            if (failed > 0)
                await stderr.WriteLineAsync($"idle: {ReportFormatter.ErrorLine(errors)}; last: {lastError}");
            await stdout.WriteLineAsync("HOLDING");
            await stdout.FlushAsync(CancellationToken.None);

            var held = Stopwatch.StartNew();
            try
            {
                if (o.HoldUntilStdinCloses)
                {
                    var reader = stdin ?? TextReader.Null;
                    var buffer = new char[256];
                    while (await reader.ReadAsync(buffer.AsMemory(), ct) > 0) { }
                }
                else if (o.Hold > TimeSpan.Zero)
                {
                    await Task.Delay(o.Hold, ct);
                }
            }
            catch (OperationCanceledException)
            {
                // Ctrl-C ends the holding early; the report still follows.
            }
            var heldSeconds = held.Elapsed.TotalSeconds;

            var sorted = new SortedDictionary<string, long>(errors, StringComparer.Ordinal);
            await stdout.WriteLineAsync(ReportFormatter.IdleJson(o.Connections, opened, openSeconds, failed, sorted, heldSeconds, indented: false).TrimEnd());
            await stdout.FlushAsync(CancellationToken.None);
            if (o.JsonFile != null)
            {
                var dir = Path.GetDirectoryName(Path.GetFullPath(o.JsonFile));
                if (dir != null) Directory.CreateDirectory(dir);
                await File.WriteAllTextAsync(o.JsonFile, ReportFormatter.IdleJson(o.Connections, opened, openSeconds, failed, sorted, heldSeconds), CancellationToken.None);
            }
            if (opened == 0)
            {
                await stderr.WriteLineAsync($"idle: cannot connect: {lastError}");
                return 1;
            }
            return 0;
        }
        finally
        {
            using var gate = new SemaphoreSlim(o.Parallel);
            await Task.WhenAll(conns.Where(c => c != null).Select(async c =>
            {
                await gate.WaitAsync(CancellationToken.None);
                try { await c!.DisposeAsync(); }
                catch (Exception) { /* closing is best effort */ }
                finally { gate.Release(); }
            }));
        }
    }
}
