using System.Buffers.Binary;

namespace Pooler.Actors.Protocol;

public enum ScanEvent
{
    /// <summary>Every byte of the chunk has been looked at.</summary>
    End,
    /// <summary>A message header is complete: <see cref="FrameScanner.Type"/> and <see cref="FrameScanner.Length"/> are set.</summary>
    Header,
    /// <summary>A captured message's body is complete: <see cref="FrameScanner.Body"/> holds it.</summary>
    Body,
    /// <summary>A declared length is below 4 or above the limit: the stream cannot be framed any more.</summary>
    Invalid,
}

/// <summary>
/// Finds message boundaries in a byte stream that arrives in arbitrary chunks, without copying it:
/// the hot path relays chunks as they are and only needs to know where messages start. Bodies of
/// the few types the pooler must read (a table chosen by the owner) are captured, up to a size.
/// </summary>
public sealed class FrameScanner
{
    private readonly int[] _captureLimit; // per type: largest body captured whole (-1: never)
    private readonly bool[] _prefix;      // per type: a larger body is captured up to the limit, the rest skipped
    private readonly int _maxLength;
    private int _afterPrefix;             // body bytes still to skip once a prefix capture completes
    private readonly byte[] _hdr = new byte[5];
    private int _hdrLen;
    private int _remaining;
    private bool _capturing;
    private byte[] _cap = new byte[64];
    private int _capLen;

    public FrameScanner(ReadOnlySpan<byte> captureTypes, int maxLength, int maxCapture = 1 << 20)
    {
        _captureLimit = new int[256];
        Array.Fill(_captureLimit, -1);
        _prefix = new bool[256];
        foreach (var t in captureTypes) _captureLimit[t] = maxCapture;
        _maxLength = maxLength;
    }

    /// <summary>
    /// Captures bodies of <paramref name="type"/> up to <paramref name="maxBody"/> bytes; with <paramref name="prefix"/>, a
    /// larger body's first <paramref name="maxBody"/> bytes are captured (<see cref="BodyIsPrefix"/>) and the rest skipped.
    /// </summary>
    public FrameScanner Capture(byte type, int maxBody, bool prefix = false)
    {
        _captureLimit[type] = maxBody;
        _prefix[type] = prefix;
        return this;
    }

    /// <summary>After a <see cref="ScanEvent.Body"/> event: only the body's first part was captured; the rest follows uncaptured.</summary>
    public bool BodyIsPrefix { get; private set; }

    /// <summary>A captured body is being collected (its header was seen, its Body event not yet).</summary>
    public bool Capturing => _capturing;

    /// <summary>Bytes of a header seen at the end of the last chunk, without the rest of the header.</summary>
    public int PartialHeaderLength => _hdrLen;

    /// <summary>Forgets a partial header: the caller keeps those bytes and passes them again in front of the next chunk.</summary>
    public void DropPartialHeader() => _hdrLen = 0;

    /// <summary>Type of the current message.</summary>
    public byte Type { get; private set; }

    /// <summary>Declared length of the current message (including the 4 length bytes).</summary>
    public int Length { get; private set; }

    /// <summary>Offset in the current chunk where the current message's type byte is (negative if it began in an earlier chunk).</summary>
    public int StartInChunk { get; private set; }

    /// <summary>The captured body after a <see cref="ScanEvent.Body"/> event.</summary>
    public ReadOnlySpan<byte> Body => _cap.AsSpan(0, _capLen);

    /// <summary>Body bytes of the current message still to come, when its header is complete and its body is not (else 0).</summary>
    public int RemainingBody => _hdrLen == 0 && !_capturing ? _remaining : 0;

    /// <summary>True between messages: no header or body is partly read.</summary>
    public bool AtBoundary => _hdrLen == 0 && _remaining == 0 && !_capturing;

    public ScanEvent Next(ReadOnlySpan<byte> data, ref int pos)
    {
        while (true)
        {
            if (_capturing)
            {
                var n = Math.Min(_remaining, data.Length - pos);
                data.Slice(pos, n).CopyTo(_cap.AsSpan(_capLen));
                _capLen += n;
                pos += n;
                _remaining -= n;
                if (_remaining > 0) return ScanEvent.End;
                _capturing = false;
                _remaining = _afterPrefix;
                _afterPrefix = 0;
                return ScanEvent.Body;
            }
            if (_remaining > 0)
            {
                var skip = Math.Min(_remaining, data.Length - pos);
                pos += skip;
                _remaining -= skip;
                if (_remaining > 0) return ScanEvent.End;
            }
            if (pos >= data.Length) return ScanEvent.End;

            int len;
            if (_hdrLen == 0 && data.Length - pos >= 5)
            {
                // fast path: the whole header is in this chunk
                Type = data[pos];
                len = BinaryPrimitives.ReadInt32BigEndian(data[(pos + 1)..]);
                StartInChunk = pos;
                pos += 5;
            }
            else
            {
                var take = Math.Min(5 - _hdrLen, data.Length - pos);
                data.Slice(pos, take).CopyTo(_hdr.AsSpan(_hdrLen));
                _hdrLen += take;
                pos += take;
                if (_hdrLen < 5) return ScanEvent.End;
                _hdrLen = 0;
                Type = _hdr[0];
                len = BinaryPrimitives.ReadInt32BigEndian(_hdr.AsSpan(1));
                StartInChunk = pos - 5; // negative when the header began in an earlier chunk
            }
            if (len < 4 || len > _maxLength) return ScanEvent.Invalid;
            Length = len;
            _remaining = len - 4;
            var limit = _captureLimit[Type];
            if (limit >= 0 && (_remaining <= limit || _prefix[Type]))
            {
                _capturing = true;
                _capLen = 0;
                BodyIsPrefix = _remaining > limit;
                if (BodyIsPrefix)
                {
                    _afterPrefix = _remaining - limit;
                    _remaining = limit;
                }
                if (_cap.Length < _remaining) _cap = new byte[Math.Max(_remaining, _cap.Length * 2)];
            }
            return ScanEvent.Header;
        }
    }

    /// <summary>Forgets any partial message (after the stream was handed to someone else at a boundary).</summary>
    public void Reset()
    {
        _hdrLen = 0;
        _remaining = 0;
        _capturing = false;
        _capLen = 0;
        _afterPrefix = 0;
    }
}
