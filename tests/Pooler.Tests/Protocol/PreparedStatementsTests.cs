using System.Buffers.Binary;
using System.Text;
using Pooler.Actors.Protocol;
using Pooler.Actors.Protocol.Prepared;
using Xunit;
using static Pooler.Tests.Infrastructure.ExtendedProtocol;
using Sent = Pooler.Actors.Protocol.Prepared.ResponsePlan.Sent;

namespace Pooler.Tests.Protocol;

/// <summary>Byte-level tests of the pieces that rename prepared statements in transaction pooling.</summary>
public sealed class PreparedStatementsTests
{
    /// <summary>A Parse body: name, query, parameter type OIDs.</summary>
    private static byte[] ParseBody(string name, string query, params int[] types) => Parse(name, query, types)[5..];

    /// <summary>One message built by <paramref name="build"/>.</summary>
    private static byte[] Built(Action<PgWriter> build)
    {
        var w = new PgWriter();
        build(w);
        return w.ToArray();
    }

    private static ReadOnlySpan<byte> Body(byte[] message, byte type)
    {
        Assert.Equal(type, message[0]);
        Assert.Equal(message.Length - 1, BinaryPrimitives.ReadInt32BigEndian(message.AsSpan(1)));
        return message.AsSpan(5);
    }

    [Fact]
    public void Parse_is_read_and_rebuilt_under_another_name_with_the_same_definition()
    {
        var body = ParseBody("stmt_1", "select $1::int + $2", 23, 23);
        Assert.True(ExtendedMessages.TryReadParse(body, out var name, out var definition, out var error), error);
        Assert.Equal("stmt_1", name);
        Assert.Equal(body.AsSpan(7).ToArray(), definition.ToArray());

        var renamed = Built(w => ExtendedMessages.Parse(w, "PLR_x", body.AsSpan(7)));
        Assert.Equal(ParseBody("PLR_x", "select $1::int + $2", 23, 23), Body(renamed, MsgType.Parse).ToArray());
    }

    [Theory]
    [InlineData(new byte[] { (byte)'a' })]                                  // no name terminator
    [InlineData(new byte[] { (byte)'a', 0, (byte)'q' })]                    // no query terminator
    [InlineData(new byte[] { (byte)'a', 0, (byte)'q', 0 })]                 // no parameter count
    [InlineData(new byte[] { (byte)'a', 0, (byte)'q', 0, 0, 1, 0, 0 })]     // one type announced, 2 bytes given
    [InlineData(new byte[] { (byte)'a', 0, (byte)'q', 0, 0xff, 0xff })]     // negative count
    public void Malformed_parse_bodies_are_refused(byte[] body)
    {
        Assert.False(ExtendedMessages.TryReadParse(body, out _, out _, out var error));
        Assert.False(string.IsNullOrEmpty(error));
    }

    [Fact]
    public void Bind_keeps_formats_and_values_when_the_statement_is_renamed()
    {
        byte[] rest = [0, 1, 0, 0, 0, 1, 0, 0, 0, 2, (byte)'4', (byte)'2', 0, 0];
        byte[] body = [.. Z("portal"), .. Z("stmt_1"), .. rest];
        Assert.True(ExtendedMessages.TryReadBind(body, out var portal, out var statement, out var tail));
        Assert.Equal(("portal", "stmt_1"), (portal, statement));
        Assert.Equal(rest, tail.ToArray());
        Assert.Equal([.. Z("portal"), .. Z("PLR_y"), .. rest], Body(Built(w => ExtendedMessages.Bind(w, "portal", "PLR_y", rest)), MsgType.Bind).ToArray());
        Assert.False(ExtendedMessages.TryReadBind([(byte)'p', 0, (byte)'s'], out _, out _, out _));
    }

    [Fact]
    public void Describe_and_close_targets_round_trip()
    {
        byte[] body = [(byte)'S', .. Z("stmt_1")];
        Assert.True(ExtendedMessages.TryReadTarget(body, out var kind, out var name));
        Assert.Equal((ExtendedMessages.Statement, "stmt_1"), (kind, name));
        Assert.Equal(body, Body(Built(w => ExtendedMessages.Target(w, MsgType.Describe, kind, name)), MsgType.Describe).ToArray());
        Assert.Equal([(byte)'P', 0], Body(Built(w => ExtendedMessages.Target(w, MsgType.Close, ExtendedMessages.Portal, "")), MsgType.Close).ToArray());
        Assert.False(ExtendedMessages.TryReadTarget([(byte)'X', 0], out _, out _));
        Assert.False(ExtendedMessages.TryReadTarget([(byte)'S', (byte)'a', 0, (byte)'b'], out _, out _)); // bytes after the name
    }

    [Fact]
    public void Server_names_depend_on_the_query_and_the_parameter_types_only()
    {
        static string NameOf(string query, params int[] types)
        {
            Assert.True(ExtendedMessages.TryReadParse(ParseBody("any", query, types), out _, out var d, out _));
            return ExtendedMessages.ServerName(d);
        }
        var a = NameOf("select $1", 23);
        Assert.Equal(a, NameOf("select $1", 23));
        Assert.NotEqual(a, NameOf("select $1", 25));
        Assert.NotEqual(a, NameOf("select  $1", 23));
        Assert.Matches("^PLR_[0-9a-f]{24}$", a); // well under PostgreSQL's 63-byte identifier limit
    }

    [Fact]
    public void The_cache_evicts_the_least_recently_used_statement()
    {
        var c = new StatementCache(2);
        Assert.Null(c.Add("a"));
        Assert.Null(c.Add("b"));
        Assert.True(c.Touch("a"));   // b is now the oldest
        Assert.Equal("b", c.Add("c"));
        Assert.False(c.Touch("b"));
        Assert.Null(c.Add("a"));      // already there: nothing to evict
        Assert.Equal(2, c.Count);
        c.Remove("a");
        Assert.Equal(1, c.Count);
        c.Clear();
        Assert.Equal(0, c.Count);
        Assert.Throws<ArgumentOutOfRangeException>(() => new StatementCache(0));
    }

    [Fact]
    public void The_cache_stays_bounded_under_a_thousand_distinct_statements()
    {
        var c = new StatementCache(200);
        var evicted = new List<string>();
        for (var i = 0; i < 1000; i++)
            if (c.Add($"s{i}") is { } e) evicted.Add(e);
        Assert.Equal(200, c.Count);
        Assert.Equal(800, evicted.Count);
        Assert.Equal(Enumerable.Range(0, 800).Select(i => $"s{i}"), evicted); // oldest first
        Assert.True(c.Touch("s999"));
    }

    [Fact]
    public void Client_statements_map_names_to_server_names()
    {
        var s = new ClientStatements();
        Assert.True(ExtendedMessages.TryReadParse(ParseBody("q1", "select 1"), out _, out var d, out _));
        var st = s.Add("q1", d);
        Assert.True(s.TryGet("q1", out var got));
        Assert.Equal(st, got);
        Assert.Equal(ExtendedMessages.ServerName(d), got.ServerName);
        Assert.Equal(d.ToArray(), got.Definition);
        Assert.True(s.Remove("q1"));
        Assert.False(s.TryGet("q1", out _));
    }

    private static (List<ResponseAction> Actions, List<string> NotPrepared, List<string> NotClosed) Feed(ResponsePlan plan, string types)
    {
        var effects = new PlanEffects();
        var actions = types.Select(t => plan.OnServerMessage((byte)t, effects)).ToList();
        return (actions, effects.NotPrepared, effects.NotClosed);
    }

    [Fact]
    public void Added_messages_are_swallowed_and_stand_ins_answer_as_parse_complete_in_order()
    {
        var plan = new ResponsePlan();
        // client: Parse(q1) Bind Execute Sync; the server already had q1, and another statement was evicted first
        plan.Add(Sent.AddedClose, "PLR_old");
        plan.Add(Sent.ParseStandIn, "PLR_q1");
        plan.Add(Sent.Sync);
        var (actions, np, nc) = Feed(plan, "3" + "3" + "2" + "DC" + "Z");
        Assert.Equal([ResponseAction.Swallow, ResponseAction.AsParseComplete, ResponseAction.Pass, ResponseAction.Pass,
            ResponseAction.Pass, ResponseAction.Pass], actions);
        Assert.Empty(np);
        Assert.Empty(nc);
        Assert.Equal(0, plan.Pending);

        // next transaction on another server: Bind(q2) needs q2 prepared there first
        plan.Add(Sent.AddedParse, "PLR_q2");
        plan.Add(Sent.ClientParse, "PLR_q3");
        plan.Add(Sent.ClientClose);
        plan.Add(Sent.Sync);
        (actions, _, _) = Feed(plan, "1" + "2" + "1" + "3" + "Z");
        Assert.Equal([ResponseAction.Swallow, ResponseAction.Pass, ResponseAction.Pass, ResponseAction.Pass, ResponseAction.Pass], actions);
    }

    [Fact]
    public void An_error_skips_to_sync_and_reports_what_was_not_prepared_or_not_closed()
    {
        var plan = new ResponsePlan();
        plan.Add(Sent.ClientParse, "PLR_bad");   // fails: syntax error
        plan.Add(Sent.AddedClose, "PLR_evicted");
        plan.Add(Sent.AddedParse, "PLR_next");
        plan.Add(Sent.Sync);
        plan.Add(Sent.ClientParse, "PLR_after");  // a second pipelined batch is answered normally
        plan.Add(Sent.Sync);
        var (actions, np, nc) = Feed(plan, "E" + "Z" + "1" + "Z");
        Assert.All(actions, a => Assert.Equal(ResponseAction.Pass, a));
        Assert.Equal(["PLR_bad", "PLR_next"], np);
        Assert.Equal(["PLR_evicted"], nc);
        Assert.Equal(0, plan.Pending);
    }

    [Fact]
    public void Answers_the_plan_does_not_expect_are_relayed_unchanged()
    {
        var plan = new ResponsePlan();
        var (actions, _, _) = Feed(plan, "123Z");
        Assert.All(actions, a => Assert.Equal(ResponseAction.Pass, a));
        plan.Add(Sent.AddedClose, "x");
        Assert.Equal(ResponseAction.Pass, Feed(plan, "1").Actions[0]); // a ParseComplete where a Close was expected
        Assert.Equal(1, plan.Pending);
        plan.Clear();
        Assert.Equal(0, plan.Pending);
    }

    /// <summary>A client pipeline with every kind of statement message, a large Bind and a large query among them.</summary>
    private static byte[] Pipeline()
    {
        var big = new string('x', StatementRelay.BindHead * 2);
        byte[][] messages =
        [
            Parse("a", "select $1::text", 25),
            Bind("a", "small"), Execute,
            Bind("a", big), Execute,  // its head only is read
            Bind("", big), Execute,   // unnamed: unchanged
            Describe("a"), Close("a"),
            Parse("", "select 1"), Sync,
            Query("select '" + big + "'"),                            // too long to be read
            Query("DISCARD ALL"),
        ];
        return messages.SelectMany(m => m).ToArray();
    }

    private static (byte[] Output, string Plan) RelayInChunks(byte[] input, int chunk)
    {
        var relay = new StatementRelay(int.MaxValue);
        var server = new ServerStatements(10);
        var output = new List<byte>();
        for (var at = 0; at < input.Length; at += chunk)
            output.AddRange(relay.Relay(Akka.IO.ByteString.FromBytes(input.AsSpan(at, Math.Min(chunk, input.Length - at)).ToArray()), server).ToArray());
        return (output.ToArray(), server.Plan.Pending.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public void The_relay_writes_the_same_bytes_whatever_the_chunks_and_renames_a_large_Binds_head()
    {
        var input = Pipeline();
        var (whole, plan) = RelayInChunks(input, input.Length);
        foreach (var chunk in new[] { 1, 2, 3, 4, 5, 6, 7, 13, 64, 1000, 65536 + 7 })
        {
            var (output, chunkPlan) = RelayInChunks(input, chunk);
            Assert.True(whole.AsSpan().SequenceEqual(output), $"chunks of {chunk} bytes changed the output");
            Assert.Equal(plan, chunkPlan);
        }

        // what the server gets: messages re-framed correctly, the named ones renamed, the rest as sent
        var types = new List<(char Type, string Head)>();
        for (var at = 0; at < whole.Length;)
        {
            var len = BinaryPrimitives.ReadInt32BigEndian(whole.AsSpan(at + 1));
            var body = whole.AsSpan(at + 5, len - 4);
            types.Add(((char)whole[at], Encoding.UTF8.GetString(body[..Math.Min(40, body.Length)]).Replace('\0', '|')));
            at += 1 + len;
        }
        var name = ExtendedMessages.ServerName(ParseBody("", "select $1::text", 25).AsSpan(1));
        Assert.Equal("P B E B E B E D C P S Q Q", string.Join(' ', types.Select(t => t.Type)));
        Assert.StartsWith(name + "|", types[0].Head);
        Assert.StartsWith("|" + name + "|", types[1].Head);
        Assert.StartsWith("|" + name + "|", types[3].Head);    // the large Bind: renamed, its values follow unchanged
        Assert.StartsWith("||", types[5].Head);                 // unnamed
        Assert.Equal("S" + name + "|", types[7].Head);          // Describe renamed
        Assert.Equal("P" + StatementRewriter.NoPortal + "|", types[8].Head); // Close answered by a stand-in
        // four names "a" became the server name, the Close names the stand-in portal: nothing else changed in length
        Assert.Equal(input.Length + 4 * (name.Length - 1) + StatementRewriter.NoPortal.Length - 1, whole.Length);
    }
}
