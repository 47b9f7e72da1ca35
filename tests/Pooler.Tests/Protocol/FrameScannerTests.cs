using Pooler.Actors.Protocol;
using Xunit;

namespace Pooler.Tests.Protocol;

public class FrameScannerTests
{
    private static byte[] Msg(char type, params byte[] body)
    {
        var len = body.Length + 4;
        return [(byte)type, (byte)(len >> 24), (byte)(len >> 16), (byte)(len >> 8), (byte)len, .. body];
    }

    private static List<(ScanEvent Ev, char Type, int Start, string Body)> Scan(FrameScanner s, params byte[][] chunks)
    {
        var events = new List<(ScanEvent, char, int, string)>();
        foreach (var chunk in chunks)
        {
            var pos = 0;
            while (true)
            {
                var ev = s.Next(chunk, ref pos);
                if (ev == ScanEvent.End) break;
                events.Add((ev, (char)s.Type, s.StartInChunk, ev == ScanEvent.Body ? System.Text.Encoding.ASCII.GetString(s.Body) : ""));
                if (ev == ScanEvent.Invalid) return events;
            }
        }
        return events;
    }

    [Fact]
    public void Finds_every_header_in_one_chunk()
    {
        var s = new FrameScanner([], 1 << 20);
        var data = Msg('P', 1, 2, 3).Concat(Msg('B')).Concat(Msg('E', 0, 0, 0, 0, 0)).Concat(Msg('S')).ToArray();
        var ev = Scan(s, data);
        Assert.Equal(["P", "B", "E", "S"], ev.Select(e => e.Type.ToString()));
        Assert.Equal([0, 8, 13, 23], ev.Select(e => e.Start));
        Assert.True(s.AtBoundary);
    }

    [Fact]
    public void Headers_and_bodies_split_at_every_byte_are_found_once()
    {
        var data = Msg('Z', (byte)'I').Concat(Msg('S', (byte)'a', 0, (byte)'b', 0)).Concat(Msg('D', 9, 9, 9)).Concat(Msg('Z', (byte)'T')).ToArray();
        for (var cut = 0; cut <= data.Length; cut++)
        {
            var s = new FrameScanner([(byte)'Z', (byte)'S'], 1 << 20);
            var ev = Scan(s, data[..cut], data[cut..]);
            var bodies = ev.Where(e => e.Ev == ScanEvent.Body).Select(e => e.Type + ":" + e.Body).ToArray();
            Assert.Equal(["Z:I", "S:a\0b\0", "Z:T"], bodies);
            Assert.Equal(4, ev.Count(e => e.Ev == ScanEvent.Header));
        }
    }

    [Fact]
    public void A_header_split_across_chunks_reports_a_negative_start()
    {
        var s = new FrameScanner([], 1 << 20);
        var m = Msg('X');
        var ev = Scan(s, m[..2], m[2..]);
        Assert.Single(ev);
        Assert.Equal(-2, ev[0].Start);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    [InlineData(2000)]
    public void Lengths_below_4_or_above_the_limit_are_invalid(int len)
    {
        var s = new FrameScanner([], 1000);
        byte[] data = [(byte)'Q', (byte)(len >> 24), (byte)(len >> 16), (byte)(len >> 8), (byte)len, 0];
        Assert.Equal(ScanEvent.Invalid, Scan(s, data).Last().Ev);
    }

    [Fact]
    public void Large_bodies_are_skipped_without_capture()
    {
        var s = new FrameScanner([(byte)'d'], 1 << 20, maxCapture: 4);
        var data = Msg('d', new byte[100]).Concat(Msg('c')).ToArray();
        var ev = Scan(s, data[..50], data[50..]);
        Assert.Equal(["Header:d", "Header:c"], ev.Select(e => $"{e.Ev}:{e.Type}"));
    }
}
