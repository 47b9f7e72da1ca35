using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Pooler.Actors.Protocol.Prepared;

/// <summary>
/// Reads and rebuilds the extended-protocol messages that name a prepared statement (Parse, Bind,
/// Describe, Close), for transaction pooling's statement renaming. Bodies are what follows the 5-byte
/// header; what a message carries past the names (query, parameter types, values, formats) is kept as bytes.
/// </summary>
public static class ExtendedMessages
{
    /// <summary>Describe and Close: 'S' names a statement, 'P' a portal.</summary>
    public const byte Statement = (byte)'S', Portal = (byte)'P';

    /// <summary>Parse: name\0 query\0 Int16 n, n x Int32 type OIDs. <paramref name="definition"/> is all after the name.</summary>
    public static bool TryReadParse(ReadOnlySpan<byte> body, out string name, out ReadOnlySpan<byte> definition, out string? error)
    {
        definition = default;
        if (!TryCString(body, out name, out var used)) { error = "Parse without a statement name terminator"; return false; }
        definition = body[used..];
        var z = definition.IndexOf((byte)0);
        if (z < 0) { error = "Parse without a query terminator"; return false; }
        var types = definition[(z + 1)..];
        if (types.Length < 2) { error = "Parse without a parameter count"; return false; }
        var n = BinaryPrimitives.ReadInt16BigEndian(types);
        if (n < 0 || types.Length != 2 + 4 * n) { error = "Parse with a parameter count that does not match its length"; return false; }
        error = null;
        return true;
    }

    /// <summary>Bind: portal\0 statement\0 then formats, values and result formats (<paramref name="rest"/>).</summary>
    public static bool TryReadBind(ReadOnlySpan<byte> body, out string portal, out string statement, out ReadOnlySpan<byte> rest)
    {
        statement = "";
        rest = default;
        if (!TryCString(body, out portal, out var used)) return false;
        if (!TryCString(body[used..], out statement, out var used2)) return false;
        rest = body[(used + used2)..];
        return true;
    }

    /// <summary>Describe or Close: kind ('S' or 'P') then a name.</summary>
    public static bool TryReadTarget(ReadOnlySpan<byte> body, out byte kind, out string name)
    {
        kind = 0;
        name = "";
        if (body.Length < 2 || body[0] is not (Statement or Portal)) return false;
        kind = body[0];
        return TryCString(body[1..], out name, out var used) && used == body.Length - 1;
    }

    public static void Parse(PgWriter w, string name, ReadOnlySpan<byte> definition)
        => w.Begin(MsgType.Parse).CString(name).Bytes(definition).End();

    public static void Bind(PgWriter w, string portal, string statement, ReadOnlySpan<byte> rest)
        => w.Begin(MsgType.Bind).CString(portal).CString(statement).Bytes(rest).End();

    /// <summary>A Describe (<paramref name="type"/> = 'D') or Close ('C') of a statement or portal.</summary>
    public static void Target(PgWriter w, byte type, byte kind, string name)
        => w.Begin(type).Byte(kind).CString(name).End();

    /// <summary>
    /// The name a statement gets on the servers: the same query with the same parameter types gets the same
    /// name on every server and for every client, so a server prepares it once whoever asks. 96 bits of
    /// SHA-256, no registry to grow or lock.
    /// </summary>
    public static string ServerName(ReadOnlySpan<byte> definition)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(definition, hash);
        return "PLR_" + Convert.ToHexStringLower(hash[..12]);
    }

    private static bool TryCString(ReadOnlySpan<byte> body, out string value, out int consumed)
    {
        var z = body.IndexOf((byte)0);
        if (z < 0) { value = ""; consumed = 0; return false; }
        value = Encoding.UTF8.GetString(body[..z]);
        consumed = z + 1;
        return true;
    }
}
