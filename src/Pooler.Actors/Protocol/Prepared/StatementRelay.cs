using Akka.IO;

namespace Pooler.Actors.Protocol.Prepared;

/// <summary>
/// One client's side of statement renaming: frames the client's byte stream as it goes to a server, reads whole the
/// few messages that name statements (Parse, Describe, Close; the head of Bind; a short Query, for DISCARD ALL) and
/// has <see cref="StatementRewriter"/> rewrite them for the server that gets them. Everything else is relayed as it
/// came, and a chunk without a rewritten message is passed on without a copy. Used by one actor at a time: the
/// client while linked, or the server that links it and writes what it held meanwhile.
/// </summary>
public sealed class StatementRelay
{
    /// <summary>Parse, Describe and Close bodies up to this are read whole; a larger one passes unchanged (its statement stays on that server).</summary>
    public const int MaxStatementMessage = 1 << 20;
    /// <summary>Of a Bind, only the names matter: its first part is read, its values pass through.</summary>
    public const int BindHead = 64 * 1024;
    /// <summary>DISCARD ALL and DEALLOCATE ALL are short; longer queries pass without being read.</summary>
    public const int QueryPeek = 256;

    private readonly FrameScanner _scan;
    private readonly PgWriter _out = new(1024);
    private readonly PgWriter _message = new(256);
    private readonly IStatementCounters? _counters;
    private byte[]? _carry;     // a header cut by the end of the last chunk, passed again in front of the next
    private bool _split;        // the message being captured began in an earlier chunk (its start was not relayed)

    public StatementRelay(int maxPacketSize, IStatementCounters? counters = null)
    {
        _counters = counters;
        _scan = new FrameScanner(ReadOnlySpan<byte>.Empty, maxPacketSize)
            .Capture(MsgType.Parse, MaxStatementMessage)
            .Capture(MsgType.Describe, MaxStatementMessage)
            .Capture(MsgType.Close, MaxStatementMessage)
            .Capture(MsgType.Bind, BindHead, prefix: true)
            .Capture(MsgType.Query, QueryPeek);
    }

    public ClientStatements Statements { get; } = new();

    /// <summary>
    /// What goes to the server for this chunk of the client's stream, rewritten for <paramref name="server"/> (the
    /// caller holds its <see cref="ServerStatements.Gate"/>). May be empty, when the chunk ends inside a message being read.
    /// The stream was framed already (the session refuses invalid lengths), so framing errors are not expected here.
    /// </summary>
    public ByteString Relay(ByteString chunk, ServerStatements server)
    {
        var original = _carry == null;
        var data = original ? chunk.ToReadOnlySpan() : Concat(_carry!, chunk);
        _carry = null;
        _out.Reset();
        var copyFrom = _scan.Capturing ? -1 : 0; // start of bytes still to relay as they are; -1 while inside a captured message
        var msgStart = 0;
        var pos = 0;
        var end = data.Length;
        while (true)
        {
            var ev = _scan.Next(data, ref pos);
            if (ev == ScanEvent.End) break;
            if (ev == ScanEvent.Invalid)
            {
                // cannot happen after the session's own framing; relay the rest as it is rather than lose it
                _scan.Reset();
                break;
            }
            if (ev == ScanEvent.Header)
            {
                if (_scan.Capturing) msgStart = _scan.StartInChunk;
                else StatementRewriter.Passed(server, _scan.Type);
                continue;
            }
            // a captured body: whole, or a Bind's head
            _message.Reset();
            bool replaced;
            if (_scan.BodyIsPrefix)
                replaced = StatementRewriter.RewriteBindPrefix(Statements, server, _scan.Body, _scan.Length - 4, _message, _counters);
            else
                replaced = StatementRewriter.Rewrite(Statements, server, _scan.Type, _scan.Body, _message, _counters);
            if (!replaced && !_split) continue; // its bytes are relayed as they are
            if (copyFrom >= 0) _out.Bytes(data[copyFrom..msgStart]);
            if (replaced) _out.Bytes(_message.Span);
            else
            {
                // unchanged, but its start went unrelayed in an earlier chunk: rebuild it from what was captured
                _out.Byte(_scan.Type).Int32(_scan.Length).Bytes(_scan.Body);
            }
            _split = false;
            copyFrom = pos;
        }
        if (_scan.Capturing)
        {
            // the chunk ends inside a message being read: relay up to its start, the rest comes with its end
            if (copyFrom >= 0 && !_split) _out.Bytes(data[copyFrom..msgStart]);
            _split = true;
            copyFrom = -1;
        }
        else if (_scan.PartialHeaderLength > 0)
        {
            end -= _scan.PartialHeaderLength;
            _carry = data[end..].ToArray();
            _scan.DropPartialHeader();
        }
        if (original && copyFrom == 0 && end == data.Length && _out.Length == 0) return chunk;
        if (copyFrom >= 0 && copyFrom < end) _out.Bytes(data[copyFrom..end]);
        return _out.Length == 0 ? ByteString.Empty : ByteString.FromBytes(_out.Span.ToArray());
    }

    /// <summary>Bytes of the client's stream that go to no server (the tail of a COPY already ended): framing only.</summary>
    public void Skip(ByteString chunk)
    {
        var data = _carry == null ? chunk.ToReadOnlySpan() : Concat(_carry, chunk);
        _carry = null;
        var pos = 0;
        while (_scan.Next(data, ref pos) is not (ScanEvent.End or ScanEvent.Invalid)) { }
    }

    /// <summary>The message in progress was completed by the pooler (COPY filler): what follows starts a new one.</summary>
    public void EndMessage()
    {
        _scan.Reset();
        _carry = null;
        _split = false;
    }

    private static ReadOnlySpan<byte> Concat(byte[] head, ByteString chunk)
    {
        var a = new byte[head.Length + chunk.Count];
        head.CopyTo(a, 0);
        chunk.CopyTo(a, head.Length, chunk.Count);
        return a;
    }
}
