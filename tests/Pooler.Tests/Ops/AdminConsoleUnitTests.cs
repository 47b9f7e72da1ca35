using System.Buffers.Binary;
using System.Text;
using Pooler.Actors.Config;
using Pooler.Actors.Ops;
using Pooler.Actors.Pooling;
using Xunit;

namespace Pooler.Tests.Ops;

/// <summary>The console's plain code: parsing, permissions, wire bytes, and the averages of SHOW STATS.</summary>
public sealed class AdminConsoleUnitTests
{
    [Theory]
    [InlineData("SHOW POOLS", "SHOW", "POOLS", null)]
    [InlineData("  show   pools ; ", "SHOW", "POOLS", null)]
    [InlineData("show stats_totals;", "SHOW", "STATS_TOTALS", null)]
    [InlineData("PAUSE", "PAUSE", null, null)]
    [InlineData("pause mydb", "PAUSE", null, "mydb")]
    [InlineData("KILL mydb", "KILL", null, "mydb")]
    [InlineData("wait_close", "WAIT_CLOSE", null, null)]
    [InlineData("RELOAD;", "RELOAD", null, null)]
    [InlineData("SHOW PEER_POOLS", "SHOW", "PEER_POOLS", null)]
    public void Commands_parse_as_pgbouncer_reads_them(string sql, string verb, string? subject, string? db)
    {
        var cmd = AdminConsole.Parse(sql, out var error);
        Assert.Null(error);
        Assert.Equal((verb, subject, db), (cmd!.Verb, cmd.Subject, cmd.Database));
    }

    [Theory]
    [InlineData("SHOW", "invalid command 'SHOW', use SHOW HELP;")]
    [InlineData("SHOW POOLS app", "invalid command 'SHOW POOLS app', use SHOW HELP;")]
    [InlineData("SELECT 1", "invalid command 'SELECT 1', use SHOW HELP;")]
    [InlineData("", "invalid command '', use SHOW HELP;")]
    [InlineData("SHOW VERSION; SHOW STATE", "invalid command 'SHOW VERSION; SHOW STATE', use SHOW HELP;")]
    [InlineData("KILL", "a database is required")]
    [InlineData("RELOAD now", "invalid command 'RELOAD now', use SHOW HELP;")]
    [InlineData("PAUSE a b", "invalid command 'PAUSE a b', use SHOW HELP;")]
    public void Anything_else_gets_pgbouncers_message(string sql, string message)
    {
        Assert.Null(AdminConsole.Parse(sql, out var error));
        Assert.Equal(message, error);
    }

    [Fact]
    public void Stats_users_may_only_show()
    {
        var show = AdminConsole.Parse("SHOW POOLS", out _)!;
        var pause = AdminConsole.Parse("PAUSE", out _)!;
        Assert.True(AdminConsole.Allowed(show, ConsoleRole.Stats));
        Assert.False(AdminConsole.Allowed(pause, ConsoleRole.Stats));
        Assert.True(AdminConsole.Allowed(pause, ConsoleRole.Admin));
        Assert.False(AdminConsole.Allowed(show, ConsoleRole.None));
    }

    [Fact]
    public void A_result_is_row_description_data_rows_command_complete_and_ready()
    {
        var rs = new ResultSet(("name", PgType.Text), ("n", PgType.Int4)).Add("a", 1).Add(null, 22);
        var bytes = AdminConsole.Rows(rs);
        var msgs = Split(bytes);
        Assert.Equal("TDDCZ", string.Concat(msgs.Select(m => m.Type)));
        // RowDescription: 2 fields; "name" text(25) size -1, "n" int4(23) size 4, text format
        var t = msgs[0].Body;
        Assert.Equal(2, BinaryPrimitives.ReadInt16BigEndian(t));
        Assert.Equal("name", Encoding.ASCII.GetString(t, 2, 4));
        Assert.Equal(25, BinaryPrimitives.ReadInt32BigEndian(t.AsSpan(2 + 5 + 6)));
        Assert.Equal(-1, BinaryPrimitives.ReadInt16BigEndian(t.AsSpan(2 + 5 + 10)));
        Assert.Equal(23, BinaryPrimitives.ReadInt32BigEndian(t.AsSpan(2 + 5 + 18 + 2 + 6)));
        // second DataRow: NULL (-1) then "22"
        var d = msgs[2].Body;
        Assert.Equal(-1, BinaryPrimitives.ReadInt32BigEndian(d.AsSpan(2)));
        Assert.Equal("22", Encoding.ASCII.GetString(d, 2 + 4 + 4, 2));
        Assert.Equal("SHOW\0", Encoding.ASCII.GetString(msgs[3].Body));
        Assert.Equal((byte)'I', msgs[4].Body[0]);
    }

    [Fact]
    public void Errors_carry_only_severity_sqlstate_and_message_then_ready()
    {
        var msgs = Split(AdminConsole.Error("admin access needed"));
        Assert.Equal("EZ", string.Concat(msgs.Select(m => m.Type)));
        Assert.Equal("SERROR\0C08P01\0Madmin access needed\0\0", Encoding.ASCII.GetString(msgs[0].Body));
    }

    [Fact]
    public void Averages_are_per_second_for_counts_and_per_transaction_for_times()
    {
        var info = new PoolInfo("app", "u", "transaction", 20, 0, 0, 0, "h", 5432, "app", false, 0, new PoolTotals(100, 300, 1000, 5000, 900, 800, 400, 7, 3, 250));
        var period = new PoolTotals(20, 60, 200, 1000, 180, 120, 40, 5, 2, 50); // over 10 s
        var node = new NodeReport("n", "", ["pooler"], "v", DateTime.UtcNow, false, true, 0, 0,
            [new PoolReport(info, 1, 0, 0, 1, 0, 0, 0, period, 10, "n")], null, null, new Dictionary<string, long>());
        var row = ConsoleTables.Stats(node).Rows.Single();
        // totals (with client parses, server parses, binds), then avg_xact_count 2/s, avg_query_count 6/s, recv 20/s, sent 100/s,
        // xact_time 9 us, query_time 2 us, wait 2 us, and parses and binds per second (0.5 rounds to even: 0)
        Assert.Equal(new object?[] { "app", 100L, 300L, 1000L, 5000L, 900L, 800L, 400L, 7L, 3L, 250L, 2L, 6L, 20L, 100L, 9L, 2L, 2L, 0L, 0L, 5L }, row);
    }

    [Fact]
    public void A_paused_exchange_gives_no_server_and_resume_pairs_waiters_with_idle_servers()
    {
        var ex = new PoolExchange();
        var server = new ServerHandle(Akka.Actor.ActorRefs.Nobody, Akka.Actor.ActorRefs.Nobody, DateTime.UtcNow, 0);
        Assert.Null(ex.TakeWaiterOrPark(server)); // parked idle
        ex.Paused = true;
        Assert.Null(ex.TryTakeIdle());
        var w = new Waiter(Akka.Actor.ActorRefs.Nobody, Akka.Actor.ActorRefs.Nobody, new ClientParams());
        Assert.Null(ex.TakeOrQueue(w, out _));
        Assert.Equal(1, ex.WaitingCount);
        ex.Paused = false;
        var pair = Assert.Single(ex.MatchWaiters());
        Assert.Same(w, pair.Waiter);
        Assert.Same(server, pair.Server);
        Assert.Equal(0, ex.WaitingCount);
    }

    private static List<(char Type, byte[] Body)> Split(byte[] bytes)
    {
        var list = new List<(char, byte[])>();
        for (var i = 0; i < bytes.Length;)
        {
            var len = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(i + 1));
            list.Add(((char)bytes[i], bytes.AsSpan(i + 5, len - 4).ToArray()));
            i += 1 + len;
        }
        return list;
    }
}
