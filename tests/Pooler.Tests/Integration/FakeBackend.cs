using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Pooler.Tests.Integration;

/// <summary>
/// A stand-in for PostgreSQL on a loopback port that counts the connections the pooler makes to it:
/// <see cref="FakeBackendMode.Silent"/> accepts and never answers (a hung server);
/// <see cref="FakeBackendMode.RejectLogin"/> reads the startup packet and answers a FATAL error.
/// </summary>
public enum FakeBackendMode { Silent, RejectLogin }

public sealed class FakeBackend : IAsyncDisposable
{
    public const string RejectMessage = "fake backend refuses every login";
    public const string RejectSqlState = "28000";
    private const int MaxConnections = 500;

    private readonly TcpListener _listener;
    private readonly FakeBackendMode _mode;
    private readonly CancellationTokenSource _cts = new();
    private readonly List<TcpClient> _held = new();
    private readonly List<DateTime> _acceptedAt = new();
    private readonly Task _loop;

    private FakeBackend(FakeBackendMode mode)
    {
        _mode = mode;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _loop = Task.Run(AcceptLoop);
    }

    public static FakeBackend Start(FakeBackendMode mode) => new(mode);

    public int Port { get; }

    /// <summary>Connections accepted so far.</summary>
    public int Accepted { get { lock (_acceptedAt) return _acceptedAt.Count; } }

    /// <summary>When each connection was accepted (UTC).</summary>
    public IReadOnlyList<DateTime> AcceptedAt { get { lock (_acceptedAt) return _acceptedAt.ToArray(); } }

    private async Task AcceptLoop()
    {
        while (!_cts.IsCancellationRequested && Accepted < MaxConnections)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_cts.Token);
            }
            catch (Exception)
            {
                return;
            }
            lock (_acceptedAt) _acceptedAt.Add(DateTime.UtcNow);
            if (_mode == FakeBackendMode.Silent)
            {
                lock (_held) _held.Add(client);
                continue;
            }
            _ = Task.Run(() => RejectAsync(client));
        }
    }

    private async Task RejectAsync(TcpClient client)
    {
        using (client)
        {
            try
            {
                using var cts = CancellationTokenSource.CreateLinkedTokenSource(_cts.Token);
                cts.CancelAfter(TimeSpan.FromSeconds(5));
                var stream = client.GetStream();
                var buf = new byte[1024];
                var got = 0;
                // the startup packet: its length word, then that many bytes
                while (got < 4 || got < System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(buf))
                {
                    var n = await stream.ReadAsync(buf.AsMemory(got), cts.Token);
                    if (n == 0 || got + n >= buf.Length) break;
                    got += n;
                }
                var body = new List<byte> { (byte)'S' };
                body.AddRange(Encoding.UTF8.GetBytes("FATAL"));
                body.Add(0);
                body.Add((byte)'C');
                body.AddRange(Encoding.UTF8.GetBytes(RejectSqlState));
                body.Add(0);
                body.Add((byte)'M');
                body.AddRange(Encoding.UTF8.GetBytes(RejectMessage));
                body.Add(0);
                body.Add(0);
                await stream.WriteAsync(PgBytes.Message('E', body.ToArray()), cts.Token);
            }
            catch (Exception)
            {
                // the pooler may have given up first
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _cts.CancelAsync();
        _listener.Stop();
        try { await _loop.WaitAsync(TimeSpan.FromSeconds(5)); } catch (Exception) { }
        lock (_held)
        {
            foreach (var c in _held) c.Dispose();
            _held.Clear();
        }
        _cts.Dispose();
    }
}
