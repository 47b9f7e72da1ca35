using Akka.Configuration;
using Pooler.Actors.Config;
using Xunit;

namespace Pooler.Tests.Config;

public sealed class SettingsLoaderTests : IDisposable
{
    private static readonly KeyValuePair<string, string>[] NoEnv = [];
    private readonly TempDir _dir = new();
    private readonly string _users;

    public SettingsLoaderTests()
    {
        _users = _dir.Write("userlist.txt", "\"alice\" \"secret\"\n");
    }

    public void Dispose() => _dir.Dispose();

    /// <summary>Loads reference.conf + the given HOCON text (as a file in the temp folder) + env + sets.</summary>
    private PoolerSettings LoadWith(string? hocon = null, IEnumerable<KeyValuePair<string, string>>? env = null, params string[] sets)
    {
        string? file = hocon is null ? null : _dir.Write("pooler.hocon", hocon);
        var config = SettingsLoader.Layer(file, env ?? NoEnv, sets);
        return SettingsLoader.Load(config, _dir.Path);
    }

    /// <summary>Like <see cref="LoadWith"/> but with users-file set, so md5 (the default) is satisfied.</summary>
    private PoolerSettings LoadSets(params string[] sets)
        => LoadWith(null, null, ["pooler.auth.users-file=userlist.txt", .. sets]);

    private ConfigException Invalid(string? hocon, params string[] sets)
        => Assert.Throws<ConfigException>(() => LoadWith(hocon, null, ["pooler.auth.users-file=userlist.txt", .. sets]));

    // ------------------------------------------------------------ vip

    [Fact]
    public void Vip_is_off_by_default_and_reads_every_key()
    {
        Assert.Equal(VipDriverKind.None, LoadSets().Vip.Driver);
        var v = LoadSets("pooler.vip.driver=linux", "pooler.vip.address=10.0.0.250/24", "pooler.vip.interface=br0",
            "pooler.vip.port=5432", "pooler.vip.lifetime=6s").Vip;
        Assert.Equal(new VipSettings(VipDriverKind.Linux, "10.0.0.250/24", "br0", 5432, TimeSpan.FromSeconds(6), "", ""), v);
        Assert.Equal("10.0.0.250", v.Host);
        Assert.Equal(TimeSpan.FromSeconds(2), v.RenewInterval);
    }

    [Theory]
    [InlineData("pooler.vip.driver=keepalived", "pooler.vip.driver")]
    [InlineData("pooler.vip.driver=linux|pooler.vip.address=10.0.0.250", "pooler.vip.address")]          // no prefix length
    [InlineData("pooler.vip.driver=linux|pooler.vip.address=10.0.0.250/24|pooler.vip.interface=", "pooler.vip.interface")]
    [InlineData("pooler.vip.driver=linux|pooler.vip.address=10.0.0.250/24|pooler.vip.lifetime=2500ms", "pooler.vip.lifetime")]
    [InlineData("pooler.vip.driver=bind|pooler.vip.address=vip.example", "pooler.vip.address")]
    [InlineData("pooler.vip.driver=script|pooler.vip.down-command=true", "pooler.vip.up-command")]
    [InlineData("pooler.vip.lifetime=100ms", "pooler.vip.lifetime")]
    [InlineData("pooler.vip.prot=1", "pooler.vip.prot")]
    [InlineData("pooler.vip.preferred-node=10.0.0.12:4053", "pooler.vip.preferred-node")]
    public void Vip_mistakes_are_refused_naming_the_key(string sets, string key)
        => Assert.Equal(key, Invalid(null, sets.Split('|')).Key);

    // ------------------------------------------------------------ defaults

    [Fact]
    public void Defaults_are_pgbouncers()
    {
        var s = LoadSets();

        Assert.Equal(new ListenSettings("127.0.0.1", 6432), s.Listen);
        Assert.Equal(AuthType.Md5, s.Auth.Type);
        Assert.Equal(PoolMode.Session, s.PoolMode);
        Assert.Equal(20, s.DefaultPoolSize);
        Assert.Equal(0, s.MinPoolSize);
        Assert.Equal(0, s.ReservePoolSize);
        Assert.Equal(TimeSpan.FromSeconds(5), s.ReservePoolTimeout);
        Assert.Equal(100, s.MaxClientConn);
        Assert.Equal(0, s.MaxDbConnections);
        Assert.Equal(0, s.MaxUserConnections);
        Assert.Equal(TimeSpan.FromSeconds(3600), s.ServerLifetime);
        Assert.Equal(TimeSpan.FromSeconds(600), s.ServerIdleTimeout);
        Assert.Equal(TimeSpan.FromSeconds(15), s.ServerConnectTimeout);
        Assert.Equal(TimeSpan.FromSeconds(15), s.ServerLoginRetry);
        Assert.Equal(TimeSpan.Zero, s.QueryTimeout);
        Assert.Equal(TimeSpan.FromSeconds(120), s.QueryWaitTimeout);
        Assert.Equal(TimeSpan.Zero, s.ClientIdleTimeout);
        Assert.Equal(TimeSpan.FromSeconds(60), s.ClientLoginTimeout);
        Assert.Equal(TimeSpan.Zero, s.IdleTransactionTimeout);
        Assert.Equal("DISCARD ALL", s.ServerResetQuery);
        Assert.False(s.ServerResetQueryAlways);
        Assert.Equal("select 1", s.ServerCheckQuery);
        Assert.Equal(TimeSpan.FromSeconds(30), s.ServerCheckDelay);
        Assert.Equal(["extra_float_digits"], s.IgnoreStartupParameters);
        Assert.Equal(TimeSpan.FromSeconds(30), s.ShutdownTimeout);
        Assert.Equal(2147483647, s.MaxPacketSize);
        Assert.Empty(s.Databases);
        Assert.Null(s.FindDatabase("anything"));
    }

    [Fact]
    public void Reference_alone_requires_a_users_file_for_md5()
    {
        var e = Assert.Throws<ConfigException>(() => SettingsLoader.Load(SettingsLoader.Reference(), _dir.Path));
        Assert.Equal("pooler.auth.users-file", e.Key);
        Assert.Contains("md5", e.Problem);
    }

    [Fact]
    public void Reference_has_a_server_friendly_akka_section_with_a_proxy_sized_akka_io_frame()
    {
        var full = SettingsLoader.Layer(null, NoEnv, []).WithFallback(ConfigurationFactory.Default());
        Assert.Equal("INFO", full.GetString("akka.loglevel"));
        Assert.Equal(["Akka.Event.DefaultLogger"], full.GetStringList("akka.loggers"));
        // Akka.IO reads and sends maximum-frame-size bytes at a time: its 4k default is too small for a
        // relay, and each connection keeps one such buffer, so it is bounded above too (idle memory)
        var frame = full.GetByteSize("akka.io.tcp.maximum-frame-size");
        Assert.InRange(frame ?? 0, 16 * 1024, 32 * 1024);
        // the relay's dispatcher: mailboxes run on the thread that scheduled them, loggers elsewhere
        Assert.Equal("Pooler.Actors.Dispatch.InlineExecutorConfigurator, Pooler.Actors", full.GetString("akka.actor.default-dispatcher.executor"));
        Assert.Equal("akka.actor.internal-dispatcher", full.GetString("akka.loggers-dispatcher"));
        Assert.True(full.GetByteSize("akka.io.tcp.send-buffer-size") >= frame);
        Assert.True(full.GetByteSize("akka.io.tcp.receive-buffer-size") >= frame);
    }

    [Fact]
    public void Trust_needs_no_users_file()
    {
        var s = LoadWith(null, null, "pooler.auth.type=trust");
        Assert.Equal(new AuthSettings(AuthType.Trust, null), s.Auth);
    }

    // ------------------------------------------------------------ every key

    [Fact]
    public void Every_key_is_read()
    {
        var s = LoadWith("""
            pooler {
              listen { host = "0.0.0.0", port = 7432 }
              auth { type = scram-sha-256, users-file = "userlist.txt" }
              pool-mode = transaction
              default-pool-size = 7
              min-pool-size = 2
              reserve-pool-size = 3
              reserve-pool-timeout = 4s
              max-client-conn = 5000
              max-db-connections = 50
              max-user-connections = 60
              server-lifetime = 100s
              server-idle-timeout = 200s
              server-connect-timeout = 3s
              server-login-retry = 2s
              query-timeout = 11s
              query-wait-timeout = 12s
              client-idle-timeout = 13s
              client-login-timeout = 14s
              idle-transaction-timeout = 16s
              server-reset-query = "RESET ALL"
              server-reset-query-always = on
              server-check-query = ""
              server-check-delay = 0
              ignore-startup-parameters = [extra_float_digits, application_name, "search_path"]
              shutdown-timeout = 45s
              max-packet-size = 65536
              admin-users = [ops, "root"]
              stats-users = "grafana,exporter"
              stats-period = 15s
              pbm { enabled = off, host = "0.0.0.0", port = 9200, allow-remote = on }
              http { enabled = off, host = "10.0.0.2", port = 0 }
              vip {
                driver = script, address = "203.0.113.7", interface = "ens5", port = 5432, lifetime = 9s
                up-command = "cloud-ip attach", down-command = "cloud-ip detach", ip-command = "/sbin/ip", arping-command = "/usr/sbin/arping"
              }
              databases {
                sales {
                  host = "10.0.0.5", port = 5433, dbname = "sales_prod", user = "app", password = "p w"
                  pool-size = 40, pool-mode = statement, max-db-connections = 90, min-pool-size = 4, reserve-pool-size = 6
                }
              }
            }
            """);

        Assert.Equal(new ListenSettings("0.0.0.0", 7432), s.Listen);
        Assert.Equal(new AuthSettings(AuthType.ScramSha256, _users), s.Auth);
        Assert.Equal(PoolMode.Transaction, s.PoolMode);
        Assert.Equal(7, s.DefaultPoolSize);
        Assert.Equal(2, s.MinPoolSize);
        Assert.Equal(3, s.ReservePoolSize);
        Assert.Equal(TimeSpan.FromSeconds(4), s.ReservePoolTimeout);
        Assert.Equal(5000, s.MaxClientConn);
        Assert.Equal(50, s.MaxDbConnections);
        Assert.Equal(60, s.MaxUserConnections);
        Assert.Equal(TimeSpan.FromSeconds(100), s.ServerLifetime);
        Assert.Equal(TimeSpan.FromSeconds(200), s.ServerIdleTimeout);
        Assert.Equal(TimeSpan.FromSeconds(3), s.ServerConnectTimeout);
        Assert.Equal(TimeSpan.FromSeconds(2), s.ServerLoginRetry);
        Assert.Equal(TimeSpan.FromSeconds(11), s.QueryTimeout);
        Assert.Equal(TimeSpan.FromSeconds(12), s.QueryWaitTimeout);
        Assert.Equal(TimeSpan.FromSeconds(13), s.ClientIdleTimeout);
        Assert.Equal(TimeSpan.FromSeconds(14), s.ClientLoginTimeout);
        Assert.Equal(TimeSpan.FromSeconds(16), s.IdleTransactionTimeout);
        Assert.Equal("RESET ALL", s.ServerResetQuery);
        Assert.True(s.ServerResetQueryAlways);
        Assert.Equal("", s.ServerCheckQuery);
        Assert.Equal(TimeSpan.Zero, s.ServerCheckDelay);
        Assert.Equal(["extra_float_digits", "application_name", "search_path"], s.IgnoreStartupParameters);
        Assert.Equal(TimeSpan.FromSeconds(45), s.ShutdownTimeout);
        Assert.Equal(65536, s.MaxPacketSize);
        Assert.Equal(["ops", "root"], s.AdminUsers);
        Assert.Equal(["grafana", "exporter"], s.StatsUsers);
        Assert.Equal(TimeSpan.FromSeconds(15), s.StatsPeriod);
        Assert.Equal(new PbmSettings(false, "0.0.0.0", 9200, true), s.Pbm);
        Assert.Equal(new HttpSettings(false, "10.0.0.2", 0), s.Http);
        Assert.Equal(new VipSettings(VipDriverKind.Script, "203.0.113.7", "ens5", 5432, TimeSpan.FromSeconds(9),
            "cloud-ip attach", "cloud-ip detach", "/sbin/ip", "/usr/sbin/arping"), s.Vip);

        var db = Assert.Single(s.Databases).Value;
        Assert.Equal(new DatabaseSettings("sales", "10.0.0.5", 5433, "sales_prod", "app", "p w",
            PoolSize: 40, PoolMode: PoolMode.Statement, MaxDbConnections: 90, MinPoolSize: 4, ReservePoolSize: 6), db);
        Assert.Equal(PoolMode.Statement, s.ModeFor(db));
        Assert.Equal(40, s.PoolSizeFor(db));
        Assert.Equal(4, s.MinPoolSizeFor(db));
        Assert.Equal(6, s.ReservePoolSizeFor(db));
        Assert.Equal(90, s.MaxDbConnectionsFor(db));
    }

    [Fact]
    public void Ops_endpoints_default_to_pbm_9110_and_http_8404_on_loopback()
    {
        var s = LoadSets();
        Assert.Equal(new PbmSettings(true, "127.0.0.1", 9110, false), s.Pbm);
        Assert.Equal(new HttpSettings(true, "127.0.0.1", 8404), s.Http);
        Assert.Empty(s.AdminUsers);
        Assert.Equal(TimeSpan.FromSeconds(60), s.StatsPeriod);
        Assert.Equal(new PbmSettings(true, "127.0.0.1", 9111, false), SettingsLoader.LoadPbm(ConfigurationFactory.ParseString("pooler.pbm.port = 9111")));
    }

    [Theory]
    [InlineData("pooler.pbm.port=70000", "pooler.pbm.port")]
    [InlineData("pooler.pbm.enabled=maybe", "pooler.pbm.enabled")]
    [InlineData("pooler.pbm.hots=x", "pooler.pbm.hots")]
    [InlineData("pooler.http.port=-1", "pooler.http.port")]
    [InlineData("pooler.http.host=", "pooler.http.host")]
    [InlineData("pooler.stats-period=0", "pooler.stats-period")]
    public void Ops_mistakes_are_refused_naming_the_key(string set, string key) => Assert.Equal(key, Invalid(null, set).Key);

    [Fact]
    public void Every_reference_key_is_covered_by_the_every_key_test()
    {
        // If someone adds a setting to reference.conf, Load must learn it (and the test above must set it;
        // the TLS keys, which need real certificate files, are set by TlsSettingsTests' every-key test).
        var keys = SettingsLoader.Reference().GetConfig("pooler").AsEnumerable().Select(kv => kv.Key).Order().ToArray();
        Assert.Equal(new[]
        {
            "admin-users", "auth", "client-idle-timeout", "client-login-timeout",
            "client-tls-ca-file", "client-tls-cert-file", "client-tls-key-file", "client-tls-protocols", "client-tls-sslmode",
            "databases", "default-pool-size",
            "http", "idle-transaction-timeout", "ignore-startup-parameters", "listen", "max-client-conn",
            "max-db-connections", "max-packet-size", "max-prepared-statements", "max-user-connections", "min-pool-size", "pbm", "pool-mode",
            "query-timeout", "query-wait-timeout", "reserve-pool-size", "reserve-pool-timeout",
            "server-check-delay", "server-check-query", "server-connect-timeout", "server-idle-timeout",
            "server-lifetime", "server-login-retry", "server-reset-query", "server-reset-query-always",
            "server-tls-ca-file", "server-tls-cert-file", "server-tls-key-file", "server-tls-protocols", "server-tls-sslmode",
            "shutdown-timeout", "stats-period", "stats-users", "vip",
        }, keys);
    }

    [Fact]
    public void Database_entry_defaults()
    {
        var s = LoadWith("pooler.auth.type = trust\npooler.databases { app { } }");
        Assert.Equal(new DatabaseSettings("app", "127.0.0.1", 5432, "app", null, null, null, null, null, null, null), s.Databases["app"]);
        var db = s.Databases["app"];
        Assert.Equal(s.PoolMode, s.ModeFor(db));
        Assert.Equal(s.DefaultPoolSize, s.PoolSizeFor(db));
    }

    [Fact]
    public void Null_means_unset_in_a_database_entry()
    {
        var s = LoadWith("pooler.auth.type = trust\npooler.databases { app { pool-size = null, user = \"\" } }");
        Assert.Null(s.Databases["app"].PoolSize);
        Assert.Null(s.Databases["app"].User);
    }

    // ------------------------------------------------------------ "*" fallback

    [Fact]
    public void Star_database_is_the_fallback()
    {
        var s = LoadWith("""
            pooler.auth.type = trust
            pooler.databases {
              "*" { host = "10.0.0.6", port = 6543, pool-size = 3 }
              mydb { host = "10.0.0.5" }
            }
            """);

        Assert.Equal(2, s.Databases.Count);
        var mine = s.FindDatabase("mydb")!;
        Assert.Equal(("mydb", "10.0.0.5", 5432, "mydb"), (mine.Name, mine.Host, mine.Port, mine.DbName));
        var other = s.FindDatabase("reports")!;
        Assert.Equal(("reports", "10.0.0.6", 6543, "reports", 3), (other.Name, other.Host, other.Port, other.DbName, other.PoolSize));
    }

    [Fact]
    public void Star_database_via_set_quoted_or_not()
    {
        var quoted = LoadWith(null, null, "pooler.auth.type=trust", "pooler.databases.\"*\".host=10.1.1.1");
        Assert.Equal("10.1.1.1", quoted.FindDatabase("x")!.Host);
        var bare = LoadWith(null, null, "pooler.auth.type=trust", "pooler.databases.*.port=6000");
        Assert.Equal(6000, bare.FindDatabase("x")!.Port);
    }

    [Fact]
    public void Without_star_unknown_databases_are_not_found()
    {
        var s = LoadWith("pooler.auth.type = trust\npooler.databases { mydb { } }");
        Assert.NotNull(s.FindDatabase("mydb"));
        Assert.Null(s.FindDatabase("other"));
    }

    [Fact]
    public void Database_names_with_dots_survive()
    {
        var s = LoadWith("pooler.auth.type = trust\npooler.databases { \"a.b\" { port = 5555 } }");
        Assert.Equal(5555, s.Databases["a.b"].Port);
        Assert.Equal("a.b", s.Databases["a.b"].DbName);
    }

    // ------------------------------------------------------------ environment

    [Fact]
    public void Environment_variables_map_to_keys()
    {
        var s = LoadWith(null,
        [
            new("POOLER__AUTH__USERS_FILE", "userlist.txt"),
            new("POOLER__DEFAULT_POOL_SIZE", "5"),
            new("POOLER__DATABASES__MYDB__PORT", "5433"),
            new("POOLER__LISTEN__HOST", "0.0.0.0"),
            new("POOLER__SERVER_RESET_QUERY_ALWAYS", "on"),
            new("POOLER__QUERY_WAIT_TIMEOUT", "500ms"),
            new("POOLER__IGNORE_STARTUP_PARAMETERS", "extra_float_digits, application_name"),
            new("PATH", "/usr/bin"),
            new("POOLERX", "ignored"),
        ]);

        Assert.Equal(5, s.DefaultPoolSize);
        Assert.Equal(5433, s.Databases["mydb"].Port);
        Assert.Equal("mydb", s.Databases["mydb"].DbName);
        Assert.Equal("0.0.0.0", s.Listen.Host);
        Assert.True(s.ServerResetQueryAlways);
        Assert.Equal(TimeSpan.FromMilliseconds(500), s.QueryWaitTimeout);
        Assert.Equal(["extra_float_digits", "application_name"], s.IgnoreStartupParameters);
    }

    [Fact]
    public void Akka_environment_variables_map_to_akka_keys()
    {
        var config = SettingsLoader.Layer(null, [new("AKKA__LOGLEVEL", "DEBUG"), new("AKKA__IO__TCP__RECEIVE_BUFFER_SIZE", "64k")], []);
        Assert.Equal("DEBUG", config.GetString("akka.loglevel"));
        Assert.Equal("64k", config.GetString("akka.io.tcp.receive-buffer-size"));
    }

    [Theory]
    [InlineData("SET search_path = 'a b', public")]
    [InlineData("host:5432/db?x=1")]
    [InlineData("quote \" backslash \\ dollar ${x} hash # slashes // braces { } [ ] , =")]
    [InlineData("new\nline\ttab\rcr\u0001\u007f é ü 日本")]
    [InlineData("")]
    public void Values_are_injected_as_exact_strings(string value)
    {
        var fromEnv = SettingsLoader.Layer(null, [new("POOLER__SERVER_RESET_QUERY", value)], []);
        Assert.Equal(value, fromEnv.GetString("pooler.server-reset-query"));
        var fromSet = SettingsLoader.Layer(null, NoEnv, ["pooler.server-reset-query=" + value]);
        Assert.Equal(value, fromSet.GetString("pooler.server-reset-query"));
    }

    [Fact]
    public void Layers_win_in_order_file_env_set()
    {
        var file = "pooler { default-pool-size = 2, min-pool-size = 2, reserve-pool-size = 2 }";
        var s = LoadWith(file, [new("POOLER__MIN_POOL_SIZE", "3"), new("POOLER__RESERVE_POOL_SIZE", "3")],
            "pooler.auth.users-file=userlist.txt", "pooler.reserve-pool-size=4", "pooler.reserve-pool-size=5");
        Assert.Equal(2, s.DefaultPoolSize);
        Assert.Equal(3, s.MinPoolSize);
        Assert.Equal(5, s.ReservePoolSize);
    }

    [Fact]
    public void Overrides_merge_into_file_databases()
    {
        var s = LoadWith("pooler.databases { mydb { host = \"10.0.0.5\", port = 5433 } }",
            [new("POOLER__DATABASES__MYDB__PORT", "6000")], "pooler.auth.type=trust", "pooler.databases.mydb.user=bob");
        Assert.Equal(new DatabaseSettings("mydb", "10.0.0.5", 6000, "mydb", "bob", null, null, null, null, null, null),
            s.Databases["mydb"]);
    }

    [Fact]
    public void Malformed_environment_name_names_the_variable()
    {
        var e = Assert.Throws<ConfigException>(() => SettingsLoader.Layer(null, [new("POOLER__LISTEN____PORT", "1")], []));
        Assert.Equal("POOLER__LISTEN____PORT", e.Key);
    }

    [Fact]
    public void Unknown_setting_from_environment_is_rejected()
    {
        var e = Assert.Throws<ConfigException>(() =>
            LoadWith(null, [new("POOLER__DEFAULT_POOLSIZE", "5")], "pooler.auth.type=trust"));
        Assert.Equal("pooler.default-poolsize", e.Key);
        Assert.Contains("unknown setting", e.Problem);
    }

    // ------------------------------------------------------------ --set

    [Fact]
    public void Set_overrides_by_full_path()
    {
        var s = LoadSets("pooler.listen.port=7000", "pooler.pool-mode=transaction", "pooler.server-reset-query=SET x = 1");
        Assert.Equal(7000, s.Listen.Port);
        Assert.Equal(PoolMode.Transaction, s.PoolMode);
        Assert.Equal("SET x = 1", s.ServerResetQuery);
    }

    [Theory]
    [InlineData("no-equals-sign")]
    [InlineData("=value")]
    [InlineData("pooler..port=1")]
    [InlineData("pooler.\"open=1")]
    public void Malformed_set_is_a_config_error(string set)
    {
        var e = Assert.Throws<ConfigException>(() => SettingsLoader.Layer(null, NoEnv, [set]));
        Assert.Equal("--set", e.Key);
    }

    // ------------------------------------------------------------ invalid values

    [Theory]
    [InlineData("pooler.default-pool-size", "abc", "must be a positive integer, got 'abc'")]
    [InlineData("pooler.default-pool-size", "0", "must be a positive integer, got '0'")]
    [InlineData("pooler.min-pool-size", "-1", "must be a non-negative integer, got '-1'")]
    [InlineData("pooler.reserve-pool-size", "1.5", "non-negative integer")]
    [InlineData("pooler.max-client-conn", "0", "positive integer")]
    [InlineData("pooler.max-db-connections", "-3", "non-negative integer")]
    [InlineData("pooler.max-user-connections", "lots", "non-negative integer")]
    [InlineData("pooler.max-packet-size", "99999999999", "positive integer")]
    [InlineData("pooler.listen.port", "70000", "must be a port number from 0 to 65535, got '70000'")]
    [InlineData("pooler.listen.port", "-1", "port number")]
    [InlineData("pooler.listen.host", " ", "must not be empty")]
    [InlineData("pooler.pool-mode", "bogus", "must be one of session, transaction, statement, got 'bogus'")]
    [InlineData("pooler.auth.type", "ldap", "must be one of trust, plain, md5, scram-sha-256, cert, got 'ldap'")]
    [InlineData("pooler.server-lifetime", "-5s", "duration")]
    [InlineData("pooler.server-idle-timeout", "abc", "duration")]
    [InlineData("pooler.query-timeout", "5 fortnights", "duration")]
    [InlineData("pooler.shutdown-timeout", "30d", "duration")]
    [InlineData("pooler.server-reset-query-always", "maybe", "must be on or off, got 'maybe'")]
    [InlineData("pooler.databases.mydb.port", "0", "port number from 1 to 65535")]
    [InlineData("pooler.databases.mydb.pool-size", "0", "positive integer")]
    [InlineData("pooler.databases.mydb.pool-mode", "x", "must be one of")]
    [InlineData("pooler.databases.mydb.min-pool-size", "-1", "non-negative")]
    [InlineData("pooler.databases.mydb.host", "", "must not be empty")]
    [InlineData("pooler.databases.mydb.dbname", "", "must not be empty")]
    public void Invalid_value_names_the_key(string key, string value, string problem)
    {
        var e = Invalid(null, $"{key}={value}");
        Assert.Equal(key, e.Key);
        Assert.Contains(problem, e.Problem);
        Assert.Contains(key, e.Message);
    }

    [Theory]
    [InlineData("pooler.listen = 5", "pooler.listen", "must be an object")]
    [InlineData("pooler.databases = 5", "pooler.databases", "must be an object")]
    [InlineData("pooler.databases { mydb = \"host=x\" }", "pooler.databases.mydb", "must be an object")]
    [InlineData("pooler.databases { mydb { poolsize = 3 } }", "pooler.databases.mydb.poolsize", "unknown setting")]
    [InlineData("pooler.databases { \"*\" { port = x } }", "pooler.databases.\"*\".port", "port number")]
    [InlineData("pooler.default-pool-size = [1]", "pooler.default-pool-size", "must be a single value, got a list")]
    [InlineData("pooler.ignore-startup-parameters { a = 1 }", "pooler.ignore-startup-parameters", "list of strings")]
    [InlineData("pooler.ignore-startup-parameters = [a, { b = 1 }]", "pooler.ignore-startup-parameters[1]", "must be a string")]
    [InlineData("pooler.default_pool_size = 3", "pooler.default_pool_size", "did you mean 'default-pool-size'")]
    [InlineData("pooler.listen.address = x", "pooler.listen.address", "unknown setting")]
    public void Invalid_shape_names_the_key(string hocon, string key, string problem)
    {
        var e = Invalid(hocon);
        Assert.Equal(key, e.Key);
        Assert.Contains(problem, e.Problem);
    }

    [Theory]
    [InlineData("plain")]
    [InlineData("md5")]
    [InlineData("scram-sha-256")]
    public void Password_auth_requires_users_file(string type)
    {
        var e = Assert.Throws<ConfigException>(() => LoadWith(null, null, $"pooler.auth.type={type}"));
        Assert.Equal("pooler.auth.users-file", e.Key);
        Assert.Contains("required", e.Problem);
    }

    [Fact]
    public void Missing_users_file_is_an_error()
    {
        var e = Assert.Throws<ConfigException>(() => LoadWith(null, null, "pooler.auth.users-file=nope.txt"));
        Assert.Equal("pooler.auth.users-file", e.Key);
        Assert.Contains(Path.Combine(_dir.Path, "nope.txt"), e.Problem);
    }

    [Fact]
    public void Users_file_that_is_a_directory_is_an_error()
    {
        Directory.CreateDirectory(Path.Combine(_dir.Path, "adir"));
        var e = Assert.Throws<ConfigException>(() => LoadWith(null, null, "pooler.auth.users-file=adir"));
        Assert.Equal("pooler.auth.users-file", e.Key);
    }

    [Fact]
    public void Missing_config_file_is_a_config_error()
    {
        var e = Assert.Throws<ConfigException>(() => SettingsLoader.Layer(Path.Combine(_dir.Path, "missing.hocon"), NoEnv, []));
        Assert.Equal("--config", e.Key);
        Assert.Contains("missing.hocon", e.Problem);
    }

    [Fact]
    public void Unparsable_config_file_is_a_config_error_with_a_line()
    {
        var file = _dir.Write("bad.hocon", "pooler {\n  listen { port = 1 }, pool-mode = session\n}\n");
        var e = Assert.Throws<ConfigException>(() => SettingsLoader.Layer(file, NoEnv, []));
        Assert.Equal("--config", e.Key);
        Assert.Contains("line 2", e.Problem);
    }

    // ------------------------------------------------------------ paths

    [Fact]
    public void Relative_users_file_resolves_against_the_base_directory()
    {
        var users = _dir.Write(Path.Combine("etc", "secrets", "users.txt"), "");
        var file = _dir.Write(Path.Combine("etc", "pooler.hocon"), "pooler.auth.users-file = \"secrets/users.txt\"");

        var config = SettingsLoader.Layer(file, NoEnv, []);
        var s = SettingsLoader.Load(config, Path.GetDirectoryName(file));

        Assert.Equal(users, s.Auth.UsersFile);
        Assert.True(Path.IsPathFullyQualified(s.Auth.UsersFile!));
    }

    [Fact]
    public void Parent_relative_and_absolute_users_file()
    {
        var sub = Path.Combine(_dir.Path, "sub");
        Directory.CreateDirectory(sub);
        var config = SettingsLoader.Layer(null, NoEnv, ["pooler.auth.users-file=../userlist.txt"]);
        Assert.Equal(_users, SettingsLoader.Load(config, sub).Auth.UsersFile);

        var absolute = SettingsLoader.Layer(null, NoEnv, ["pooler.auth.users-file=" + _users]);
        Assert.Equal(_users, SettingsLoader.Load(absolute, "/nonexistent/elsewhere").Auth.UsersFile);
    }

    // ------------------------------------------------------------ durations

    [Theory]
    [InlineData("500ms", 500)]
    [InlineData("\"500 ms\"", 500)]
    [InlineData("15", 15_000)]
    [InlineData("2.5", 2_500)]
    [InlineData("0", 0)]
    [InlineData("15s", 15_000)]
    [InlineData("2m", 120_000)]
    [InlineData("\"2 minutes\"", 120_000)]
    [InlineData("1h", 3_600_000)]
    [InlineData("1d", 86_400_000)]
    [InlineData("1500us", 1.5)]
    public void Durations_as_hocon_or_seconds(string text, double milliseconds)
    {
        var s = LoadWith($"pooler.query-timeout = {text}", null, "pooler.auth.type=trust");
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), s.QueryTimeout);
    }

    [Fact]
    public void Durations_from_set_and_environment()
    {
        var s = LoadWith(null, [new("POOLER__SERVER_CONNECT_TIMEOUT", "3")],
            "pooler.auth.type=trust", "pooler.client-login-timeout=250ms");
        Assert.Equal(TimeSpan.FromSeconds(3), s.ServerConnectTimeout);
        Assert.Equal(TimeSpan.FromMilliseconds(250), s.ClientLoginTimeout);
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("abc")]
    [InlineData("1x")]
    [InlineData("1e3")]
    [InlineData("")]
    [InlineData("25d")]
    public void Bad_durations_are_rejected(string text)
    {
        Assert.False(SettingsLoader.TryParseDuration(text, out _));
    }

    // ------------------------------------------------------------ the shipped example

    /// <summary>The repository root and the path of one of its hocon/ examples.</summary>
    private static (string Root, string File) Example(string name)
    {
        var dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "hocon", name)))
            dir = Path.GetDirectoryName(dir);
        Assert.NotNull(dir);
        return (dir, Path.Combine(dir, "hocon", name));
    }

    [Fact]
    public void Example_single_node_config_loads()
    {
        var (dir, file) = Example("single-node.hocon");
        var s = SettingsLoader.Load(SettingsLoader.Layer(file, NoEnv, []), Path.GetDirectoryName(file));

        Assert.Equal(new ListenSettings("127.0.0.1", 6432), s.Listen);
        Assert.Equal(new AuthSettings(AuthType.ScramSha256, Path.Combine(dir, "hocon", "userlist.txt")), s.Auth);
        Assert.Equal(PoolMode.Transaction, s.PoolMode);
        Assert.Equal(20, s.DefaultPoolSize);
        Assert.Equal(10000, s.MaxClientConn);
        Assert.Equal(new DatabaseSettings("defaultdb", "127.0.0.1", 5432, "defaultdb", null, null, null, null, null, null, null),
            s.FindDatabase("defaultdb"));
    }

    [Fact]
    public void Example_cluster_node_config_loads_as_a_cluster_member_with_the_linux_vip()
    {
        var (_, file) = Example("cluster-node.hocon");
        var config = SettingsLoader.Layer(file, NoEnv, []);
        var s = SettingsLoader.Load(config, Path.GetDirectoryName(file));
        Assert.True(Pooler.Actors.Cluster.ClusterConfig.IsClustered(config));
        Assert.Equal(VipDriverKind.Linux, s.Vip.Driver);
        Assert.Equal("10.0.0.250/24", s.Vip.Address);
        Assert.Equal(4053, config.GetInt("akka.remote.dot-netty.tcp.port"));
    }
}
