using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Pooler.Tests.Integration;

/// <summary>One backend message as a raw client sees it.</summary>
public sealed record RawMessage(byte Type, byte[] Body)
{
    public bool IsError => Type == (byte)'E';

    /// <summary>Fields of an ErrorResponse/NoticeResponse ('C' = SQLSTATE, 'M' = message, 'S' = severity).</summary>
    public Dictionary<char, string> Fields()
    {
        var fields = new Dictionary<char, string>();
        var i = 0;
        while (i < Body.Length && Body[i] != 0)
        {
            var code = (char)Body[i++];
            var end = Array.IndexOf(Body, (byte)0, i);
            if (end < 0) end = Body.Length;
            fields[code] = Encoding.UTF8.GetString(Body, i, end - i);
            i = end + 1;
        }
        return fields;
    }

    public string? SqlState => IsError ? Fields().GetValueOrDefault('C') : null;

    public override string ToString()
        => IsError ? $"ErrorResponse {string.Join(" ", Fields().Select(kv => $"{kv.Key}={kv.Value}"))}" : $"'{(char)Type}' ({Body.Length} bytes)";
}

/// <summary>What a raw client read until the pooler closed the socket (or the wait ran out).</summary>
public sealed record RawOutcome(IReadOnlyList<RawMessage> Messages, bool Closed, TimeSpan Elapsed)
{
    public RawMessage? FirstError => Messages.FirstOrDefault(m => m.IsError);

    public override string ToString()
        => $"closed={Closed} after {Elapsed.TotalSeconds:0.00}s, messages=[{string.Join("; ", Messages)}]";
}

/// <summary>Encoders for the few frontend messages the tests send byte by byte.</summary>
public static class PgBytes
{
    public const int Protocol30 = 196608;

    public static byte[] Int32(int v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(b, v);
        return b;
    }

    /// <summary>StartupMessage (protocol 3.0) with the given parameters.</summary>
    public static byte[] Startup(params (string Name, string Value)[] parameters)
    {
        var body = new List<byte>();
        body.AddRange(Int32(Protocol30));
        foreach (var (n, v) in parameters)
        {
            body.AddRange(Encoding.UTF8.GetBytes(n));
            body.Add(0);
            body.AddRange(Encoding.UTF8.GetBytes(v));
            body.Add(0);
        }
        body.Add(0);
        return [.. Int32(body.Count + 4), .. body];
    }

    /// <summary>A typed message: type byte, Int32 length (body + 4), body.</summary>
    public static byte[] Message(char type, byte[] body) => [(byte)type, .. Int32(body.Length + 4), .. body];

    public static byte[] Query(string sql) => Message('Q', [.. Encoding.UTF8.GetBytes(sql), 0]);

    public static readonly byte[] Terminate = Message('X', []);
}

/// <summary>
/// A client that speaks the PostgreSQL wire protocol byte by byte over a plain TcpClient, to send what
/// no driver would send and to see exactly what the pooler answers before it closes.
/// </summary>
public sealed class RawConnection : IAsyncDisposable
{
    private readonly TcpClient _client;
    private readonly NetworkStream _stream;
    private readonly List<byte> _in = new();
    private bool _eof;

    private RawConnection(TcpClient client)
    {
        _client = client;
        _stream = client.GetStream();
    }

    public static async Task<RawConnection> ConnectAsync(int port, TimeSpan? timeout = null)
    {
        var client = new TcpClient { NoDelay = true };
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(5));
        try
        {
            await client.ConnectAsync("127.0.0.1", port, cts.Token);
        }
        catch
        {
            client.Dispose();
            throw;
        }
        return new RawConnection(client);
    }

    public async Task SendAsync(byte[] bytes)
    {
        await _stream.WriteAsync(bytes);
        await _stream.FlushAsync();
    }

    /// <summary>Sends a StartupMessage and reads until ReadyForQuery; throws if the pooler answers with an error.</summary>
    public async Task<List<RawMessage>> LoginAsync(string user, string database, params (string Name, string Value)[] extra)
    {
        await SendAsync(PgBytes.Startup([("user", user), ("database", database), .. extra]));
        return await ReadUntilReadyAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>Reads messages up to and including ReadyForQuery; throws on an ErrorResponse, EOF or timeout.</summary>
    public async Task<List<RawMessage>> ReadUntilReadyAsync(TimeSpan timeout)
    {
        var got = new List<RawMessage>();
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var left = timeout - watch.Elapsed;
            if (left <= TimeSpan.Zero) throw new TimeoutException($"no ReadyForQuery within {timeout}; got [{string.Join("; ", got)}]");
            var m = await ReadMessageAsync(left)
                ?? throw new IOException($"connection closed before ReadyForQuery; got [{string.Join("; ", got)}]");
            got.Add(m);
            if (m.IsError && m.Fields().GetValueOrDefault('S') is "FATAL" or "PANIC")
                throw new InvalidOperationException($"pooler refused: {m}");
            if (m.Type == (byte)'Z') return got;
        }
    }

    /// <summary>The next whole message, or null at EOF (or a reset). Throws TimeoutException when nothing complete arrives in time.</summary>
    public async Task<RawMessage?> ReadMessageAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            if (TryTakeMessage(out var m)) return m;
            if (_eof) return null;
            try
            {
                if (!await FillAsync(cts.Token)) return TryTakeMessage(out m) ? m : null;
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"no complete message within {timeout} ({_in.Count} bytes buffered)");
            }
        }
    }

    /// <summary>
    /// Reads everything until the pooler closes the connection (EOF or reset) or <paramref name="timeout"/> passes,
    /// and returns the messages seen, whether the socket was closed, and how long that took.
    /// </summary>
    public async Task<RawOutcome> ReadUntilClosedAsync(TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        var messages = new List<RawMessage>();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            while (!_eof && await FillAsync(cts.Token)) { }
        }
        catch (OperationCanceledException)
        {
        }
        while (TryTakeMessage(out var m)) messages.Add(m);
        return new RawOutcome(messages, _eof, watch.Elapsed);
    }

    /// <summary>Reads once; false at EOF (a reset counts as EOF: the peer is gone either way).</summary>
    private async Task<bool> FillAsync(CancellationToken ct)
    {
        var chunk = new byte[16384];
        int n;
        try
        {
            n = await _stream.ReadAsync(chunk, ct);
        }
        catch (IOException)
        {
            n = 0;
        }
        catch (SocketException)
        {
            n = 0;
        }
        if (n == 0)
        {
            _eof = true;
            return false;
        }
        _in.AddRange(chunk.AsSpan(0, n).ToArray());
        return true;
    }

    private bool TryTakeMessage(out RawMessage message)
    {
        message = null!;
        if (_in.Count < 5) return false;
        var len = BinaryPrimitives.ReadInt32BigEndian([_in[1], _in[2], _in[3], _in[4]]);
        if (len < 4) throw new InvalidDataException($"backend sent a message with length {len}");
        if (_in.Count < 1 + len) return false;
        message = new RawMessage(_in[0], _in.GetRange(5, len - 4).ToArray());
        _in.RemoveRange(0, 1 + len);
        return true;
    }

    /// <summary>Half-closes: the pooler sees end of stream while this side can still read its answer.</summary>
    public void ShutdownSend() => _client.Client.Shutdown(SocketShutdown.Send);

    /// <summary>Drops the connection with a TCP reset (SO_LINGER 0), as a crashed client would.</summary>
    public void Abort()
    {
        try
        {
            _client.Client.LingerState = new LingerOption(true, 0);
            _client.Client.Close();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public ValueTask DisposeAsync()
    {
        _client.Dispose();
        return ValueTask.CompletedTask;
    }
}
