using System.Buffers.Binary;
using System.Text;

namespace Pooler.Actors.Protocol;

/// <summary>
/// Builds protocol messages into a growable buffer. One writer per message batch: the pooler
/// sends its own messages (auth, errors, parameter statuses) rarely, so clarity beats pooling here.
/// </summary>
public sealed class PgWriter
{
    private byte[] _buf;
    private int _len;
    private int _msgStart = -1;

    public PgWriter(int capacity = 256) => _buf = new byte[capacity];

    public int Length => _len;

    /// <summary>Starts a typed message; its length is filled in by <see cref="End"/>.</summary>
    public PgWriter Begin(byte type)
    {
        Ensure(5);
        _buf[_len++] = type;
        _msgStart = _len;
        _len += 4;
        return this;
    }

    /// <summary>Starts an untyped message (startup, SSLRequest, CancelRequest).</summary>
    public PgWriter BeginUntyped()
    {
        Ensure(4);
        _msgStart = _len;
        _len += 4;
        return this;
    }

    public PgWriter End()
    {
        BinaryPrimitives.WriteInt32BigEndian(_buf.AsSpan(_msgStart), _len - _msgStart);
        _msgStart = -1;
        return this;
    }

    public PgWriter Int32(int v) { Ensure(4); BinaryPrimitives.WriteInt32BigEndian(_buf.AsSpan(_len), v); _len += 4; return this; }
    public PgWriter Int16(short v) { Ensure(2); BinaryPrimitives.WriteInt16BigEndian(_buf.AsSpan(_len), v); _len += 2; return this; }
    public PgWriter Byte(byte v) { Ensure(1); _buf[_len++] = v; return this; }

    public PgWriter Bytes(ReadOnlySpan<byte> b) { Ensure(b.Length); b.CopyTo(_buf.AsSpan(_len)); _len += b.Length; return this; }

    /// <summary>A NUL-terminated UTF-8 string.</summary>
    public PgWriter CString(string s)
    {
        var n = Encoding.UTF8.GetByteCount(s);
        Ensure(n + 1);
        Encoding.UTF8.GetBytes(s, _buf.AsSpan(_len));
        _len += n;
        _buf[_len++] = 0;
        return this;
    }

    public byte[] ToArray() => _buf.AsSpan(0, _len).ToArray();

    public ReadOnlySpan<byte> Span => _buf.AsSpan(0, _len);

    public void Reset() { _len = 0; _msgStart = -1; }

    private void Ensure(int n)
    {
        if (_len + n <= _buf.Length) return;
        Array.Resize(ref _buf, Math.Max(_buf.Length * 2, _len + n));
    }
}
