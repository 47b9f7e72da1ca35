using System.Collections.Concurrent;
using Akka.Actor;
using Pooler.Actors.Auth;
using Pooler.Actors.Config;

namespace Pooler.Actors;

/// <summary>
/// What every actor of one pooler node reads: the current settings and users (swapped whole on
/// reload), the cancel-key registry and the per-database/per-user connection budget.
/// </summary>
public sealed class PoolerRuntime(PoolerSettings settings, UserList? users)
{
    private PoolerSettings _settings = settings;
    private UserList? _users = users;
    private Pooler.Actors.Tls.TlsContexts _tls = Pooler.Actors.Tls.TlsContexts.None;

    public PoolerSettings Settings { get => Volatile.Read(ref _settings); set => Volatile.Write(ref _settings, value); }
    public UserList? Users { get => Volatile.Read(ref _users); set => Volatile.Write(ref _users, value); }
    /// <summary>Certificates of both TLS sides; a connection keeps the ones current when it opened.</summary>
    public Pooler.Actors.Tls.TlsContexts Tls { get => Volatile.Read(ref _tls); set => Volatile.Write(ref _tls, value); }

    public CancelRegistry Cancels { get; } = new();
    public ScramSecretCache ScramSecrets { get; } = new();
    public ConnectionBudget Budget { get; } = new();
    public Ops.ConnectionRegistry Connections { get; } = new();
    public Ops.ErrorCounters Errors { get; } = new();

    /// <summary>What the host lets the admin console and pbm do to the process (reload, shut down); null in tests.</summary>
    public Ops.INodeControl? Control { get; set; }

    /// <summary>Set while the node drains (SIGTERM, pbm node drain, SHUTDOWN): /health answers 503.</summary>
    public volatile bool Draining;

    public DateTime StartedAt { get; } = DateTime.UtcNow;

    /// <summary>The port the listener bound (pooler.listen.port may be 0).</summary>
    public int ListenPort { get; internal set; }

    /// <summary>Live counts for tests, stats and the leak checks.</summary>
    public int ClientCount;
    public int ServerCount;

    public IActorRef PoolManager { get; internal set; } = ActorRefs.Nobody;

    /// <summary>The node's OpsAgent (admin console, pbm, HTTP).</summary>
    public IActorRef Ops { get; internal set; } = ActorRefs.Nobody;

    /// <summary>In a cluster: the VipOwner singleton's proxy and this node's VipHolder (SHOW VIP, pbm vip).</summary>
    public IActorRef? VipProxy { get; set; }
    public IActorRef? VipHolder { get; set; }

    /// <summary>In a cluster: where a CancelRequest for a key this node did not mint goes (null: alone).</summary>
    public IActorRef? CancelForwarder { get; set; }

    /// <summary>The name this node puts in log lines.</summary>
    public string NodeName { get; init; } = Environment.MachineName;
}

/// <summary>Maps the BackendKeyData the pooler minted for a client to that client's session.</summary>
public sealed class CancelRegistry
{
    private readonly ConcurrentDictionary<int, (int Secret, IActorRef Client)> _keys = new();
    private volatile int _tag;

    /// <summary>This node's tag (Cluster.NodeTag), carried by every process id minted from now on; 0 outside a cluster.</summary>
    public int NodeTag { get => _tag; set => _tag = value; }

    /// <summary>Mints a unique (pid, secret) pair for a client.</summary>
    public (int Pid, int Secret) Register(IActorRef client)
    {
        while (true)
        {
            var pid = Cluster.NodeTag.Pid(_tag, Random.Shared.Next(1, int.MaxValue));
            if (pid == 0) continue;
            var secret = Random.Shared.Next(int.MinValue, int.MaxValue);
            if (_keys.TryAdd(pid, (secret, client))) return (pid, secret);
        }
    }

    public void Unregister(int pid) => _keys.TryRemove(pid, out _);

    public IActorRef? Find(int pid, int secret)
        => _keys.TryGetValue(pid, out var e) && e.Secret == secret ? e.Client : null;
}

/// <summary>
/// Server connections counted per database and per user, shared by all pools of a node
/// (max-db-connections and max-user-connections span pools). Taken rarely: at connect and close.
/// In a cluster max-db-connections spans nodes: each node may open only the quota the cluster's
/// PoolBudget granted it (<see cref="EnableClusterQuotas"/>), and records how often it wanted more.
/// </summary>
public sealed class ConnectionBudget
{
    private readonly Dictionary<string, int> _byDb = new();
    private readonly Dictionary<string, int> _byUser = new();
    private Dictionary<string, int>? _quota;
    private readonly Dictionary<string, int> _wanted = new();

    /// <summary>From now on a database with max-db-connections is capped by its granted quota (0 until granted).</summary>
    public void EnableClusterQuotas()
    {
        lock (this) _quota ??= new Dictionary<string, int>();
    }

    public bool TryTake(string db, string user, int maxDb, int maxUser)
    {
        lock (this)
        {
            var d = _byDb.GetValueOrDefault(db);
            var u = _byUser.GetValueOrDefault(user);
            if (maxDb > 0 && _quota is not null)
            {
                if (d >= Math.Min(maxDb, _quota.GetValueOrDefault(db)))
                {
                    _wanted[db] = _wanted.GetValueOrDefault(db) + 1;
                    return false;
                }
            }
            else if (maxDb > 0 && d >= maxDb) return false;
            if (maxUser > 0 && u >= maxUser) return false;
            _byDb[db] = d + 1;
            _byUser[user] = u + 1;
            return true;
        }
    }

    public void Return(string db, string user)
    {
        lock (this)
        {
            _byDb[db] = Math.Max(0, _byDb.GetValueOrDefault(db) - 1);
            _byUser[user] = Math.Max(0, _byUser.GetValueOrDefault(user) - 1);
        }
    }

    /// <summary>The quota granted for <paramref name="db"/> (cluster mode).</summary>
    public void SetQuota(string db, int quota)
    {
        lock (this) if (_quota is not null) _quota[db] = Math.Max(0, quota);
    }

    /// <summary>For the budget report: quota held, connections open, and how many opens the quota refused since the last report (reset).</summary>
    public (int Quota, int Open, int Wanted) TakeReport(string db)
    {
        lock (this)
        {
            var wanted = _wanted.GetValueOrDefault(db);
            _wanted.Remove(db);
            return (_quota?.GetValueOrDefault(db) ?? 0, _byDb.GetValueOrDefault(db), wanted);
        }
    }

    /// <summary>Databases this node has opened or wanted connections to (for reports of "*" databases).</summary>
    public IReadOnlyList<string> Databases()
    {
        lock (this) return _byDb.Keys.Concat(_wanted.Keys).Concat(_quota?.Keys ?? Enumerable.Empty<string>()).Distinct().ToList();
    }

    /// <summary>True when more connections are open to <paramref name="db"/> than its quota allows (the quota was lowered).</summary>
    public bool OverQuota(string db)
    {
        lock (this) return _quota is not null && _quota.TryGetValue(db, out var q) && _byDb.GetValueOrDefault(db) > q;
    }
}

/// <summary>
/// SCRAM verifiers for users whose users-file entry is a plain password: deriving one costs 4096
/// PBKDF2 rounds, too much to repeat on every login of a connection storm. Keyed by user and
/// password, so a changed users file (reload) derives a fresh one. Unknown users get one fixed
/// dummy verifier, so probing costs the pooler nothing and still looks like a real exchange.
/// </summary>
public sealed class ScramSecretCache
{
    private readonly ConcurrentDictionary<(string User, string Password), string> _secrets = new();
    private readonly Lazy<string> _dummy = new(() => Auth.ScramServer.MakeSecret(Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(18))));

    public string For(string user, string plainPassword)
    {
        if (_secrets.Count > 10_000) _secrets.Clear(); // bounded: users files are small; a flood of changes just re-derives
        return _secrets.GetOrAdd((user, plainPassword), k => Auth.ScramServer.MakeSecret(k.Password));
    }

    public string Dummy => _dummy.Value;
}
