using System.Net.Sockets;
using Pooler.Actors.Config;

namespace Pooler.Actors.Ops;

/// <summary>
/// Whether a backend answers: a TCP connect to each configured database's host and port, at most every
/// two seconds (so /health probes do not hammer the database).
/// </summary>
public sealed class BackendProbe
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private (DateTime At, bool Ok) _last = (DateTime.MinValue, false);

    public async Task<bool> ReachableAsync(PoolerSettings settings)
    {
        if (DateTime.UtcNow - _last.At < TimeSpan.FromSeconds(2)) return _last.Ok;
        await _gate.WaitAsync();
        try
        {
            if (DateTime.UtcNow - _last.At < TimeSpan.FromSeconds(2)) return _last.Ok;
            var targets = settings.Databases.Values.Select(d => (d.Host, d.Port)).Distinct().ToList();
            var ok = false;
            foreach (var (host, port) in targets)
            {
                using var socket = new TcpClient();
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                try
                {
                    await socket.ConnectAsync(host, port, cts.Token);
                    ok = true;
                    break;
                }
                catch (Exception e) when (e is SocketException or OperationCanceledException) { }
            }
            _last = (DateTime.UtcNow, ok);
            return ok;
        }
        finally { _gate.Release(); }
    }
}
