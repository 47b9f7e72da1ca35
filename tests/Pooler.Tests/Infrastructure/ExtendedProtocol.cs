using System.Buffers.Binary;
using System.Text;

namespace Pooler.Tests.Infrastructure;

/// <summary>Extended-protocol client messages, byte for byte, for tests that speak the protocol themselves.</summary>
public static class ExtendedProtocol
{
    public static byte[] Z(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    public static byte[] Parse(string name, string query, params int[] types)
    {
        var t = new byte[2 + 4 * types.Length];
        BinaryPrimitives.WriteInt16BigEndian(t, (short)types.Length);
        for (var i = 0; i < types.Length; i++) BinaryPrimitives.WriteInt32BigEndian(t.AsSpan(2 + 4 * i), types[i]);
        return RawPgConnection.Message('P', [.. Z(name), .. Z(query), .. t]);
    }

    /// <summary>Bind of <paramref name="statement"/> to the unnamed portal with text parameters (none when null), text results.</summary>
    public static byte[] Bind(string statement, params string?[]? values)
    {
        var b = new List<byte>();
        b.AddRange(Z("")); b.AddRange(Z(statement));
        b.AddRange(new byte[] { 0, 0 });                       // no parameter formats: all text
        values ??= [];
        var n = new byte[2];
        BinaryPrimitives.WriteInt16BigEndian(n, (short)values.Length);
        b.AddRange(n);
        foreach (var value in values)
        {
            var len = new byte[4];
            if (value == null) { BinaryPrimitives.WriteInt32BigEndian(len, -1); b.AddRange(len); continue; }
            var v = Encoding.UTF8.GetBytes(value);
            BinaryPrimitives.WriteInt32BigEndian(len, v.Length);
            b.AddRange(len); b.AddRange(v);
        }
        b.AddRange(new byte[] { 0, 0 });                       // result formats: all text
        return RawPgConnection.Message('B', [.. b]);
    }

    public static readonly byte[] Execute = RawPgConnection.Message('E', [0, 0, 0, 0, 0]);
    public static readonly byte[] Sync = RawPgConnection.Message('S', []);
    public static byte[] Close(string statement) => RawPgConnection.Message('C', [(byte)'S', .. Z(statement)]);
    public static byte[] Describe(string statement) => RawPgConnection.Message('D', [(byte)'S', .. Z(statement)]);
    public static byte[] Query(string sql) => RawPgConnection.Message('Q', Z(sql));

    /// <summary>The message types of a reply, in order ("12DCZ").</summary>
    public static string Types(IEnumerable<RawPgMessage> messages) => new(messages.Select(m => m.Type).ToArray());
}
