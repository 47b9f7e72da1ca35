using System.Text.RegularExpressions;
using Pooler.Actors.Config;
using Pooler.Actors.Protocol;

namespace Pooler.Actors.Ops;

public enum ConsoleRole { None, Stats, Admin }

/// <summary>One parsed console command: its verb (SHOW, PAUSE, ...), the SHOW subject, and the optional database.</summary>
public sealed record ConsoleCommand(string Verb, string? Subject, string? Database, string Text);

/// <summary>
/// PgBouncer's admin console, the parts that are plain code: who may use it, parsing a command, and
/// the wire bytes of answers and errors. Column names and types are PgBouncer 1.18's (a test compares
/// them with Debian's PgBouncer); the OpsAgent gathers the data and runs the commands.
/// </summary>
public static partial class AdminConsole
{
    public const string SimpleProtocolOnly = "extended query protocol not supported by admin console";
    public const string Version = "Pooler 0.5.0 (PgBouncer 1.18.0 compatible console)";

    /// <summary>SHOW subjects a stats user may run (every SHOW); the rest need an admin.</summary>
    public static readonly string[] ShowSubjects =
        ["HELP", "POOLS", "STATS", "STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "CLIENTS", "SERVERS", "DATABASES", "USERS", "CONFIG",
         "LISTS", "VERSION", "STATE", "CLUSTER", "VIP", "PEER_POOLS"];

    private static readonly string[] NoArg = ["RELOAD", "SHUTDOWN"];
    private static readonly string[] OptionalDb = ["PAUSE", "RESUME", "RECONNECT", "WAIT_CLOSE"];
    private static readonly string[] RequiredDb = ["KILL"];

    public static bool IsConsoleDatabase(string db) => db is "pgbouncer" or "pooler";

    public static ConsoleRole RoleOf(PoolerSettings s, string user)
        => s.AdminUsers.Contains(user) ? ConsoleRole.Admin : s.StatsUsers.Contains(user) ? ConsoleRole.Stats : ConsoleRole.None;

    /// <summary>Parses a console query; null with <paramref name="error"/> set when it is not one (PgBouncer's wording).</summary>
    public static ConsoleCommand? Parse(string sql, out string? error)
    {
        error = null;
        var text = sql.Trim();
        if (text.EndsWith(';')) text = text[..^1].TrimEnd();
        var words = Words().Split(text).Where(w => w.Length > 0).ToArray();
        var invalid = $"invalid command '{sql}', use SHOW HELP;";
        if (words.Length == 0) { error = invalid; return null; }
        var verb = words[0].ToUpperInvariant();
        if (verb == "SHOW")
        {
            if (words.Length != 2 || !ShowSubjects.Contains(words[1].ToUpperInvariant())) { error = invalid; return null; }
            return new ConsoleCommand(verb, words[1].ToUpperInvariant(), null, text);
        }
        if (NoArg.Contains(verb) && words.Length == 1) return new ConsoleCommand(verb, null, null, text);
        if (OptionalDb.Contains(verb) && words.Length <= 2) return new ConsoleCommand(verb, null, words.Length == 2 ? words[1] : null, text);
        if (RequiredDb.Contains(verb) && words.Length <= 2)
        {
            if (words.Length == 1) { error = "a database is required"; return null; }
            return new ConsoleCommand(verb, null, words[1], text);
        }
        error = invalid;
        return null;
    }

    /// <summary>Whether <paramref name="role"/> may run <paramref name="cmd"/> (stats users: SHOW only).</summary>
    public static bool Allowed(ConsoleCommand cmd, ConsoleRole role) => role == ConsoleRole.Admin || (role == ConsoleRole.Stats && cmd.Verb == "SHOW");

    [GeneratedRegex(@"\s+")]
    private static partial Regex Words();

    /// <summary>What a console login gets after AuthenticationOk: PgBouncer's parameters, a cancel key, ReadyForQuery.</summary>
    public static byte[] Welcome(int pid, int secret)
    {
        var w = new PgWriter(256);
        foreach (var (k, v) in new[] { ("server_version", "1.18.0/bouncer"), ("client_encoding", "UTF8"), ("server_encoding", "UTF8"),
                     ("DateStyle", "ISO"), ("TimeZone", "GMT"), ("standard_conforming_strings", "on"), ("is_superuser", "on") })
            PgMessages.AppendParameterStatus(w, k, v);
        PgMessages.AppendBackendKeyData(w, pid, secret);
        w.Bytes(PgMessages.ReadyForQuery((byte)'I'));
        return w.ToArray();
    }

    /// <summary>A console error (PgBouncer sends severity, SQLSTATE and message only) and ReadyForQuery.</summary>
    public static byte[] Error(string message, string sqlState = SqlState.ProtocolViolation)
    {
        var w = new PgWriter(64 + message.Length);
        w.Begin(MsgType.ErrorResponse).Byte((byte)'S').CString("ERROR").Byte((byte)'C').CString(sqlState).Byte((byte)'M').CString(message).Byte(0).End();
        w.Bytes(PgMessages.ReadyForQuery((byte)'I'));
        return w.ToArray();
    }

    /// <summary>A command that returns no rows: its tag and ReadyForQuery.</summary>
    public static byte[] Tag(string tag)
    {
        var w = new PgWriter(32);
        ResultSet.CommandComplete(w, tag);
        w.Bytes(PgMessages.ReadyForQuery((byte)'I'));
        return w.ToArray();
    }

    public static byte[] Rows(ResultSet rs)
    {
        var w = new PgWriter(1024);
        rs.WriteTo(w);
        w.Bytes(PgMessages.ReadyForQuery((byte)'I'));
        return w.ToArray();
    }

    public const string HelpText = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\tSHOW LISTS|STATE\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS"
        + "\n\tSHOW CLUSTER|VIP|PEER_POOLS\n\tRELOAD\n\tPAUSE [<db>]\n\tRESUME [<db>]\n\tRECONNECT [<db>]\n\tKILL <db>\n\tSHUTDOWN\n\tWAIT_CLOSE [<db>]";

    public static byte[] Help()
    {
        var w = new PgWriter(512);
        w.Begin(MsgType.NoticeResponse).Byte((byte)'S').CString("NOTICE").Byte((byte)'C').CString("00000")
            .Byte((byte)'M').CString("Console usage").Byte((byte)'D').CString(HelpText).Byte(0).End();
        ResultSet.CommandComplete(w, "SHOW");
        w.Bytes(PgMessages.ReadyForQuery((byte)'I'));
        return w.ToArray();
    }

    /// <summary>"10.0.0.5:5432" or "[::1]:5432" into address and port.</summary>
    public static (string Addr, int Port) SplitEndpoint(string endpoint)
    {
        var i = endpoint.LastIndexOf(':');
        if (i <= 0 || !int.TryParse(endpoint[(i + 1)..], out var port)) return (endpoint, 0);
        return (endpoint[..i].Trim('[', ']'), port);
    }
}
