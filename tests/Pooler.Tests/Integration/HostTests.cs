using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Integration;

/// <summary>
/// The real host process (<c>dotnet Pooler.Host.dll</c> from the test output folder): configuration layering
/// (file, environment, --set), refusal of invalid configuration, logging, SIGTERM drain and SIGHUP reload.
/// Settings are checked through what PostgreSQL observes, not through the host's internals.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class HostTests(PostgresFixture pg, ITestOutputHelper output)
{
    private const int SigHup = 1;
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(30);
    /// <summary>Reading a configuration takes well under a second; a host still running after this is stuck.</summary>
    private static readonly TimeSpan InvalidExitTimeout = TimeSpan.FromSeconds(15);

    // ------------------------------------------------------------------ --config

    [Fact]
    public async Task Config_file_is_used_and_a_relative_users_file_resolves_against_its_folder()
    {
        using var setup = new HostSetup(pg);
        setup.WriteUsers(PostgresFixture.ScramUser);
        setup.WriteConfig(setup.Database(PostgresFixture.Database));
        // Started from another folder: "userlist.txt" must be found next to the config file, not here.
        using var elsewhere = TestDirectory.Create("host-cwd");
        await using var host = HostProcess.Start(output, ["--config", setup.ConfigPath], workingDirectory: elsewhere.Path);
        await host.WaitUntilListeningAsync(setup.Port, StartTimeout);

        await using var c = await OpenAsync(setup.Port);
        Assert.Equal(PostgresFixture.ScramUser, await Scalar(c, "select current_user"));
        Assert.Equal(PostgresFixture.Database, await Scalar(c, "select current_database()"));
    }

    [Fact]
    public async Task Logs_go_to_stdout_with_timestamps()
    {
        using var setup = new HostSetup(pg);
        setup.WriteUsers(PostgresFixture.ScramUser);
        setup.WriteConfig(setup.Database(PostgresFixture.Database));
        await using var host = HostProcess.Start(output, ["--config", setup.ConfigPath]);
        await host.WaitUntilListeningAsync(setup.Port, StartTimeout);
        await Eventually.True(() => host.StdOut.Contains($"listening on 127.0.0.1:{setup.Port}"),
            $"the host logs where it listens on stdout; {host}");

        var lines = host.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.NotEmpty(lines);
        foreach (var line in lines)
        {
            var stamp = LogTimestamp(line);
            Assert.True(stamp is not null, $"stdout line without a timestamp: '{line}'");
            // Stamped now (UTC), not some fixed or local-time value.
            Assert.InRange(stamp!.Value, DateTime.UtcNow.AddMinutes(-5), DateTime.UtcNow.AddMinutes(1));
        }
        Assert.Equal("", host.StdErr.Trim());
    }

    [Fact]
    public async Task Clients_arriving_the_moment_the_port_opens_are_served()
    {
        // A restarted pooler meets clients that retry in a loop: those that get in first must be served,
        // and the listener must go on accepting. Three starts, each met by a burst of 20 clients that
        // connect as soon as the port opens and ask for TLS (SSLRequest), which the pooler answers 'N'.
        using var setup = new HostSetup(pg);
        setup.WriteUsers(PostgresFixture.ScramUser);
        setup.WriteConfig(setup.Database(PostgresFixture.Database));
        for (var round = 1; round <= 3; round++)
        {
            await using var host = HostProcess.Start(output, ["--config", setup.ConfigPath]);
            var early = new List<Socket>();
            try
            {
                var watch = Stopwatch.StartNew();
                while (early.Count == 0)
                {
                    if (host.HasExited) throw new Xunit.Sdk.XunitException($"the host exited; {host}");
                    if (watch.Elapsed > StartTimeout) throw new Xunit.Sdk.XunitException($"the port never opened; {host}");
                    var probe = new Socket(SocketType.Stream, ProtocolType.Tcp);
                    try
                    {
                        await probe.ConnectAsync(IPAddress.Loopback, setup.Port);
                        early.Add(probe);
                    }
                    catch (SocketException)
                    {
                        probe.Dispose();
                        await Task.Delay(1);
                    }
                }
                for (var i = 1; i < 20; i++)
                {
                    var s = new Socket(SocketType.Stream, ProtocolType.Tcp);
                    early.Add(s);
                    await s.ConnectAsync(IPAddress.Loopback, setup.Port);
                }
                var answered = await Task.WhenAll(early.Select(s => AnswersSslRequestAsync(s, TimeSpan.FromSeconds(10))));

                using var later = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await later.ConnectAsync(IPAddress.Loopback, setup.Port);
                var laterAnswered = await AnswersSslRequestAsync(later, TimeSpan.FromSeconds(10));

                Assert.True(answered.All(a => a) && laterAnswered,
                    $"round {round}: {answered.Count(a => !a)} of {early.Count} clients that connected as the port opened got no answer " +
                    $"within 10 s; a client connecting after them was {(laterAnswered ? "" : "NOT ")}answered; {host}");
            }
            finally
            {
                foreach (var s in early) s.Dispose();
            }
            await using var c = await OpenAsync(setup.Port);
            Assert.Equal(round, await Scalar(c, $"select {round}"));
        }
    }

    // ------------------------------------------------------------------ layering: file < environment < --set

    [Theory]
    [InlineData(null, "2", 2)]
    [InlineData("3", null, 3)]
    [InlineData("3", "2", 2)]
    public async Task Environment_and_set_override_the_file_as_observed_by_postgres(string? environmentValue, string? setValue, int expected)
    {
        var db = await FreshDatabaseAsync("layer");
        using var setup = new HostSetup(pg);
        setup.WriteUsers(PostgresFixture.ScramUser);
        setup.WriteConfig("default-pool-size = 20\n" + setup.Database(db));
        var args = new List<string> { "--config", setup.ConfigPath };
        if (setValue != null) args.AddRange(["--set", $"pooler.default-pool-size={setValue}"]);
        var env = new Dictionary<string, string?>();
        if (environmentValue != null) env["POOLER__DEFAULT_POOL_SIZE"] = environmentValue;
        await using var host = HostProcess.Start(output, args, env);
        await host.WaitUntilListeningAsync(setup.Port, StartTimeout);

        // 6 clients each hold a transaction for a while: with the file's 20 PostgreSQL would see 6 backends.
        var max = await MaxBackendsDuringParallelTransactionsAsync(setup.Port, db, clients: 6);
        output.WriteLine($"env={environmentValue ?? "-"} set={setValue ?? "-"}: at most {max} backends");
        Assert.Equal(expected, max);
    }

    // ------------------------------------------------------------------ invalid configuration

    public static TheoryData<string, string> InvalidConfigurations => new()
    {
        { "bad-value", "key:pooler.default-pool-size" },
        { "unknown-key", "key:pooler.default-pool-sise" },
        { "missing-users-file", "key:pooler.auth.users-file" },
        { "bad-hocon-token", "hocon" },
        { "bad-hocon-unclosed-object", "hocon" },
        { "bad-hocon-unclosed-list", "hocon" },
        { "bad-set", "key:pooler.listen.port" },
        { "bad-environment", "key:pooler.max-client-conn" },
    };

    [Theory]
    [MemberData(nameof(InvalidConfigurations))]
    public async Task Invalid_configuration_exits_2_naming_the_problem_before_binding(string kind, string expected)
    {
        using var setup = new HostSetup(pg);
        setup.WriteUsers(PostgresFixture.ScramUser);
        var body = setup.Database(PostgresFixture.Database);
        var args = new List<string> { "--config", setup.ConfigPath };
        var env = new Dictionary<string, string?>();
        switch (kind)
        {
            case "bad-value": setup.WriteConfig("default-pool-size = zero\n" + body); break;
            case "unknown-key": setup.WriteConfig("default-pool-sise = 3\n" + body); break;
            case "missing-users-file": setup.WriteConfig("auth.users-file = \"no-such-userlist.txt\"\n" + body); break;
            // Syntax errors in an otherwise valid file: the comma after "}" (see reference.conf), the closing
            // brace of "pooler" missing, a list never closed.
            case "bad-hocon-token": setup.WriteRawConfig(setup.Text(body).Replace("pool-mode = transaction", "pool-mode = transaction }, x = 1 {")); break;
            case "bad-hocon-unclosed-object": setup.WriteRawConfig(setup.Text(body).TrimEnd().TrimEnd('}')); break;
            case "bad-hocon-unclosed-list": setup.WriteRawConfig(setup.Text("ignore-startup-parameters = [extra_float_digits\n" + body)); break;
            case "bad-set": setup.WriteConfig(body); args.AddRange(["--set", "pooler.listen.port=not-a-port"]); break;
            case "bad-environment": setup.WriteConfig(body); env["POOLER__MAX_CLIENT_CONN"] = "-1"; break;
            default: throw new ArgumentOutOfRangeException(nameof(kind), kind, null);
        }

        await using var host = HostProcess.Start(output, args, env);
        // Watch the port for the whole life of the process: it must never accept.
        var accepted = false;
        var watch = Stopwatch.StartNew();
        while (!host.HasExited && watch.Elapsed < InvalidExitTimeout)
        {
            if (FreePort.IsAccepting(setup.Port, timeoutMs: 100)) accepted = true;
            await Task.Delay(10);
        }
        var code = await host.WaitForExitAsync(InvalidExitTimeout);

        Assert.True(code == 2, $"exit code {code}, expected 2; {host}");
        Assert.False(accepted, $"port {setup.Port} accepted a connection although the configuration is invalid; {host}");
        Assert.DoesNotContain("listening on", host.StdOut);
        var err = host.StdErr;
        Assert.Contains("invalid configuration", err);
        if (expected.StartsWith("key:", StringComparison.Ordinal))
        {
            Assert.Contains($"'{expected[4..]}'", err);
        }
        else
        {
            // A syntax error has no key to name: it names the file and says it is not valid HOCON.
            Assert.Contains(setup.ConfigPath, err);
            Assert.Contains("not valid HOCON", err);
        }
    }

    // ------------------------------------------------------------------ SIGTERM

    [Fact]
    public async Task Sigterm_refuses_new_clients_lets_an_open_transaction_commit_tells_idle_clients_57P01_and_exits_0()
    {
        var db = await FreshDatabaseAsync("term");
        using var setup = new HostSetup(pg);
        setup.WriteUsers(PostgresFixture.ScramUser);
        setup.WriteConfig("shutdown-timeout = 30s\n" + setup.Database(db));
        await using var host = HostProcess.Start(output, ["--config", setup.ConfigPath]);
        await host.WaitUntilListeningAsync(setup.Port, StartTimeout);

        await using var busy = await OpenAsync(setup.Port, db);
        await Execute(busy, "create table t (id int)");
        await using var idle = await OpenAsync(setup.Port, db);
        Assert.Equal(1, await Scalar(idle, "select 1"));
        await using var tx = await busy.BeginTransactionAsync();
        await Execute(busy, "insert into t values (42)", tx);

        Assert.True(host.Signal(ProcessRunner.SigTerm), "kill -TERM failed");

        // New clients are refused: at TCP level (nothing listens) or at login with 57P01 ...
        await Eventually.Succeeds(async () =>
        {
            var refused = await Assert.ThrowsAnyAsync<NpgsqlException>(() => OpenAsync(setup.Port, db));
            Assert.True(IsRefusal(refused), $"not a refusal: {refused}");
        }, $"a new client is refused after SIGTERM; {host}");

        // ... an idle client is told 57P01 and closed (read without sending anything) ...
        var told = await Assert.ThrowsAsync<PostgresException>(() => idle.WaitAsync(TimeSpan.FromSeconds(15)));
        Assert.Equal("57P01", told.SqlState);
        Assert.NotEqual(System.Data.ConnectionState.Open, idle.State);

        // ... while the client inside a transaction may still finish it.
        Assert.False(host.HasExited, $"the host exited while a transaction was open; {host}");
        Assert.Equal(42, await Scalar(busy, "select id from t", tx));
        await tx.CommitAsync();
        Assert.Equal(42L, await pg.ScalarAsync("select sum(id) from t", db));

        var code = await host.WaitForExitAsync(ExitTimeout);
        Assert.True(code == 0, $"exit code {code} after SIGTERM; {host}");
        Assert.Contains("SIGTERM", host.StdOut);
    }

    [Fact]
    public async Task Sigterm_gives_up_on_a_transaction_left_open_after_shutdown_timeout_and_exits_0()
    {
        var db = await FreshDatabaseAsync("term_timeout");
        using var setup = new HostSetup(pg);
        setup.WriteUsers(PostgresFixture.ScramUser);
        setup.WriteConfig("shutdown-timeout = 2s\n" + setup.Database(db));
        await using var host = HostProcess.Start(output, ["--config", setup.ConfigPath]);
        await host.WaitUntilListeningAsync(setup.Port, StartTimeout);

        await using var c = await OpenAsync(setup.Port, db);
        await using var tx = await c.BeginTransactionAsync();
        Assert.Equal(1, await Scalar(c, "select 1", tx));

        var watch = Stopwatch.StartNew();
        Assert.True(host.Signal(ProcessRunner.SigTerm), "kill -TERM failed");
        var code = await host.WaitForExitAsync(ExitTimeout);
        output.WriteLine($"exited {code} after {watch.Elapsed.TotalSeconds:0.0} s");
        Assert.True(code == 0, $"exit code {code} after SIGTERM; {host}");
        Assert.True(watch.Elapsed >= TimeSpan.FromSeconds(1.5), $"exited after {watch.Elapsed} without waiting for shutdown-timeout (2s)");
        await Assert.ThrowsAnyAsync<Exception>(() => Scalar(c, "select 2", tx));
        // PostgreSQL got its connection back (the pooler's backend is gone, the transaction rolled back).
        await Eventually.True(async () => await pg.ActiveConnectionsAsync(user: PostgresFixture.ScramUser, database: db) == 0,
            "the pooler's server connections are closed after exit");
    }

    // ------------------------------------------------------------------ SIGHUP

    [Fact]
    public async Task Sighup_applies_a_new_database_user_and_pool_size_without_dropping_a_connected_client()
    {
        var newDb = await FreshDatabaseAsync("hup");
        using var setup = new HostSetup(pg);
        setup.WriteUsers(PostgresFixture.ScramUser);
        setup.WriteConfig("default-pool-size = 20\n" + setup.Database(PostgresFixture.Database));
        await using var host = HostProcess.Start(output, ["--config", setup.ConfigPath]);
        await host.WaitUntilListeningAsync(setup.Port, StartTimeout);

        // A client in the middle of a transaction across the reload.
        await using var old = await OpenAsync(setup.Port);
        await using var tx = await old.BeginTransactionAsync();
        var pidBefore = await Scalar(old, "select pg_backend_pid()", tx);

        // Not there yet: the new database and the new user are refused.
        Assert.Equal("3D000", (await Assert.ThrowsAsync<PostgresException>(() => OpenAsync(setup.Port, newDb))).SqlState);
        Assert.Equal("28P01", (await Assert.ThrowsAsync<PostgresException>(() => OpenAsync(setup.Port, user: PostgresFixture.Md5User))).SqlState);

        setup.WriteUsers(PostgresFixture.ScramUser, PostgresFixture.Md5User);
        setup.WriteConfig("default-pool-size = 2\n" + setup.Database(PostgresFixture.Database) + setup.Database(newDb));
        var logBefore = Count(host.StdOut, "SIGHUP: configuration reloaded");
        Assert.True(host.Signal(SigHup), "kill -HUP failed");
        await Eventually.True(() => Count(host.StdOut, "SIGHUP: configuration reloaded") > logBefore, $"the host logs the reload; {host}");

        // The new user and the new database work.
        await using (var md5 = await OpenAsync(setup.Port, user: PostgresFixture.Md5User))
            Assert.Equal(PostgresFixture.Md5User, await Scalar(md5, "select current_user"));
        await using (var n = await OpenAsync(setup.Port, newDb))
            Assert.Equal(newDb, await Scalar(n, "select current_database()"));
        // The new default-pool-size applies to the new database's pool.
        Assert.Equal(2, await MaxBackendsDuringParallelTransactionsAsync(setup.Port, newDb, clients: 5));

        // The client connected before the reload was not dropped: same transaction, same server.
        Assert.Equal(System.Data.ConnectionState.Open, old.State);
        Assert.Equal(pidBefore, await Scalar(old, "select pg_backend_pid()", tx));
        await tx.CommitAsync();
        Assert.Equal(7, await Scalar(old, "select 7"));
        Assert.False(host.HasExited, host.ToString());
    }

    [Theory]
    [InlineData("bad-value")]
    [InlineData("unclosed-list")]
    public async Task Sighup_with_an_invalid_file_keeps_the_running_configuration(string kind)
    {
        using var setup = new HostSetup(pg);
        setup.WriteUsers(PostgresFixture.ScramUser);
        setup.WriteConfig(setup.Database(PostgresFixture.Database));
        await using var host = HostProcess.Start(output, ["--config", setup.ConfigPath]);
        await host.WaitUntilListeningAsync(setup.Port, StartTimeout);
        await using var c = await OpenAsync(setup.Port);
        Assert.Equal(1, await Scalar(c, "select 1"));

        setup.WriteConfig(kind == "bad-value"
            ? "default-pool-size = -5\n" + setup.Database(PostgresFixture.Database)
            : "ignore-startup-parameters = [extra_float_digits\n" + setup.Database(PostgresFixture.Database));
        Assert.True(host.Signal(SigHup), "kill -HUP failed");
        await Eventually.True(() => host.StdOut.Contains("SIGHUP: invalid configuration"),
            $"the host logs that it keeps the running configuration; {host}");
        if (kind == "bad-value") Assert.Contains("pooler.default-pool-size", host.StdOut);

        Assert.False(host.HasExited, host.ToString());
        Assert.Equal(2, await Scalar(c, "select 2"));
        await using var fresh = await OpenAsync(setup.Port);
        Assert.Equal(3, await Scalar(fresh, "select 3"));
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Sends an SSLRequest on a raw connection; true when the answer ('N' or 'S') comes within the timeout.</summary>
    private static async Task<bool> AnswersSslRequestAsync(Socket socket, TimeSpan timeout)
    {
        byte[] sslRequest = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F]; // length 8, code 80877103
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await socket.SendAsync(sslRequest, SocketFlags.None, cts.Token);
            var answer = new byte[1];
            var n = await socket.ReceiveAsync(answer, SocketFlags.None, cts.Token);
            return n == 1 && answer[0] is (byte)'N' or (byte)'S';
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Connection refused by the OS, or a FATAL 57P01 (admin shutdown) at login.</summary>
    // 57P03 is what PostgreSQL itself answers a login while shutting down; 57P01 is admin_shutdown
    private static bool IsRefusal(NpgsqlException e) =>
        e is PostgresException { SqlState: "57P03" or "57P01" }
        || e.InnerException is SocketException { SocketErrorCode: SocketError.ConnectionRefused };

    private static int Count(string text, string what) => Regex.Matches(text, Regex.Escape(what)).Count;

    private async Task<string> FreshDatabaseAsync(string prefix)
    {
        var name = $"host_{prefix}_{Guid.NewGuid().ToString("N")[..12]}";
        await pg.CreateDatabaseAsync(name, owner: PostgresFixture.ScramUser);
        return name;
    }

    private async Task<NpgsqlConnection> OpenAsync(int port, string database = PostgresFixture.Database, string user = PostgresFixture.ScramUser)
    {
        // A generous login timeout: the first login to a freshly started host runs cold (JIT) code, and the
        // machine may be shared; a refusal still comes back at once.
        var b = new NpgsqlConnectionStringBuilder(pg.ConnectionString(user, database: database, port: port, host: "127.0.0.1")) { Timeout = 60 };
        var c = new NpgsqlConnection(b.ConnectionString);
        try
        {
            await c.OpenAsync();
        }
        catch
        {
            await c.DisposeAsync();
            throw;
        }
        return c;
    }

    private static async Task<object?> Scalar(NpgsqlConnection c, string sql, NpgsqlTransaction? tx = null)
    {
        await using var cmd = new NpgsqlCommand(sql, c, tx);
        return await cmd.ExecuteScalarAsync();
    }

    private static async Task Execute(NpgsqlConnection c, string sql, NpgsqlTransaction? tx = null)
    {
        await using var cmd = new NpgsqlCommand(sql, c, tx);
        await cmd.ExecuteNonQueryAsync();
    }

    /// <summary>
    /// Opens <paramref name="clients"/> connections, then each runs one transaction holding its server for
    /// 0.6 s, all at once; returns the most backends of scram_user on <paramref name="database"/> PostgreSQL saw.
    /// </summary>
    private async Task<int> MaxBackendsDuringParallelTransactionsAsync(int port, string database, int clients)
    {
        var conns = new List<NpgsqlConnection>();
        try
        {
            for (var i = 0; i < clients; i++) conns.Add(await OpenAsync(port, database));
            var max = 0;
            using var done = new CancellationTokenSource();
            var sampler = Task.Run(async () =>
            {
                while (!done.IsCancellationRequested)
                {
                    max = Math.Max(max, await pg.ActiveConnectionsAsync(user: PostgresFixture.ScramUser, database: database));
                    await Task.Delay(50);
                }
            });
            await Task.WhenAll(conns.Select(async c =>
            {
                await using var tx = await c.BeginTransactionAsync();
                await Execute(c, "select pg_sleep(0.6)", tx);
                await tx.CommitAsync();
            })).WaitAsync(TimeSpan.FromSeconds(60));
            done.Cancel();
            await sampler;
            // Servers stay open after the transactions: one last look catches any opened at the very end.
            return Math.Max(max, await pg.ActiveConnectionsAsync(user: PostgresFixture.ScramUser, database: database));
        }
        finally
        {
            foreach (var c in conns) await c.DisposeAsync();
        }
    }

    /// <summary>The UTC time at the start of an Akka log line ("[INFO][11/26/2026 16:08:26.118Z]..."), else null.</summary>
    private static DateTime? LogTimestamp(string line)
    {
        var m = Regex.Match(line, @"^\[[A-Z]+\]\[([^\]]+)\]");
        if (!m.Success) return null;
        string[] formats = ["MM/dd/yyyy HH:mm:ss.fffK", "M/d/yyyy HH:mm:ss.fffK", "yyyy-MM-dd HH:mm:ss.fffK", "yyyy-MM-ddTHH:mm:ss.fffK"];
        return DateTime.TryParseExact(m.Groups[1].Value, formats, CultureInfo.InvariantCulture,
            DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var t) ? t : null;
    }

    /// <summary>A folder with the host's config file (pooler.conf) and users file (userlist.txt), and a free port.</summary>
    private sealed class HostSetup(PostgresFixture pg) : IDisposable
    {
        private readonly TestDirectory _dir = TestDirectory.Create("host");

        public int Port { get; } = FreePort.Next();
        public string ConfigPath => _dir.Combine("pooler.conf");
        public string UsersPath => _dir.Combine("userlist.txt");

        /// <summary>A database entry pointing at the fixture's PostgreSQL.</summary>
        public string Database(string name) =>
            $"databases {{ {name} {{ host = \"127.0.0.1\", port = {pg.Port}, dbname = \"{name}\" }} }}\n";

        /// <summary>Writes pooler.conf: listen on <see cref="Port"/>, SCRAM with the relative "userlist.txt", transaction pooling, then <paramref name="body"/>.</summary>
        public void WriteConfig(string body) => WriteRawConfig(Text(body));

        /// <summary>The text <see cref="WriteConfig"/> writes.</summary>
        public string Text(string body) =>
            $$"""
            akka.loglevel = INFO
            pooler {
              listen { host = "127.0.0.1", port = {{Port}} }
              auth { type = scram-sha-256, users-file = "userlist.txt" }
              pool-mode = transaction
              max-client-conn = 200
              shutdown-timeout = 10s
            {{body}}
            }
            """;

        public void WriteRawConfig(string text) => Replace(ConfigPath, text);

        /// <summary>Writes userlist.txt with the fixture users' plain passwords.</summary>
        public void WriteUsers(params string[] users) =>
            Replace(UsersPath, UsersFile.Format(users.Select(u => KeyValuePair.Create(u, PostgresFixture.Passwords[u]))));

        /// <summary>Write then rename, so a reload never reads a half-written file.</summary>
        private static void Replace(string path, string text)
        {
            File.WriteAllText(path + ".tmp", text);
            File.Move(path + ".tmp", path, overwrite: true);
        }

        public void Dispose() => _dir.Dispose();
    }

    /// <summary>
    /// The host as its own process: <c>dotnet Pooler.Host.dll ARGS</c>, stdout and stderr captured,
    /// killed on dispose if still running.
    /// </summary>
    private sealed class HostProcess : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _stdout = new();
        private readonly StringBuilder _stderr = new();

        private readonly ITestOutputHelper _output;

        private HostProcess(Process process, ITestOutputHelper output)
        {
            _process = process;
            _output = output;
        }

        public int Pid => _process.Id;
        public bool HasExited => _process.HasExited;
        public string StdOut { get { lock (_stdout) return _stdout.ToString(); } }
        public string StdErr { get { lock (_stderr) return _stderr.ToString(); } }

        /// <summary>
        /// Starts the host. POOLER__/AKKA__ variables of the test process are not passed on; only
        /// <paramref name="environment"/>'s are.
        /// </summary>
        public static HostProcess Start(ITestOutputHelper output, IEnumerable<string> args, IReadOnlyDictionary<string, string?>? environment = null,
            string? workingDirectory = null)
        {
            var dll = Path.Combine(AppContext.BaseDirectory, "Pooler.Host.dll");
            if (!File.Exists(dll)) throw new FileNotFoundException("the host is not in the test output folder", dll);
            var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h && File.Exists(h) ? h : "dotnet";
            var psi = ProcessRunner.CreateStartInfo(dotnet, new[] { dll }.Concat(args), workingDirectory: workingDirectory ?? AppContext.BaseDirectory);
            foreach (var key in psi.Environment.Keys.ToList())
                if (key.StartsWith("POOLER__", StringComparison.OrdinalIgnoreCase) || key.StartsWith("AKKA__", StringComparison.OrdinalIgnoreCase))
                    psi.Environment.Remove(key);
            if (environment != null)
                foreach (var (k, v) in environment)
                {
                    if (v == null) psi.Environment.Remove(k);
                    else psi.Environment[k] = v;
                }
            psi.RedirectStandardOutput = true;
            psi.RedirectStandardError = true;
            psi.RedirectStandardInput = true;

            var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
            var host = new HostProcess(process, output);
            process.OutputDataReceived += (_, e) => { if (e.Data != null) lock (host._stdout) host._stdout.AppendLine(e.Data); };
            process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (host._stderr) host._stderr.AppendLine(e.Data); };
            process.Start();
            process.StandardInput.Close();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            return host;
        }

        /// <summary>
        /// Waits until the host logs that it listens on <paramref name="port"/> (fails at once if it exits first).
        /// The log line, not a probe connection, is the readiness signal: see
        /// <see cref="Clients_arriving_the_moment_the_port_opens_are_served"/> for why probing early is unsafe.
        /// </summary>
        public async Task WaitUntilListeningAsync(int port, TimeSpan timeout)
        {
            var watch = Stopwatch.StartNew();
            var line = $"listening on 127.0.0.1:{port}";
            while (watch.Elapsed < timeout)
            {
                if (StdOut.Contains(line)) return;
                if (HasExited)
                    throw new Xunit.Sdk.XunitException($"the host exited before listening on {port}; {this}");
                await Task.Delay(20);
            }
            throw new Xunit.Sdk.XunitException($"the host did not log '{line}' within {timeout.TotalSeconds} s; {this}");
        }

        /// <summary>kill -SIG pid.</summary>
        public bool Signal(int signal) => ProcessRunner.Signal(Pid, signal);

        /// <summary>Waits for the process to exit and returns its exit code; fails after <paramref name="timeout"/>.</summary>
        public async Task<int> WaitForExitAsync(TimeSpan timeout)
        {
            using var cts = new CancellationTokenSource(timeout);
            try
            {
                await _process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                throw new Xunit.Sdk.XunitException($"the host did not exit within {timeout.TotalSeconds} s; {this}");
            }
            return _process.ExitCode;
        }

        public override string ToString() =>
            $"host pid {_process.Id}{(HasExited ? $" exited {_process.ExitCode}" : " running")}\n--- stdout ---\n{StdOut}\n--- stderr ---\n{StdErr}";

        public async ValueTask DisposeAsync()
        {
            try
            {
                if (!_process.HasExited)
                {
                    _process.Kill(entireProcessTree: true);
                    await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
                }
            }
            catch (Exception)
            {
                // already gone
            }
            // The host's own words end up in the test output, for whoever reads a failure.
            try { _output.WriteLine(ToString()); } catch (InvalidOperationException) { }
            _process.Dispose();
        }
    }
}
