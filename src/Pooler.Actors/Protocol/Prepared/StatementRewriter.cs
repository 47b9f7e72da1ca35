using System.Text;

namespace Pooler.Actors.Protocol.Prepared;

/// <summary>
/// Rewrites what a client sends a server so its named statements work on whichever server it is linked to:
/// names become server names (<see cref="ExtendedMessages.ServerName"/>), a statement is prepared on a server
/// the first time it is used there, and Parse and Close that the server need not see are replaced by a Close of a
/// portal that does not exist, so PostgreSQL itself answers in the right place (see <see cref="ResponsePlan"/>).
/// One per link direction; works on whole messages.
/// </summary>
public sealed class StatementRewriter(ClientStatements client, StatementCache server, ResponsePlan plan)
{
    /// <summary>A portal no client uses: closing it is answered by CloseComplete and changes nothing.</summary>
    public const string NoPortal = "PLR_none";

    private readonly List<string> _unclosed = [];

    /// <summary>
    /// Appends to <paramref name="output"/> what goes to the server for one client message (<paramref name="message"/>:
    /// header and body). Unnamed statements, portals and every other message pass unchanged.
    /// </summary>
    public void Rewrite(ReadOnlySpan<byte> message, PgWriter output)
    {
        var type = message[0];
        var body = message[5..];
        if (_unclosed.Count > 0 && type != MsgType.Terminate)
        {
            foreach (var name in _unclosed)
                if (!server.Contains(name)) Evict(name, output); // unless it was prepared again meanwhile
            _unclosed.Clear();
        }
        switch (type)
        {
            case MsgType.Parse:
                if (!ExtendedMessages.TryReadParse(body, out var name, out var definition, out _) || name.Length == 0)
                {
                    plan.Add(ResponsePlan.Sent.ClientParse); // the server answers (or refuses) it as sent
                    output.Bytes(message);
                    return;
                }
                var statement = client.Add(name, definition);
                if (server.Touch(statement.ServerName))
                {
                    StandIn(output, ResponsePlan.Sent.ParseStandIn, statement.ServerName, name);
                    return;
                }
                Evict(server.Add(statement.ServerName), output);
                plan.Add(ResponsePlan.Sent.ClientParse, statement.ServerName, name);
                ExtendedMessages.Parse(output, statement.ServerName, definition);
                return;
            case MsgType.Bind:
                if (ExtendedMessages.TryReadBind(body, out var portal, out var stmt, out var rest) && stmt.Length > 0
                    && client.TryGet(stmt, out var bound))
                {
                    EnsurePrepared(bound, output);
                    ExtendedMessages.Bind(output, portal, bound.ServerName, rest);
                    return;
                }
                output.Bytes(message); // unnamed, or unknown: PostgreSQL's own 26000 names the client's statement
                return;
            case MsgType.Describe:
                if (ExtendedMessages.TryReadTarget(body, out var kind, out var described) && kind == ExtendedMessages.Statement
                    && described.Length > 0 && client.TryGet(described, out var d))
                {
                    EnsurePrepared(d, output);
                    ExtendedMessages.Target(output, MsgType.Describe, kind, d.ServerName);
                    return;
                }
                output.Bytes(message);
                return;
            case MsgType.Close:
                if (ExtendedMessages.TryReadTarget(body, out var closeKind, out var closed) && closeKind == ExtendedMessages.Statement && closed.Length > 0)
                {
                    // the server keeps it for other clients; closing an unknown name is no error in PostgreSQL either
                    client.Remove(closed);
                    StandIn(output, ResponsePlan.Sent.ClientClose, null);
                    return;
                }
                plan.Add(ResponsePlan.Sent.ClientClose);
                output.Bytes(message);
                return;
            case MsgType.Query:
                if (DropsAllStatements(body))
                {
                    client.Clear();
                    server.Clear();
                }
                plan.Add(ResponsePlan.Sent.Sync);
                output.Bytes(message);
                return;
            case MsgType.Sync or MsgType.FunctionCall:
                plan.Add(ResponsePlan.Sent.Sync);
                output.Bytes(message);
                return;
            default:
                output.Bytes(message);
                return;
        }
    }

    private void EnsurePrepared(ClientStatement statement, PgWriter output)
    {
        if (server.Touch(statement.ServerName)) return;
        Evict(server.Add(statement.ServerName), output);
        plan.Add(ResponsePlan.Sent.AddedParse, statement.ServerName);
        ExtendedMessages.Parse(output, statement.ServerName, statement.Definition);
    }

    private void Evict(string? evicted, PgWriter output)
    {
        if (evicted == null) return;
        plan.Add(ResponsePlan.Sent.AddedClose, evicted);
        ExtendedMessages.Target(output, MsgType.Close, ExtendedMessages.Statement, evicted);
    }

    private void StandIn(PgWriter output, ResponsePlan.Sent kind, string? serverName, string? clientName = null)
    {
        plan.Add(kind, serverName, clientName);
        ExtendedMessages.Target(output, MsgType.Close, ExtendedMessages.Portal, NoPortal);
    }

    /// <summary>Applies what an error undid (<see cref="ResponsePlan.OnServerMessage"/>) to the server's cache and the client's names.</summary>
    public void Apply(PlanEffects effects)
    {
        foreach (var s in effects.NotPrepared) server.Remove(s);
        // an eviction that did not happen: the server still has it, so the next message closes it again
        _unclosed.AddRange(effects.NotClosed);
        foreach (var c in effects.ForgottenClientNames) client.Remove(c);
        effects.Clear();
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
