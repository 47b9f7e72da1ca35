using Akka.Actor;
using Akka.Configuration;
using Npgsql;
using Pooler.Actors;
using Pooler.Actors.Config;
using Pooler.Actors.Pooling;

namespace Pooler.Tests.Infrastructure;

/// <summary>
/// A real pooler node (ActorSystem + PoolerService) in the test process, in front of the fixture's
/// PostgreSQL, listening on a free loopback port. Settings go through the same loader as the host:
/// reference.conf, then the HOCON given by the test.
/// </summary>
public sealed class PoolerHarness : IAsyncDisposable
{
    private readonly Func<string, string?, string, string?, bool, int, string> _connectionString; // user, password, db, app, pooling, port
    private readonly UsersFile _users;

    private PoolerHarness(Func<string, string?, string, string?, bool, int, string> connectionString, UsersFile users, ActorSystem system, PoolerService service, string hocon)
    {
        _connectionString = connectionString;
        _users = users;
        System = system;
        Service = service;
        Hocon = hocon;
    }

    public ActorSystem System { get; }
    public PoolerService Service { get; }
    public string Hocon { get; }
    public int Port => Service.Port;
    public PoolerRuntime Runtime => Service.Runtime;
    public UsersFile Users => _users;

    /// <summary>
    /// Starts a pooler. <paramref name="settings"/> is HOCON inside <c>pooler { }</c>; by default the
    /// database <c>pooler_test</c> (and <c>other_db</c>) point at the fixture, auth is scram-sha-256 with
    /// every fixture user in the users file, pool-mode transaction.
    /// </summary>
    public static Task<PoolerHarness> StartAsync(PostgresFixture pg, string settings = "", string? usersFile = null)
        => StartAsync(pg.Port, (u, pw, db, app, pooling, port) => pg.ConnectionString(u, pw, db, app, pooling, port, "127.0.0.1"), settings, usersFile);

    /// <summary>The same in front of the TLS fixture's PostgreSQL (add server-tls-* to <paramref name="settings"/>:
    /// it accepts nothing in plaintext over TCP). <see cref="ConnectionString"/> connects to the pooler without TLS.</summary>
    public static Task<PoolerHarness> StartAsync(TlsPostgresFixture pg, string settings = "", string? usersFile = null)
        => StartAsync(pg.Port, (u, pw, db, app, pooling, port) => pg.ConnectionString(u, pw, db, Npgsql.SslMode.Disable, applicationName: app, pooling: pooling, port: port, host: "127.0.0.1"),
            settings, usersFile);

    private static async Task<PoolerHarness> StartAsync(int pgPort, Func<string, string?, string, string?, bool, int, string> connectionString, string settings, string? usersFile)
    {
        var users = UsersFile.Create(usersFile != null ? ParseEntries(usersFile) : PostgresFixture.Passwords
            .Where(kv => kv.Value.Length > 0).Select(kv => new KeyValuePair<string, string>(kv.Key, kv.Value))
            .Append(new(PostgresFixture.TrustUser, "")));
        var hocon = PoolerProcess.DefaultConfig(pgPort, port: 0, settings, usersFile: users.Path, logLevel: "WARNING");
        var config = ConfigurationFactory.ParseString(hocon).WithFallback(SettingsLoader.Reference());
        var loaded = SettingsLoader.Load(config, users.Directory);
        var system = ActorSystem.Create("pooler", config.WithFallback(ConfigurationFactory.Default()));
        var service = await PoolerService.StartAsync(system, loaded, users.Directory);
        return new PoolerHarness(connectionString, users, system, service, hocon);
    }

    private static IEnumerable<KeyValuePair<string, string>> ParseEntries(string text)
        => text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Trim().Split(' ', 2))
            .Select(p => new KeyValuePair<string, string>(p[0].Trim('"'), p.Length > 1 ? p[1].Trim().Trim('"') : ""));

    /// <summary>An Npgsql connection string that goes through this pooler.</summary>
    public string ConnectionString(string user = PostgresFixture.ScramUser, string? password = null,
        string database = PostgresFixture.Database, string? applicationName = null, bool pooling = false)
        => _connectionString(user, password, database, applicationName, pooling, Port);

    public async Task<NpgsqlConnection> OpenAsync(string user = PostgresFixture.ScramUser, string? password = null,
        string database = PostgresFixture.Database, string? applicationName = null)
    {
        var c = new NpgsqlConnection(ConnectionString(user, password, database, applicationName));
        await c.OpenAsync();
        return c;
    }

    /// <summary>Stats of every pool (idle/active/connecting/waiting servers).</summary>
    public async Task<IReadOnlyDictionary<string, Pool.Stats>> PoolStatsAsync()
        => (await Service.PoolManager.Ask<PoolManager.PoolStats>(new PoolManager.GetPoolStats(), TimeSpan.FromSeconds(10))).Pools;

    /// <summary>Applies new pooler settings (HOCON inside pooler { }) the way SIGHUP does.</summary>
    public void Reload(string settings)
    {
        var hocon = Hocon.Replace("akka.loglevel = WARNING", "") ;
        var config = ConfigurationFactory.ParseString($"pooler {{ {settings} }}")
            .WithFallback(ConfigurationFactory.ParseString(hocon)).WithFallback(SettingsLoader.Reference());
        Service.Reload(SettingsLoader.Load(config, _users.Directory));
    }

    /// <summary>Waits until no client or server session of this node is left (leak check).</summary>
    public Task AssertDrainedAsync(int servers = 0, string because = "")
        => Eventually.True(() => Runtime.ClientCount == 0 && Runtime.ServerCount <= servers,
            $"sessions back to baseline {because}: clients={Runtime.ClientCount} servers={Runtime.ServerCount}");

    public async ValueTask DisposeAsync()
    {
        try { await Service.StopAsync().WaitAsync(TimeSpan.FromSeconds(20)); } catch (TimeoutException) { }
        await System.Terminate();
        _users.Dispose();
    }
}
