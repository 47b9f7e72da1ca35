namespace Pooler.Actors.Ops;

/// <summary>What a pool says of itself (its settings, pause state, longest wait and totals).</summary>
public sealed record PoolInfo(
    string Database, string User, string Mode, int PoolSize, int MinPoolSize, int ReservePool, int MaxDbConnections,
    string Host, int Port, string DbName, bool Paused, long MaxWaitUs, PoolTotals Totals);

/// <summary>One pool of one node for SHOW POOLS/STATS, pbm and /metrics: the pool's own info plus the
/// client and server counts by state, and what changed over the last whole stats period (for averages).</summary>
public sealed record PoolReport(
    PoolInfo Info, int ClActive, int ClWaiting, int SvActive, int SvIdle, int SvUsed, int SvTested, int SvLogin,
    PoolTotals LastPeriod, double PeriodSeconds, string Node);

/// <summary>A cluster member as this node sees it.</summary>
public sealed record MemberReport(string Address, string Status, IReadOnlyList<string> Roles, bool Reachable, bool Leader, bool Oldest);

/// <summary>Where the VIP is, as the VipOwner singleton and this node's holder see it.</summary>
public sealed record VipReport(string Address, string Driver, string Coordinator, string Holder, string LocalState, bool HeldHere);

/// <summary>
/// Everything one node reports about itself (pbm, SHOW PEER_POOLS, /stats, /metrics). Plain data, sent
/// between nodes with the default serializer; clients and servers only when asked for (they can be many).
/// </summary>
public sealed record NodeReport(
    string Node, string Address, IReadOnlyList<string> Roles, string Version, DateTime StartedAt, bool Draining, bool BackendReachable,
    int Clients, int Servers, IReadOnlyList<PoolReport> Pools, IReadOnlyList<ConnRow>? ClientRows, IReadOnlyList<ConnRow>? ServerRows,
    IReadOnlyDictionary<string, long> Errors);
