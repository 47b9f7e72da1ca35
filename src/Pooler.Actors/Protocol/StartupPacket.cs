using System.Buffers.Binary;
using System.Text;

namespace Pooler.Actors.Protocol;

public enum StartupKind { Startup, SslRequest, GssEncRequest, CancelRequest, Unsupported }

/// <summary>A parsed untyped startup-phase packet.</summary>
public sealed record StartupPacket(
    StartupKind Kind,
    int Code,
    IReadOnlyList<KeyValuePair<string, string>> Parameters,
    int CancelPid,
    int CancelSecret)
{
    /// <summary>Parses the body after the Int32 length. Returns null with a reason for a malformed packet.</summary>
    public static StartupPacket? Parse(ReadOnlySpan<byte> body, out string? error)
    {
        error = null;
        if (body.Length < 4) { error = "startup packet too short"; return null; }
        var code = BinaryPrimitives.ReadInt32BigEndian(body);
        switch (code)
        {
            case StartupCode.SslRequest:
                return new StartupPacket(StartupKind.SslRequest, code, [], 0, 0);
            case StartupCode.GssEncRequest:
                return new StartupPacket(StartupKind.GssEncRequest, code, [], 0, 0);
            case StartupCode.CancelRequest:
                if (body.Length != 12) { error = "invalid cancel request length"; return null; }
                return new StartupPacket(StartupKind.CancelRequest, code, [],
                    BinaryPrimitives.ReadInt32BigEndian(body[4..]), BinaryPrimitives.ReadInt32BigEndian(body[8..]));
        }
        if (code >> 16 != 3)
            return new StartupPacket(StartupKind.Unsupported, code, [], 0, 0);

        var ps = new List<KeyValuePair<string, string>>();
        var rest = body[4..];
        while (true)
        {
            var z = rest.IndexOf((byte)0);
            if (z < 0) { error = "startup packet: missing terminator"; return null; }
            if (z == 0) break; // the final empty name ends the list
            var name = Encoding.UTF8.GetString(rest[..z]);
            rest = rest[(z + 1)..];
            var z2 = rest.IndexOf((byte)0);
            if (z2 < 0) { error = $"startup packet: parameter \"{name}\" has no value"; return null; }
            ps.Add(new(name, Encoding.UTF8.GetString(rest[..z2])));
            rest = rest[(z2 + 1)..];
        }
        return new StartupPacket(StartupKind.Startup, code, ps, 0, 0);
    }

    public string? Get(string name)
    {
        foreach (var (k, v) in Parameters) if (k == name) return v;
        return null;
    }
}
