namespace Pooler.Actors.Config;

/// <summary>How long a server stays linked to a client (PgBouncer's pool_mode).</summary>
public enum PoolMode { Session, Transaction, Statement }

/// <summary>How clients prove who they are (PgBouncer's auth_type, the subset we implement).</summary>
public enum AuthType { Trust, Plain, Md5, ScramSha256, Cert }

public sealed record ListenSettings(string Host, int Port);

/// <summary>How the VIP is put up (<c>pooler.vip.driver</c>).</summary>
public enum VipDriverKind { None, Linux, Bind, Script }

/// <summary><c>pooler.vip</c>: the floating address one node of the cluster owns at a time.</summary>
public sealed record VipSettings(
    VipDriverKind Driver,
    string Address,
    string Interface,
    int Port,
    TimeSpan Lifetime,
    string UpCommand,
    string DownCommand,
    string IpCommand = "ip",
    string ArpingCommand = "arping",
    string PreferredNode = "")
{
    public static readonly VipSettings Off = new(VipDriverKind.None, "", "eth0", 6432, TimeSpan.FromSeconds(3), "", "");

    /// <summary>How often the owner renews the lease: a third of its lifetime.</summary>
    public TimeSpan RenewInterval => Lifetime / 3;

    /// <summary>The address without its prefix length ("10.0.0.250/24" -> "10.0.0.250").</summary>
    public string Host => Address.Split('/')[0];
}

/// <summary><c>pooler.pbm</c>: pbm's command endpoint.</summary>
public sealed record PbmSettings(bool Enabled, string Host, int Port, bool AllowRemote)
{
    public static readonly PbmSettings Default = new(true, "127.0.0.1", 9110, false);
}

/// <summary><c>pooler.http</c>: /metrics, /health, /stats.</summary>
public sealed record HttpSettings(bool Enabled, string Host, int Port)
{
    public static readonly HttpSettings Default = new(true, "127.0.0.1", 8404);
}

public sealed record AuthSettings(AuthType Type, string? UsersFile);

/// <summary>One entry of <c>pooler.databases</c>. Null means "use the global value".</summary>
public sealed record DatabaseSettings(
    string Name,
    string Host,
    int Port,
    string DbName,
    string? User,
    string? Password,
    int? PoolSize,
    PoolMode? PoolMode,
    int? MaxDbConnections,
    int? MinPoolSize,
    int? ReservePoolSize);

/// <summary>
/// Every pooler setting, typed. Built by <see cref="SettingsLoader"/> from HOCON (reference.conf, then
/// the user's file and overrides); names are the kebab-case twins of PgBouncer's and mean the same.
/// A zero TimeSpan means "disabled" wherever PgBouncer uses 0 for that.
/// </summary>
public sealed record PoolerSettings(
    ListenSettings Listen,
    AuthSettings Auth,
    PoolMode PoolMode,
    int DefaultPoolSize,
    int MinPoolSize,
    int ReservePoolSize,
    TimeSpan ReservePoolTimeout,
    int MaxClientConn,
    int MaxDbConnections,
    int MaxUserConnections,
    TimeSpan ServerLifetime,
    TimeSpan ServerIdleTimeout,
    TimeSpan ServerConnectTimeout,
    TimeSpan ServerLoginRetry,
    TimeSpan QueryTimeout,
    TimeSpan QueryWaitTimeout,
    TimeSpan ClientIdleTimeout,
    TimeSpan ClientLoginTimeout,
    TimeSpan IdleTransactionTimeout,
    string ServerResetQuery,
    bool ServerResetQueryAlways,
    string ServerCheckQuery,
    TimeSpan ServerCheckDelay,
    IReadOnlyList<string> IgnoreStartupParameters,
    TimeSpan ShutdownTimeout,
    int MaxPacketSize,
    IReadOnlyDictionary<string, DatabaseSettings> Databases)
{
    /// <summary><c>pooler.vip</c>; used only in a cluster.</summary>
    public VipSettings Vip { get; init; } = VipSettings.Off;

    /// <summary>May run every admin console command (PgBouncer's admin_users).</summary>
    public IReadOnlyList<string> AdminUsers { get; init; } = [];
    /// <summary>May run the console's SHOW commands (PgBouncer's stats_users).</summary>
    public IReadOnlyList<string> StatsUsers { get; init; } = [];
    public TimeSpan StatsPeriod { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>
    /// Named prepared statements each server keeps in transaction and statement pooling (PgBouncer's
    /// max_prepared_statements); 0 relays statement names unchanged, as before.
    /// </summary>
    public int MaxPreparedStatements { get; init; } = 200;
    public PbmSettings Pbm { get; init; } = PbmSettings.Default;
    public HttpSettings Http { get; init; } = HttpSettings.Default;
    /// <summary><c>client-tls-*</c>: TLS between clients and the pooler.</summary>
    public Tls.TlsSettings ClientTls { get; init; } = Tls.TlsSettings.Off;
    /// <summary><c>server-tls-*</c>: TLS between the pooler and the database servers.</summary>
    public Tls.TlsSettings ServerTls { get; init; } = Tls.TlsSettings.Off;

    /// <summary>The database entry for a name asked by a client, falling back to "*" as PgBouncer does.</summary>
    public DatabaseSettings? FindDatabase(string name)
    {
        if (Databases.TryGetValue(name, out var db)) return db;
        if (Databases.TryGetValue("*", out var star)) return star with { Name = name, DbName = name };
        return null;
    }

    public PoolMode ModeFor(DatabaseSettings db) => db.PoolMode ?? PoolMode;
    public int PoolSizeFor(DatabaseSettings db) => db.PoolSize ?? DefaultPoolSize;
    public int MinPoolSizeFor(DatabaseSettings db) => db.MinPoolSize ?? MinPoolSize;
    public int ReservePoolSizeFor(DatabaseSettings db) => db.ReservePoolSize ?? ReservePoolSize;
    public int MaxDbConnectionsFor(DatabaseSettings db) => db.MaxDbConnections ?? MaxDbConnections;
}

/// <summary>A setting that is missing or wrong; the message names the key.</summary>
public sealed class ConfigException(string key, string problem)
    : Exception($"invalid setting '{key}': {problem}")
{
    public string Key { get; } = key;
    public string Problem { get; } = problem;
}
