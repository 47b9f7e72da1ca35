namespace Pooler.Actors.Protocol.Prepared;

/// <summary>What the relay does with one server message while statements are renamed.</summary>
public enum ResponseAction : byte
{
    /// <summary>Relay it as it is.</summary>
    Pass,
    /// <summary>Answers a message the pooler added (a Parse preparing the statement on this server, a Close
    /// evicting one): the client never sent it, so it must not see the answer.</summary>
    Swallow,
    /// <summary>A CloseComplete answering the stand-in for a Parse the server needed no more (the statement
    /// was prepared there already): the client gets ParseComplete (same length, type byte '1').</summary>
    AsParseComplete,
    /// <summary>The ErrorResponse answering the stand-in for a Parse of a name the client already has: the client gets
    /// PostgreSQL's "already exists" error (<see cref="ResponsePlan.Replacement"/>) in its place.</summary>
    Replace,
}

/// <summary>
/// The order of what the pooler sent a server on a client's behalf, so its answers can be matched: PostgreSQL
/// answers Parse with ParseComplete, Close with CloseComplete, Sync and Query with ReadyForQuery, in order; after an
/// error it skips everything up to the next Sync. Plain code, one per server connection, fed by both relay directions
/// of one link (the client's when it writes, the server's when it reads), so it needs the caller's ordering only.
/// </summary>
public sealed class ResponsePlan
{
    public enum Sent : byte
    {
        /// <summary>The client's own Parse (renamed): its ParseComplete goes to the client.</summary>
        ClientParse,
        /// <summary>A Parse the pooler added before a Bind or Describe: its ParseComplete is swallowed.</summary>
        AddedParse,
        /// <summary>In place of a client's Parse the server did not need: a Close of a portal that does not exist
        /// (PostgreSQL answers CloseComplete, no error), so the answer comes in the right place.</summary>
        ParseStandIn,
        /// <summary>The client's Close of a statement, answered by a Close of a portal that does not exist: the server
        /// keeps the statement for other clients.</summary>
        ClientClose,
        /// <summary>A Close the pooler added to evict a statement: its CloseComplete is swallowed.</summary>
        AddedClose,
        /// <summary>Sync or a simple Query: ends an error's skipping, answered by ReadyForQuery.</summary>
        Sync,
        /// <summary>A simple Query that drops every statement (DISCARD ALL, DEALLOCATE ALL): if it fails, what the server
        /// still has is unknown.</summary>
        SyncDroppingAll,
        /// <summary>
        /// A Parse of a name the client already has: PostgreSQL would refuse it (42P05) and skip to Sync. A Describe of a
        /// statement that does not exist stands in, so the server refuses and skips in the same place; its error is replaced.
        /// </summary>
        DuplicateParse,
        /// <summary>A Bind (of a renamed statement when it has a server name): answered by BindComplete. An error
        /// in its place for a renamed statement may mean the statement went stale on this server.</summary>
        Bind,
    }

    private readonly Queue<(Sent Kind, string? ServerName, string? ClientName)> _queue = new();
    private bool _skipping; // after an ErrorResponse, until ReadyForQuery

    public int Pending => _queue.Count;

    /// <summary>After <see cref="ResponseAction.Replace"/>: the whole ErrorResponse the client gets instead.</summary>
    public byte[]? Replacement { get; private set; }

    /// <param name="clientName">For a client's Parse: its own name, forgotten if the server does not run the Parse.</param>
    public void Add(Sent kind, string? serverName = null, string? clientName = null) => _queue.Enqueue((kind, serverName, clientName));

    /// <summary>
    /// The action for a server message of <paramref name="type"/>. After an error, <paramref name="effects"/> gets the
    /// statements whose Parse the server skipped or refused (no longer prepared there; the client's own names among them
    /// do not exist either, as in PostgreSQL), and those an added Close failed to evict (still prepared there).
    /// </summary>
    public ResponseAction OnServerMessage(byte type, PlanEffects effects) => OnServerMessage(type, default, effects);

    /// <param name="body">The message's body: for an ErrorResponse, its fields (the SQLSTATE tells a stale statement).</param>
    public ResponseAction OnServerMessage(byte type, ReadOnlySpan<byte> body, PlanEffects effects)
    {
        switch (type)
        {
            case MsgType.BindComplete:
                if (_queue.TryPeek(out var bind) && bind.Kind == Sent.Bind) _queue.Dequeue();
                return ResponseAction.Pass;
            case MsgType.ParseComplete:
            {
                var (kind, _) = Next(expectClose: false);
                return kind == Sent.AddedParse ? ResponseAction.Swallow : ResponseAction.Pass;
            }
            case MsgType.CloseComplete:
            {
                var (kind, _) = Next(expectClose: true);
                return kind switch
                {
                    Sent.AddedClose => ResponseAction.Swallow,
                    Sent.ParseStandIn => ResponseAction.AsParseComplete,
                    _ => ResponseAction.Pass,
                };
            }
            case MsgType.ErrorResponse when !_skipping:
                // the server now skips to the next Sync: nothing before it is answered
                _skipping = true;
                if (_queue.TryPeek(out var dup) && dup.Kind == Sent.DuplicateParse)
                {
                    _queue.Dequeue();
                    Replacement = PgMessages.Error("ERROR", SqlStateDuplicateStatement, $"prepared statement \"{dup.ClientName}\" already exists");
                    Drain(effects);
                    return ResponseAction.Replace;
                }
                // PostgreSQL checks a statement's result type at Bind: after DDL, the statement stays prepared but can
                // never run again there ("cached plan must not change result type"), so it is closed and prepared anew
                if (_queue.TryPeek(out var failed) && failed is { Kind: Sent.Bind, ServerName: { } stale }
                    && ErrorCode(body) == SqlStateCachedPlanChanged)
                    effects.Stale.Add(stale);
                Drain(effects);
                return ResponseAction.Pass;
            case MsgType.ReadyForQuery:
                _skipping = false;
                if (_queue.TryPeek(out var sync) && sync.Kind is Sent.Sync or Sent.SyncDroppingAll) _queue.Dequeue();
                return ResponseAction.Pass;
            default:
                return ResponseAction.Pass;
        }
    }

    /// <summary>Drops what the server skips after an error, up to the next Sync, noting what that undid.</summary>
    private void Drain(PlanEffects effects)
    {
        while (_queue.TryPeek(out var head) && head.Kind is not (Sent.Sync or Sent.SyncDroppingAll))
        {
            _queue.Dequeue();
            if (head.Kind is Sent.ClientParse or Sent.AddedParse && head.ServerName != null) effects.NotPrepared.Add(head.ServerName);
            else if (head.Kind == Sent.AddedClose && head.ServerName != null) effects.NotClosed.Add(head.ServerName);
            if (head.Kind is Sent.ClientParse or Sent.ParseStandIn && head.ClientName != null) effects.ForgottenClientNames.Add(head.ClientName);
        }
        if (_queue.TryPeek(out var end) && end.Kind == Sent.SyncDroppingAll) effects.StatementsUnknown = true;
    }

    private const string SqlStateDuplicateStatement = "42P05";

    /// <summary>0A000 is also "feature not supported"; only with this message is the statement stale.</summary>
    private const string SqlStateCachedPlanChanged = "0A000";

    private static string? ErrorCode(ReadOnlySpan<byte> body)
    {
        if (body.IsEmpty) return null;
        var f = Payload.ErrorFields(body);
        return f.GetValueOrDefault('C') == SqlStateCachedPlanChanged && f.GetValueOrDefault('M', "").Contains("cached plan must not change result type")
            ? SqlStateCachedPlanChanged : null;
    }

    private (Sent Kind, string? Name) Next(bool expectClose)
    {
        // anything answered out of the expected order means the plan and the server disagree: relay as is
        if (!_queue.TryPeek(out var head)) return (Sent.ClientParse, null);
        var isClose = head.Kind is Sent.ParseStandIn or Sent.ClientClose or Sent.AddedClose;
        var isParse = head.Kind is Sent.ClientParse or Sent.AddedParse;
        if (expectClose ? !isClose : !isParse) return (Sent.ClientParse, null);
        _queue.Dequeue();
        return (head.Kind, head.ServerName);
    }

    /// <summary>The link ended or the server was reset: nothing more is expected.</summary>
    public void Clear()
    {
        _queue.Clear();
        _skipping = false;
    }
}

/// <summary>What an error undid, for the caller to apply to the server's cache and the client's statements.</summary>
public sealed class PlanEffects
{
    public List<string> NotPrepared { get; } = [];
    public List<string> NotClosed { get; } = [];
    public List<string> ForgottenClientNames { get; } = [];
    /// <summary>Prepared on the server but unusable there (its result type changed): close it and prepare it again.</summary>
    public List<string> Stale { get; } = [];
    /// <summary>A DISCARD ALL or DEALLOCATE ALL failed: which statements the server still has is unknown.</summary>
    public bool StatementsUnknown { get; set; }

    public bool Any => NotPrepared.Count > 0 || NotClosed.Count > 0 || ForgottenClientNames.Count > 0 || Stale.Count > 0 || StatementsUnknown;

    public void Clear()
    {
        NotPrepared.Clear();
        NotClosed.Clear();
        ForgottenClientNames.Clear();
        Stale.Clear();
        StatementsUnknown = false;
    }
}
