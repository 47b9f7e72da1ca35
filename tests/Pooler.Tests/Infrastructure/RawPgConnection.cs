using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace Pooler.Tests.Infrastructure;

/// <summary>One backend message as read off the wire.</summary>
public sealed record RawPgMessage(char Type, byte[] Body)
{
    /// <summary>Fields of an ErrorResponse/NoticeResponse by code ('C' = SQLSTATE, 'M' = message, 'S' = severity).</summary>
    public IReadOnlyDictionary<char, string> Fields()
    {
        var d = new Dictionary<char, string>();
        var i = 0;
        while (i < Body.Length && Body[i] != 0)
        {
            var code = (char)Body[i++];
            var end = Array.IndexOf(Body, (byte)0, i);
            if (end < 0) break;
            d[code] = Encoding.UTF8.GetString(Body, i, end - i);
            i = end + 1;
        }
        return d;
    }

    /// <summary>The first column of a DataRow as text (null for SQL NULL).</summary>
    public string? FirstColumn() => Columns()[0];

    /// <summary>The columns of a DataRow as text (null for SQL NULL).</summary>
    public IReadOnlyList<string?> Columns()
    {
        var n = BinaryPrimitives.ReadInt16BigEndian(Body);
        var list = new List<string?>(n);
        var pos = 2;
        for (var i = 0; i < n; i++)
        {
            var len = BinaryPrimitives.ReadInt32BigEndian(Body.AsSpan(pos));
            pos += 4;
            list.Add(len < 0 ? null : Encoding.UTF8.GetString(Body, pos, len));
            if (len > 0) pos += len;
        }
        return list;
    }
}

/// <summary>
/// A bare protocol-3.0 client over a socket, for what Npgsql hides: the BackendKeyData secret, raw CancelRequests,
/// exact message sequences. Authenticates with trust or cleartext password only (use <c>auth.type = trust</c> or
/// <c>plain</c> on the pooler). Every read is bounded by <see cref="ReadTimeout"/>.
/// </summary>
public sealed class RawPgConnection : IAsyncDisposable
{
    private readonly TcpClient _tcp;
    private readonly NetworkStream _stream;

    private RawPgConnection(TcpClient tcp)
    {
        _tcp = tcp;
        _stream = tcp.GetStream();
    }

    public TimeSpan ReadTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>BackendKeyData the pooler sent at login.</summary>
    public int ProcessId { get; private set; }
    public int SecretKey { get; private set; }
    public Dictionary<string, string> Parameters { get; } = new();

    public static async Task<RawPgConnection> ConnectAsync(int port, string user, string database, string? password = null,
        IEnumerable<KeyValuePair<string, string>>? parameters = null)
    {
        var tcp = new TcpClient { NoDelay = true };
        await tcp.ConnectAsync("127.0.0.1", port);
        var c = new RawPgConnection(tcp);
        try
        {
            await c.LoginAsync(user, database, password, parameters);
            return c;
        }
        catch
        {
            await c.DisposeAsync();
            throw;
        }
    }

    private async Task LoginAsync(string user, string database, string? password, IEnumerable<KeyValuePair<string, string>>? parameters)
    {
        var body = new MemoryStream();
        void Str(string s) { var b = Encoding.UTF8.GetBytes(s); body.Write(b); body.WriteByte(0); }
        var code = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(code, 196608);
        body.Write(code);
        Str("user"); Str(user);
        Str("database"); Str(database);
        foreach (var (k, v) in parameters ?? []) { Str(k); Str(v); }
        body.WriteByte(0);
        var packet = new byte[4 + body.Length];
        BinaryPrimitives.WriteInt32BigEndian(packet, packet.Length);
        body.ToArray().CopyTo(packet, 4);
        await _stream.WriteAsync(packet);

        while (true)
        {
            var m = await ReadAsync();
            switch (m.Type)
            {
                case 'R':
                    var auth = BinaryPrimitives.ReadInt32BigEndian(m.Body);
                    if (auth == 0) break;
                    if (auth == 3 && password != null) { await SendAsync('p', CString(password)); break; }
                    throw new InvalidOperationException($"RawPgConnection: unsupported authentication request {auth}");
                case 'S':
                    var parts = Encoding.UTF8.GetString(m.Body).Split('\0');
                    Parameters[parts[0]] = parts[1];
                    break;
                case 'K':
                    ProcessId = BinaryPrimitives.ReadInt32BigEndian(m.Body);
                    SecretKey = BinaryPrimitives.ReadInt32BigEndian(m.Body.AsSpan(4));
                    break;
                case 'E':
                    throw new InvalidOperationException($"login failed: {m.Fields().GetValueOrDefault('C')} {m.Fields().GetValueOrDefault('M')}");
                case 'Z':
                    return;
            }
        }
    }

    private static byte[] CString(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    /// <summary>Sends one typed message.</summary>
    public async Task SendAsync(char type, byte[] body) => await _stream.WriteAsync(Message(type, body));

    /// <summary>One typed protocol message: type byte, Int32 length, body.</summary>
    public static byte[] Message(char type, byte[] body)
    {
        var msg = new byte[5 + body.Length];
        msg[0] = (byte)type;
        BinaryPrimitives.WriteInt32BigEndian(msg.AsSpan(1), 4 + body.Length);
        body.CopyTo(msg, 5);
        return msg;
    }

    /// <summary>Writes bytes as they are (e.g. a message cut in the middle).</summary>
    public async Task WriteRawAsync(byte[] bytes) => await _stream.WriteAsync(bytes);

    /// <summary>Sends a simple Query without waiting for the answer.</summary>
    public Task SendQueryAsync(string sql) => SendAsync('Q', CString(sql));

    /// <summary>Reads one message (throws TimeoutException after <see cref="ReadTimeout"/>, EndOfStreamException on close).</summary>
    public async Task<RawPgMessage> ReadAsync()
    {
        var header = new byte[5];
        await ReadExactlyAsync(header);
        var len = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(1));
        if (len < 4 || len > 64 * 1024 * 1024) throw new InvalidDataException($"bad message length {len}");
        var body = new byte[len - 4];
        await ReadExactlyAsync(body);
        return new RawPgMessage((char)header[0], body);
    }

    private async Task ReadExactlyAsync(byte[] buffer)
    {
        using var cts = new CancellationTokenSource(ReadTimeout);
        try
        {
            await _stream.ReadExactlyAsync(buffer, cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no message within {ReadTimeout.TotalSeconds} s");
        }
    }

    /// <summary>Reads messages up to and including ReadyForQuery.</summary>
    public async Task<List<RawPgMessage>> ReadUntilReadyAsync()
    {
        var list = new List<RawPgMessage>();
        for (var i = 0; i < 1_000_000; i++)
        {
            var m = await ReadAsync();
            list.Add(m);
            if (m.Type == 'Z') return list;
        }
        throw new InvalidDataException("no ReadyForQuery after a million messages");
    }

    /// <summary>Runs a simple query; returns every message of the answer (through ReadyForQuery).</summary>
    public async Task<List<RawPgMessage>> QueryAsync(string sql)
    {
        await SendQueryAsync(sql);
        return await ReadUntilReadyAsync();
    }

    /// <summary>Runs a simple query and returns the first column of the first row; throws on an ErrorResponse.</summary>
    public async Task<string?> ScalarAsync(string sql)
    {
        var answer = await QueryAsync(sql);
        if (answer.FirstOrDefault(m => m.Type == 'E') is { } e)
            throw new InvalidOperationException($"{e.Fields().GetValueOrDefault('C')}: {e.Fields().GetValueOrDefault('M')}");
        return answer.First(m => m.Type == 'D').FirstColumn();
    }

    /// <summary>
    /// Sends a CancelRequest (Int32 16, Int32 80877102, pid, secret) on a fresh connection and waits until the other side
    /// closes it (as PostgreSQL and PgBouncer do), at most <paramref name="timeout"/>. Returns true if it closed.
    /// </summary>
    public static async Task<bool> SendCancelAsync(int port, int pid, int secret, TimeSpan? timeout = null)
    {
        using var tcp = new TcpClient { NoDelay = true };
        await tcp.ConnectAsync("127.0.0.1", port);
        var s = tcp.GetStream();
        var packet = new byte[16];
        BinaryPrimitives.WriteInt32BigEndian(packet, 16);
        BinaryPrimitives.WriteInt32BigEndian(packet.AsSpan(4), 80877102);
        BinaryPrimitives.WriteInt32BigEndian(packet.AsSpan(8), pid);
        BinaryPrimitives.WriteInt32BigEndian(packet.AsSpan(12), secret);
        await s.WriteAsync(packet);
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
        var buf = new byte[64];
        try
        {
            for (var i = 0; i < 1000; i++)
                if (await s.ReadAsync(buf, cts.Token) == 0) return true;
            return false;
        }
        catch (OperationCanceledException) { return false; }
        catch (IOException) { return true; } // reset by peer: closed too
    }

    /// <summary>Sends Terminate and closes.</summary>
    public async Task TerminateAsync()
    {
        try { await SendAsync('X', []); } catch (IOException) { } catch (ObjectDisposedException) { }
        _tcp.Close();
    }

    public ValueTask DisposeAsync()
    {
        _tcp.Dispose();
        return ValueTask.CompletedTask;
    }
}
