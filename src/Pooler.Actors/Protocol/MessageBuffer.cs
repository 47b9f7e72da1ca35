using System.Buffers.Binary;

namespace Pooler.Actors.Protocol;

/// <summary>
/// Accumulates bytes and cuts whole messages out of them; used only outside the linked hot path
/// (startup, authentication, the pooler's own queries). Bounded: a declared length over
/// <see cref="MaxLength"/> or under 4 is a protocol violation.
/// </summary>
public sealed class MessageBuffer(int maxLength)
{
    private byte[] _buf = new byte[512];
    private int _start;
    private int _end;

    public int MaxLength { get; } = maxLength;
    public int Buffered => _end - _start;

    public void Append(ReadOnlySpan<byte> data)
    {
        if (_end + data.Length > _buf.Length)
        {
            var live = _end - _start;
            if (live + data.Length > _buf.Length)
            {
                var bigger = new byte[Math.Max(_buf.Length * 2, live + data.Length)];
                _buf.AsSpan(_start, live).CopyTo(bigger);
                _buf = bigger;
            }
            else _buf.AsSpan(_start, live).CopyTo(_buf);
            _start = 0;
            _end = live;
        }
        data.CopyTo(_buf.AsSpan(_end));
        _end += data.Length;
    }

    /// <summary>Takes one typed message (type byte + Int32 length + body).</summary>
    public ReadResult TryReadTyped(out byte type, out ReadOnlyMemory<byte> body)
    {
        type = 0;
        body = default;
        if (Buffered < 5) return ReadResult.NeedMore;
        var len = BinaryPrimitives.ReadInt32BigEndian(_buf.AsSpan(_start + 1));
        if (len < 4 || len > MaxLength) return ReadResult.Invalid;
        if (Buffered < 1 + len) return ReadResult.NeedMore;
        type = _buf[_start];
        body = new ReadOnlyMemory<byte>(_buf, _start + 5, len - 4);
        _start += 1 + len;
        return ReadResult.Ok;
    }

    /// <summary>Takes one untyped startup-phase packet (Int32 length, then body).</summary>
    public ReadResult TryReadUntyped(out ReadOnlyMemory<byte> body)
    {
        body = default;
        if (Buffered < 4) return ReadResult.NeedMore;
        var len = BinaryPrimitives.ReadInt32BigEndian(_buf.AsSpan(_start));
        if (len < 8 || len > MaxLength) return ReadResult.Invalid;
        if (Buffered < len) return ReadResult.NeedMore;
        body = new ReadOnlyMemory<byte>(_buf, _start + 4, len - 4);
        _start += len;
        return ReadResult.Ok;
    }

    /// <summary>Hands out whatever is left (bytes that arrived after the login messages).</summary>
    public byte[] TakeRemaining()
    {
        var rest = _buf.AsSpan(_start, Buffered).ToArray();
        _start = _end = 0;
        return rest;
    }
}

public enum ReadResult { NeedMore, Ok, Invalid }
