using Akka.Actor;
using Akka.Event;
using Pooler.Actors.Config;

namespace Pooler.Actors.Pooling;

/// <summary>
/// Owns the pools of a node, one per (database, server user), created on first use; passes
/// reloaded settings on; answers admin-style questions about them.
/// </summary>
public sealed class PoolManager : ReceiveActor
{
    /// <summary>A logged-in client wants the pool for this database and login; the pool answers it with Welcome.</summary>
    public sealed record Connect(DatabaseSettings Db, ServerCredentials Creds, IActorRef Client);
    public sealed record SettingsChanged(PoolerSettings Settings);
    public sealed record ReconnectAll;
    public sealed record GetPoolStats;
    /// <summary>PAUSE/KILL [db] (null: every pool); the sender gets Done once every server of those pools closed.</summary>
    public sealed record Pause(string? Db, bool Kill);
    /// <summary>RESUME [db]: answered Done, or NotPaused when that database was not paused by name (PgBouncer's rule).</summary>
    public sealed record Resume(string? Db);
    public sealed record NotPaused(string Db);
    /// <summary>The databases PAUSEd or KILLed by name, "*" for a PAUSE of every database; answered with PausedDatabases.</summary>
    public sealed record GetPaused;
    public sealed record PausedDatabases(IReadOnlyCollection<string> Databases);
    public sealed record Reconnect(string? Db);
    public sealed record WaitClose(string? Db);
    public sealed record Done(int Pools);
    public sealed record GetInfos;
    public sealed record Infos(IReadOnlyList<Ops.PoolInfo> Pools);
    public sealed record PoolStats(IReadOnlyDictionary<string, Pool.Stats> Pools);

    public static Props Props(PoolerRuntime rt) => Akka.Actor.Props.Create(() => new PoolManager(rt));

    private readonly Dictionary<(string Db, string User), (IActorRef Pool, DatabaseSettings Db, ServerCredentials Creds)> _pools = new();
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private int _seq;
    private readonly HashSet<string> _paused = new(); // databases paused; "*" = all

    /// <summary>Sends <paramref name="message"/> to the pools of <paramref name="db"/> (null: all) and answers Done when all did.</summary>
    private void All(string? db, object message, TimeSpan timeout)
    {
        var asks = _pools.Where(p => db == null || p.Key.Db == db).Select(p => p.Value.Pool.Ask<Pool.Done>(message, timeout)).ToArray();
        Task.WhenAll(asks).PipeTo(Sender, success: done => new Done(done.Length), failure: e => new Status.Failure(e));
    }

    public PoolManager(PoolerRuntime rt)
    {
        Receive<Connect>(c =>
        {
            var key = (c.Db.Name, c.Creds.User);
            if (!_pools.TryGetValue(key, out var entry))
            {
                var pool = Context.ActorOf(Pool.Props(rt, c.Db, c.Creds, new PoolExchange()), $"pool-{++_seq}");
                entry = (pool, c.Db, c.Creds);
                _pools[key] = entry;
                _log.Info("pool {0}/{1} node {2}: created for {3}:{4}/{5}", c.Db.Name, c.Creds.User, rt.NodeName, c.Db.Host, c.Db.Port, c.Db.DbName);
                if (_paused.Contains("*") || _paused.Contains(c.Db.Name)) pool.Tell(new Pool.Pause(false), ActorRefs.NoSender);
            }
            else if (entry.Creds.ScramClientKey == null && c.Creds.ScramClientKey != null)
            {
                // a later SCRAM login brings the keys the pool lacked (e.g. the first client used trust)
                entry = entry with { Creds = c.Creds };
                _pools[key] = entry;
                entry.Pool.Tell(new Pool.UpdateSettings(entry.Db, c.Creds));
            }
            entry.Pool.Tell(new Pool.Login(c.Client), c.Client);
        });
        Receive<SettingsChanged>(m =>
        {
            foreach (var (key, entry) in _pools.ToArray())
            {
                var db = m.Settings.FindDatabase(key.Db);
                if (db == null)
                {
                    _log.Info("pool {0}/{1} node {2}: database removed from configuration; closing idle servers", key.Db, key.User, rt.NodeName);
                    entry.Pool.Tell(new Pool.Reconnect());
                    continue;
                }
                var creds = entry.Creds with { Password = db.Password ?? (rt.Users != null && rt.Users.TryGetSecret(key.User, out var s) ? s : entry.Creds.Password) };
                _pools[key] = (entry.Pool, db, creds);
                entry.Pool.Tell(new Pool.UpdateSettings(db, creds));
            }
        });
        Receive<ReconnectAll>(_ => { foreach (var e in _pools.Values) e.Pool.Tell(new Pool.Reconnect()); });
        Receive<Pause>(m =>
        {
            _paused.Add(m.Db ?? "*");
            All(m.Db, new Pool.Pause(m.Kill), TimeSpan.FromMinutes(10));
        });
        Receive<Resume>(m =>
        {
            // asked here, not of the pools: a database paused before its first client has no pool yet
            if (m.Db != null && !_paused.Contains(m.Db)) { Sender.Tell(new NotPaused(m.Db)); return; }
            if (m.Db == null) _paused.Clear(); else _paused.Remove(m.Db);
            foreach (var (key, e) in _pools)
                if (!_paused.Contains("*") && !_paused.Contains(key.Db)) e.Pool.Tell(new Pool.Resume());
            Sender.Tell(new Done(_pools.Count));
        });
        Receive<GetPaused>(_ => Sender.Tell(new PausedDatabases(_paused.ToArray())));
        Receive<Reconnect>(m =>
        {
            foreach (var (key, e) in _pools) if (m.Db == null || key.Db == m.Db) e.Pool.Tell(new Pool.Reconnect());
            Sender.Tell(new Done(_pools.Count));
        });
        Receive<WaitClose>(m => All(m.Db, new Pool.WaitClose(), TimeSpan.FromMinutes(10)));
        Receive<GetInfos>(_ =>
        {
            var asks = _pools.Values.Select(e => e.Pool.Ask<Ops.PoolInfo>(new Pool.GetInfo(), TimeSpan.FromSeconds(5))).ToArray();
            Task.WhenAll(asks).PipeTo(Sender, success: infos => new Infos(infos), failure: _ => new Infos(asks.Where(a => a.IsCompletedSuccessfully).Select(a => a.Result).ToArray()));
        });
        ReceiveAsync<GetPoolStats>(async _ =>
        {
            var sender = Sender;
            var result = new Dictionary<string, Pool.Stats>();
            foreach (var (key, e) in _pools)
                result[$"{key.Db}/{key.User}"] = await e.Pool.Ask<Pool.Stats>(new Pool.GetStats(), TimeSpan.FromSeconds(5));
            sender.Tell(new PoolStats(result));
        });
    }
}
