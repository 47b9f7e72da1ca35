using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Pbm;

/// <summary>The node could not be reached, or the connection broke before a reply ended.</summary>
internal sealed class NodeUnreachableException(string reason) : Exception(reason);

/// <summary>How a command ended: the node's exit code, and its message when it failed.</summary>
internal sealed record Outcome(int Exit, string? Error);

/// <summary>
/// One connection to a node's command endpoint. Requests go one at a time, each read up to its exit line, so
/// an interactive session runs all its commands over the same connection.
/// </summary>
internal sealed class PbmClient : IAsyncDisposable
{
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(5);

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;

    private PbmClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new StreamReader(_stream, new UTF8Encoding(false));
    }

    /// <exception cref="NodeUnreachableException">Refused, unresolvable, or no answer within <see cref="ConnectTimeout"/>.</exception>
    public static async Task<PbmClient> ConnectAsync(Endpoint endpoint, CancellationToken ct)
    {
        // Dual-mode: the same socket reaches IPv4 and IPv6 nodes.
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(ConnectTimeout);
        try
        {
            EndPoint remote = IPAddress.TryParse(endpoint.Host, out var address)
                ? new IPEndPoint(address, endpoint.Port)
                : new DnsEndPoint(endpoint.Host, endpoint.Port);
            await socket.ConnectAsync(remote, timeout.Token);
            return new PbmClient(socket);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            socket.Dispose();
            throw new NodeUnreachableException($"no answer within {ConnectTimeout.TotalSeconds:0} s");
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new NodeUnreachableException(e.Message);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Sends one command and hands its reply to <paramref name="line"/> (human output) and <paramref name="json"/>
    /// (the JSON value, asked for with <paramref name="asJson"/>) until the exit line. A streaming command only
    /// ends when <paramref name="ct"/> is cancelled; the connection is then unusable and must be disposed.
    /// </summary>
    /// <exception cref="NodeUnreachableException">The connection broke or the node's reply is not the protocol.</exception>
    public async Task<Outcome> ExecuteAsync(IReadOnlyList<string> args, bool asJson, Action<string> line,
        Action<JsonElement> json, CancellationToken ct)
    {
        await SendAsync(args, asJson, ct);
        while (true)
        {
            var text = await ReadLineAsync(ct);
            using var reply = Parse(text);
            var root = reply.RootElement;
            if (root.TryGetProperty("line", out var l))
                line(l.ValueKind == JsonValueKind.String ? l.GetString()! : l.GetRawText());
            else if (root.TryGetProperty("json", out var value))
                json(value.Clone()); // outlives this line's document
            else if (root.TryGetProperty("exit", out var exit))
            {
                if (!exit.TryGetInt32(out var code))
                    throw new NodeUnreachableException($"the node's reply is not the command protocol: {Shorten(text)}");
                var error = root.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.String ? e.GetString() : null;
                return new Outcome(code, error);
            }
            // Other kinds of line are left to newer clients.
        }
    }

    private async Task SendAsync(IReadOnlyList<string> args, bool asJson, CancellationToken ct)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteStartArray("args");
            foreach (var arg in args)
                writer.WriteStringValue(arg);
            writer.WriteEndArray();
            writer.WriteBoolean("json", asJson);
            writer.WriteEndObject();
        }
        buffer.Write("\n"u8);
        try
        {
            await _stream.WriteAsync(buffer.WrittenMemory, ct);
        }
        catch (IOException e)
        {
            throw new NodeUnreachableException(Reason(e));
        }
    }

    private async Task<string> ReadLineAsync(CancellationToken ct)
    {
        string? text;
        try
        {
            text = await _reader.ReadLineAsync(ct);
        }
        catch (IOException e)
        {
            throw new NodeUnreachableException(Reason(e));
        }
        return text ?? throw new NodeUnreachableException("connection closed before the command ended");
    }

    private static JsonDocument Parse(string text)
    {
        try
        {
            var document = JsonDocument.Parse(text);
            if (document.RootElement.ValueKind == JsonValueKind.Object)
                return document;
            document.Dispose();
        }
        catch (JsonException)
        {
        }
        throw new NodeUnreachableException($"the node's reply is not the command protocol: {Shorten(text)}");
    }

    private static string Shorten(string text) => text.Length <= 80 ? text : text[..80] + "...";

    // A reset connection surfaces as an IOException wrapping the socket's own, clearer message.
    private static string Reason(IOException e) => e.InnerException is SocketException s ? s.Message : e.Message;

    public ValueTask DisposeAsync()
    {
        _reader.Dispose();
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
