using System.Buffers.Binary;
using System.Text;

namespace Pooler.Actors.Protocol;

/// <summary>Readers for the few message bodies the pooler must understand.</summary>
public static class Payload
{
    /// <summary>ParameterStatus: name\0value\0.</summary>
    public static bool TryParameterStatus(ReadOnlySpan<byte> body, out string name, out string value)
    {
        name = value = "";
        var z = body.IndexOf((byte)0);
        if (z < 0) return false;
        name = Encoding.UTF8.GetString(body[..z]);
        var rest = body[(z + 1)..];
        var z2 = rest.IndexOf((byte)0);
        value = Encoding.UTF8.GetString(z2 < 0 ? rest : rest[..z2]);
        return true;
    }

    /// <summary>ErrorResponse/NoticeResponse fields: code byte, then a C string, until a 0 code.</summary>
    public static Dictionary<char, string> ErrorFields(ReadOnlySpan<byte> body)
    {
        var d = new Dictionary<char, string>();
        while (body.Length > 0 && body[0] != 0)
        {
            var code = (char)body[0];
            body = body[1..];
            var z = body.IndexOf((byte)0);
            if (z < 0) { d[code] = Encoding.UTF8.GetString(body); break; }
            d[code] = Encoding.UTF8.GetString(body[..z]);
            body = body[(z + 1)..];
        }
        return d;
    }

    public static string ErrorSummary(ReadOnlySpan<byte> body)
    {
        var f = ErrorFields(body);
        return $"{f.GetValueOrDefault('C', "?")}: {f.GetValueOrDefault('M', "")}";
    }

    /// <summary>A C string at the start of the body; the rest after it.</summary>
    public static string CString(ReadOnlySpan<byte> body, out int consumed)
    {
        var z = body.IndexOf((byte)0);
        if (z < 0) { consumed = body.Length; return Encoding.UTF8.GetString(body); }
        consumed = z + 1;
        return Encoding.UTF8.GetString(body[..z]);
    }

    public static int Int32(ReadOnlySpan<byte> body) => BinaryPrimitives.ReadInt32BigEndian(body);
}
