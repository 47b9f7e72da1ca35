using System.Text;

namespace Pooler.Actors.Protocol.Prepared;

/// <summary>
/// Rewrites what a client sends a server so its named statements work on whichever server it is linked to:
/// names become server names (<see cref="ExtendedMessages.ServerName"/>), a statement is prepared on a server
/// the first time it is used there, and Parse and Close that the server need not see are replaced by a Close of a
/// portal that does not exist, so PostgreSQL itself answers in the right place (see <see cref="ResponsePlan"/>).
/// Plain code over one client's names and one server's statements; the caller holds <see cref="ServerStatements.Gate"/>.
/// </summary>
public static class StatementRewriter
{
    /// <summary>A portal no client uses: closing it is answered by CloseComplete and changes nothing.</summary>
    public const string NoPortal = "PLR_none";
    /// <summary>A statement no server has (server names are "PLR_" and 24 hex digits).</summary>
    public const string NoStatement = "PLR_none";

    /// <summary>
    /// For one whole client message of <paramref name="type"/>: writes what goes to the server in its place to
    /// <paramref name="output"/> and returns true, or returns false when it goes unchanged (unnamed statements,
    /// portals, every other message). Either way the answers it will get are added to the server's plan.
    /// </summary>
    public static bool Rewrite(ClientStatements client, ServerStatements server, byte type, ReadOnlySpan<byte> body, PgWriter output,
        IStatementCounters? counters = null)
    {
        var wrote = CloseUnclosed(server, output);
        switch (type)
        {
            case MsgType.Parse:
                if (!ExtendedMessages.TryReadParse(body, out var name, out var definition, out _) || name.Length == 0)
                {
                    server.Plan.Add(ResponsePlan.Sent.ClientParse); // the server answers (or refuses) it as sent
                    return Unchanged(wrote, type, body, output);
                }
                counters?.ClientParse();
                if (client.TryGet(name, out _))
                {
                    // PostgreSQL refuses a name in use and skips to Sync: a Describe of a statement no server has
                    // makes the server do both in the same place; the client gets 42P05 for its own name
                    server.Plan.Add(ResponsePlan.Sent.DuplicateParse, null, name);
                    ExtendedMessages.Target(output, MsgType.Describe, ExtendedMessages.Statement, NoStatement);
                    return true;
                }
                var statement = client.Add(name, definition);
                if (server.Cache.Touch(statement.ServerName))
                {
                    StandIn(server, output, ResponsePlan.Sent.ParseStandIn, statement.ServerName, name);
                    return true;
                }
                Evict(server, server.Cache.Add(statement.ServerName), output);
                counters?.ServerParse();
                server.Plan.Add(ResponsePlan.Sent.ClientParse, statement.ServerName, name);
                ExtendedMessages.Parse(output, statement.ServerName, definition);
                return true;
            case MsgType.Bind:
                if (ExtendedMessages.TryReadBind(body, out var portal, out var stmt, out var rest) && stmt.Length > 0
                    && client.TryGet(stmt, out var bound))
                {
                    counters?.Bind();
                    EnsurePrepared(server, bound, output, counters);
                    server.Plan.Add(ResponsePlan.Sent.Bind, bound.ServerName);
                    ExtendedMessages.Bind(output, portal, bound.ServerName, rest);
                    return true;
                }
                // unnamed, or unknown: PostgreSQL's own 26000 names the client's statement
                server.Plan.Add(ResponsePlan.Sent.Bind);
                return Unchanged(wrote, type, body, output);
            case MsgType.Describe:
                if (ExtendedMessages.TryReadTarget(body, out var kind, out var described) && kind == ExtendedMessages.Statement
                    && described.Length > 0 && client.TryGet(described, out var d))
                {
                    EnsurePrepared(server, d, output, counters);
                    ExtendedMessages.Target(output, MsgType.Describe, kind, d.ServerName);
                    return true;
                }
                return Unchanged(wrote, type, body, output);
            case MsgType.Close:
                if (ExtendedMessages.TryReadTarget(body, out var closeKind, out var closed) && closeKind == ExtendedMessages.Statement && closed.Length > 0)
                {
                    // the server keeps it for other clients; closing an unknown name is no error in PostgreSQL either
                    client.Remove(closed);
                    StandIn(server, output, ResponsePlan.Sent.ClientClose, null);
                    return true;
                }
                server.Plan.Add(ResponsePlan.Sent.ClientClose);
                return Unchanged(wrote, type, body, output);
            case MsgType.Query:
                if (DropsAllStatements(body))
                {
                    client.Clear();
                    server.Clear();
                    server.Plan.Add(ResponsePlan.Sent.SyncDroppingAll);
                }
                else server.Plan.Add(ResponsePlan.Sent.Sync);
                return Unchanged(wrote, type, body, output);
            default:
                Passed(server, type);
                return Unchanged(wrote, type, body, output);
        }
    }

    /// <summary>
    /// A message that passes without being read whole (too large to capture, or not a statement message): adds the
    /// answers it will get to the plan.
    /// </summary>
    public static void Passed(ServerStatements server, byte type)
    {
        switch (type)
        {
            case MsgType.Parse: server.Plan.Add(ResponsePlan.Sent.ClientParse); break;
            case MsgType.Bind: server.Plan.Add(ResponsePlan.Sent.Bind); break;
            case MsgType.Close: server.Plan.Add(ResponsePlan.Sent.ClientClose); break;
            case MsgType.Sync or MsgType.Query or MsgType.FunctionCall: server.Plan.Add(ResponsePlan.Sent.Sync); break;
        }
    }

    /// <summary>
    /// A Bind too large to read whole: <paramref name="prefix"/> is its body's first part (names, and what fits after
    /// them); the rest follows unchanged. Writes the Bind's new header, names and the prefix's remainder, or returns false.
    /// </summary>
    public static bool RewriteBindPrefix(ClientStatements client, ServerStatements server, ReadOnlySpan<byte> prefix, int bodyLength, PgWriter output,
        IStatementCounters? counters = null)
    {
        var wrote = CloseUnclosed(server, output);
        if (!ExtendedMessages.TryReadBind(prefix, out var portal, out var stmt, out var rest) || stmt.Length == 0 || !client.TryGet(stmt, out var bound))
        {
            server.Plan.Add(ResponsePlan.Sent.Bind);
            if (!wrote) return false;
            output.Byte(MsgType.Bind).Int32(bodyLength + 4).Bytes(prefix);
            return true;
        }
        counters?.Bind();
        EnsurePrepared(server, bound, output, counters);
        server.Plan.Add(ResponsePlan.Sent.Bind, bound.ServerName);
        var names = prefix.Length - rest.Length;
        var newLength = bodyLength - names + Encoding.UTF8.GetByteCount(portal) + 1 + Encoding.UTF8.GetByteCount(bound.ServerName) + 1;
        output.Byte(MsgType.Bind).Int32(newLength + 4).CString(portal).CString(bound.ServerName).Bytes(rest);
        return true;
    }

    /// <summary>
    /// An unchanged message after added ones (an eviction's Close) must follow them in the output, so it is written
    /// too; otherwise the caller relays the original bytes.
    /// </summary>
    private static bool Unchanged(bool wroteBefore, byte type, ReadOnlySpan<byte> body, PgWriter output)
    {
        if (!wroteBefore) return false;
        output.Begin(type).Bytes(body).End();
        return true;
    }

    private static bool CloseUnclosed(ServerStatements server, PgWriter output)
    {
        if (server.Unclosed.Count == 0) return false;
        var wrote = false;
        foreach (var name in server.Unclosed)
        {
            if (server.Cache.Contains(name)) continue; // prepared again meanwhile
            Evict(server, name, output);
            wrote = true;
        }
        server.Unclosed.Clear();
        return wrote;
    }

    private static void EnsurePrepared(ServerStatements server, ClientStatement statement, PgWriter output, IStatementCounters? counters)
    {
        if (server.Cache.Touch(statement.ServerName)) return;
        Evict(server, server.Cache.Add(statement.ServerName), output);
        counters?.ServerParse();
        server.Plan.Add(ResponsePlan.Sent.AddedParse, statement.ServerName);
        ExtendedMessages.Parse(output, statement.ServerName, statement.Definition);
    }

    private static void Evict(ServerStatements server, string? evicted, PgWriter output)
    {
        if (evicted == null) return;
        server.Plan.Add(ResponsePlan.Sent.AddedClose, evicted);
        ExtendedMessages.Target(output, MsgType.Close, ExtendedMessages.Statement, evicted);
    }

    private static void StandIn(ServerStatements server, PgWriter output, ResponsePlan.Sent kind, string? serverName, string? clientName = null)
    {
        server.Plan.Add(kind, serverName, clientName);
        ExtendedMessages.Target(output, MsgType.Close, ExtendedMessages.Portal, NoPortal);
    }

    /// <summary>DEALLOCATE ALL and DISCARD ALL as a whole simple query (what drivers and resets send).</summary>
    public static bool DropsAllStatements(ReadOnlySpan<byte> queryBody)
    {
        var z = queryBody.IndexOf((byte)0);
        var text = Encoding.UTF8.GetString(z < 0 ? queryBody : queryBody[..z]).Trim().TrimEnd(';').Trim();
        var words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        return words.Length switch
        {
            2 => words[1].Equals("ALL", StringComparison.OrdinalIgnoreCase)
                 && (words[0].Equals("DEALLOCATE", StringComparison.OrdinalIgnoreCase) || words[0].Equals("DISCARD", StringComparison.OrdinalIgnoreCase)),
            3 => words[0].Equals("DEALLOCATE", StringComparison.OrdinalIgnoreCase) && words[1].Equals("PREPARE", StringComparison.OrdinalIgnoreCase)
                 && words[2].Equals("ALL", StringComparison.OrdinalIgnoreCase),
            _ => false,
        };
    }
}
