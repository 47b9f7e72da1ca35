using System.Buffers.Binary;
using Pooler.Actors.Protocol;
using Xunit;

namespace Pooler.Tests.Protocol;

public class MessageBufferTests
{
    [Fact]
    public void Startup_packet_round_trips_through_buffer_and_parser()
    {
        var bytes = PgMessages.Startup([new("user", "alice"), new("database", "db1"), new("application_name", "x y")]);
        var buf = new MessageBuffer(10000);
        buf.Append(bytes.AsSpan(0, 3));
        Assert.Equal(ReadResult.NeedMore, buf.TryReadUntyped(out _));
        buf.Append(bytes.AsSpan(3));
        Assert.Equal(ReadResult.Ok, buf.TryReadUntyped(out var body));
        var p = StartupPacket.Parse(body.Span, out var err)!;
        Assert.Null(err);
        Assert.Equal(StartupKind.Startup, p.Kind);
        Assert.Equal("alice", p.Get("user"));
        Assert.Equal("x y", p.Get("application_name"));
    }

    [Fact]
    public void Ssl_gss_and_cancel_requests_are_recognised()
    {
        byte[] Untyped(params int[] ints)
        {
            var b = new byte[4 + ints.Length * 4];
            BinaryPrimitives.WriteInt32BigEndian(b, b.Length);
            for (var i = 0; i < ints.Length; i++) BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(4 + i * 4), ints[i]);
            return b;
        }
        Assert.Equal(StartupKind.SslRequest, StartupPacket.Parse(Untyped(StartupCode.SslRequest).AsSpan(4), out _)!.Kind);
        Assert.Equal(StartupKind.GssEncRequest, StartupPacket.Parse(Untyped(StartupCode.GssEncRequest).AsSpan(4), out _)!.Kind);
        var c = StartupPacket.Parse(PgMessages.CancelRequest(42, -7).AsSpan(4), out _)!;
        Assert.Equal((StartupKind.CancelRequest, 42, -7), (c.Kind, c.CancelPid, c.CancelSecret));
        Assert.Equal(StartupKind.Unsupported, StartupPacket.Parse(Untyped(2 << 16).AsSpan(4), out _)!.Kind);
    }

    [Theory]
    [InlineData(new byte[] { 0, 3, 0, 0, (byte)'u', (byte)'s', (byte)'e', (byte)'r' })] // no terminator
    [InlineData(new byte[] { 0, 3, 0, 0, (byte)'u', 0 })] // name without value
    [InlineData(new byte[] { 0, 3 })] // too short
    public void Malformed_startup_packets_are_refused_with_a_reason(byte[] body)
    {
        Assert.Null(StartupPacket.Parse(body, out var err));
        Assert.False(string.IsNullOrEmpty(err));
    }

    [Theory]
    [InlineData(3)]
    [InlineData(-5)]
    [InlineData(20000)]
    public void Bad_lengths_are_invalid(int len)
    {
        var buf = new MessageBuffer(10000);
        var b = new byte[8];
        BinaryPrimitives.WriteInt32BigEndian(b, len);
        buf.Append(b);
        Assert.Equal(ReadResult.Invalid, buf.TryReadUntyped(out _));
        var t = new MessageBuffer(10000);
        t.Append([(byte)'p', .. b]);
        Assert.Equal(ReadResult.Invalid, t.TryReadTyped(out _, out _));
    }

    [Fact]
    public void Typed_messages_come_out_one_by_one_and_leftovers_are_kept()
    {
        var buf = new MessageBuffer(1 << 20);
        var a = PgMessages.Query("select 1");
        var b = PgMessages.Password("pw");
        buf.Append([.. a, .. b, 1, 2]);
        Assert.Equal(ReadResult.Ok, buf.TryReadTyped(out var t1, out var b1));
        Assert.Equal((byte)'Q', t1);
        Assert.Equal("select 1", Payload.CString(b1.Span, out _));
        Assert.Equal(ReadResult.Ok, buf.TryReadTyped(out var t2, out _));
        Assert.Equal((byte)'p', t2);
        Assert.Equal(ReadResult.NeedMore, buf.TryReadTyped(out _, out _));
        Assert.Equal([1, 2], buf.TakeRemaining());
    }

    [Fact]
    public void Error_response_fields_round_trip()
    {
        var e = PgMessages.Error("FATAL", "28P01", "password authentication failed for user \"x\"", detail: "d");
        Assert.Equal((byte)'E', e[0]);
        var f = Payload.ErrorFields(e.AsSpan(5));
        Assert.Equal("FATAL", f['S']);
        Assert.Equal("28P01", f['C']);
        Assert.Equal("password authentication failed for user \"x\"", f['M']);
        Assert.Equal("d", f['D']);
        Assert.Equal(BinaryPrimitives.ReadInt32BigEndian(e.AsSpan(1)) + 1, e.Length);
    }
}
