using System.Buffers.Binary;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Pooler.Actors.Auth;
using Pooler.Tests.Infrastructure;
using Xunit;

namespace Pooler.Tests.Ops;

/// <summary>
/// The admin console against Debian's PgBouncer 1.18 in front of the same PostgreSQL: the same commands must give the
/// same result shapes (column names and type OIDs, in order, and the tag) and the same errors (SQLSTATE and text),
/// so that scripts and dashboards written for PgBouncer's console read ours unchanged.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class AdminConsoleCompatTests(AdminConsoleCompatTests.Servers servers) : IClassFixture<AdminConsoleCompatTests.Servers>
{
    private const string StatsUser = PostgresFixture.Md5User;
    private PgBouncerServer BouncerServer => servers.Bouncer!;
    private PoolerProcess PoolerServer => servers.Pooler!;

    /// <summary>PgBouncer and a pooler process side by side, shared by the class's tests (they leave both as they found them).</summary>
    public sealed class Servers(PostgresFixture pg) : IAsyncLifetime
    {
        public PgBouncerServer? Bouncer { get; private set; }
        public PoolerProcess? Pooler { get; private set; }

        public async Task InitializeAsync()
        {
            Bouncer = await Task.Run(() => PgBouncerServer.Start(pg, new PgBouncerOptions
            {
                // the same two databases as the pooler's, not a "*" entry: PAUSE/KILL of an unknown name must fail on both
                Databases =
                [
                    $"{PostgresFixture.Database} = host=127.0.0.1 port={pg.Port} dbname={PostgresFixture.Database}",
                    $"{PostgresFixture.OtherDatabase} = host=127.0.0.1 port={pg.Port} dbname={PostgresFixture.OtherDatabase}",
                ],
                Settings = new Dictionary<string, string> { ["stats_users"] = $"{PostgresFixture.AdminUser},{StatsUser}" },
            }));
            Pooler = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg,
                settings: $"admin-users = [{PostgresFixture.AdminUser}]\nstats-users = [{StatsUser}]"));
        }

        public async Task DisposeAsync()
        {
            if (Pooler != null) await Pooler.DisposeAsync();
            Bouncer?.Dispose();
        }
    }

    private Task<ConsoleClient> Bouncer(string user = PostgresFixture.AdminUser)
        => ConsoleClient.ConnectAsync(BouncerServer.Port, user, PostgresFixture.PasswordOf(user), "pgbouncer");

    private Task<ConsoleClient> Pooler(string user = PostgresFixture.AdminUser, string database = "pgbouncer")
        => ConsoleClient.ConnectAsync(PoolerServer.Port, user, PostgresFixture.PasswordOf(user), database);

    public static TheoryData<string> ShowCommands =>
    [
        "SHOW POOLS", "SHOW STATS", "SHOW STATS_TOTALS", "SHOW STATS_AVERAGES", "SHOW TOTALS", "SHOW CLIENTS", "SHOW SERVERS",
        "SHOW DATABASES", "SHOW USERS", "SHOW CONFIG", "SHOW LISTS", "SHOW VERSION",
    ];

    [Theory]
    [MemberData(nameof(ShowCommands))]
    public async Task Show_has_PgBouncers_column_names_and_type_oids_in_order(string command)
    {
        // a client and a server on each side, so the row-producing paths run too
        await using (var app = await ConsoleClient.ConnectAsync(BouncerServer.Port, PostgresFixture.ScramUser, PostgresFixture.ScramPassword, PostgresFixture.Database))
            (await app.QueryAsync("SELECT 1")).EnsureOk();
        await using (var app = await ConsoleClient.ConnectAsync(PoolerServer.Port, PostgresFixture.ScramUser, PostgresFixture.ScramPassword, PostgresFixture.Database))
            (await app.QueryAsync("SELECT 1")).EnsureOk();

        await using var theirs = await Bouncer();
        await using var ours = await Pooler();
        var expected = (await theirs.QueryAsync(command)).EnsureOk();
        var actual = (await ours.QueryAsync(command)).EnsureOk();

        Assert.Equal(WithPreparedStatementCounters(expected.Columns), actual.Columns);
        Assert.Equal("SHOW", expected.Tag);
        Assert.Equal(expected.Tag, actual.Tag);
        Assert.All(actual.Rows, r => Assert.Equal(actual.Columns.Count, r.Count));
    }

    /// <summary>
    /// PgBouncer 1.21 added prepared-statement counters after the wait time columns; Debian's 1.18 predates them,
    /// so they are expected where 1.21 puts them (bigint, like the counters around them).
    /// </summary>
    private static List<(string Name, int Type)> WithPreparedStatementCounters(IReadOnlyList<(string Name, int Type)> columns)
    {
        var result = new List<(string Name, int Type)>();
        foreach (var c in columns)
        {
            result.Add(c);
            var prefix = c.Name switch { "total_wait_time" => "total_", "avg_wait_time" => "avg_", "wait_time" => "", _ => null };
            if (prefix != null)
                foreach (var n in new[] { "client_parse_count", "server_parse_count", "bind_count" }) result.Add((prefix + n, c.Type));
        }
        return result;
    }

    [Fact]
    public async Task Login_parameters_are_PgBouncers()
    {
        await using var theirs = await Bouncer();
        await using var ours = await Pooler();
        Assert.Equal(theirs.Parameters.OrderBy(p => p.Key), ours.Parameters.OrderBy(p => p.Key));
        await using var viaAlias = await Pooler(database: "pooler");
        (await viaAlias.QueryAsync("SHOW VERSION")).EnsureOk();
    }

    public static TheoryData<string> FailingCommands =>
    [
        "NOSUCHCOMMAND", "SELECT 1", "SHOW", "SHOW NOSUCHTHING", "SHOW POOLS x", "SHOW VERSION; SHOW STATE", "", "KILL",
        "PAUSE nosuchdb", "RESUME nosuchdb", "KILL nosuchdb", "PAUSE pgbouncer", "KILL pgbouncer", "RECONNECT pgbouncer",
        "WAIT_CLOSE pgbouncer", "SHOW STATE",
    ];

    [Theory]
    [MemberData(nameof(FailingCommands))]
    public async Task Errors_have_PgBouncers_sqlstate_and_text_and_the_connection_stays_usable(string command)
    {
        await using var theirs = await Bouncer();
        await using var ours = await Pooler();
        var expected = await theirs.QueryAsync(command);
        var actual = await ours.QueryAsync(command);

        Assert.NotNull(expected.Error);
        if (command == "SHOW STATE")
        {
            // PgBouncer 1.19 added SHOW STATE; ours answers it (see AdminConsoleTests)
            Assert.Equal("invalid command 'SHOW STATE', use SHOW HELP;", expected.Error.Message);
            return;
        }
        Assert.NotNull(actual.Error);
        Assert.Equal((expected.Error.Severity, expected.Error.SqlState, expected.Error.Message), (actual.Error.Severity, actual.Error.SqlState, actual.Error.Message));
        Assert.Equal('I', actual.Status);
        (await ours.QueryAsync("SHOW VERSION")).EnsureOk();
    }

    [Theory]
    [InlineData("PAUSE pooler_test")]
    [InlineData("RELOAD")]
    [InlineData("KILL pooler_test")]
    [InlineData("SHUTDOWN")]
    public async Task A_stats_user_gets_admin_access_needed_for_controls_with_42501(string command)
    {
        await using var theirs = await Bouncer(StatsUser);
        await using var ours = await Pooler(StatsUser);
        var expected = await theirs.QueryAsync(command);
        var actual = await ours.QueryAsync(command);
        Assert.Equal(("ERROR", "08P01", "admin access needed"), (expected.Error?.Severity, expected.Error?.SqlState, expected.Error?.Message));
        // the same severity and text; the SQLSTATE is PostgreSQL's insufficient_privilege (PgBouncer says 08P01)
        Assert.Equal(("ERROR", "42501", "admin access needed"), (actual.Error?.Severity, actual.Error?.SqlState, actual.Error?.Message));
        (await ours.QueryAsync("SHOW POOLS")).EnsureOk();
        Assert.False(PoolerServer.HasExited);
    }

    [Fact]
    public async Task Pause_resume_of_one_database_answers_as_PgBouncer_also_before_the_database_has_a_pool()
    {
        await using var theirs = await Bouncer();
        await using var ours = await Pooler();
        foreach (var command in new[] { "PAUSE other_db", "PAUSE other_db", "RESUME other_db", "RESUME other_db", "PAUSE", "RESUME" })
        {
            var expected = await theirs.QueryAsync(command);
            var actual = await ours.QueryAsync(command);
            Assert.True((expected.Tag, expected.Error?.SqlState, expected.Error?.Message) == (actual.Tag, actual.Error?.SqlState, actual.Error?.Message),
                $"{command}: PgBouncer {expected}, pooler {actual}");
        }
    }

    [Fact]
    public async Task Show_help_is_a_notice_with_a_show_tag()
    {
        await using var theirs = await Bouncer();
        await using var ours = await Pooler();
        var expected = (await theirs.QueryAsync("SHOW HELP")).EnsureOk();
        var actual = (await ours.QueryAsync("SHOW HELP")).EnsureOk();
        Assert.Empty(actual.Columns);
        Assert.Equal((expected.Tag, expected.Notices.Single().Message), (actual.Tag, actual.Notices.Single().Message));
        Assert.Contains("SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS", actual.Notices.Single().Detail);
    }
}

/// <summary>An ErrorResponse or NoticeResponse.</summary>
public sealed record PgFields(string Severity, string SqlState, string Message, string? Detail)
{
    public static PgFields Parse(byte[] body)
    {
        var d = new Dictionary<char, string>();
        var i = 0;
        while (i < body.Length && body[i] != 0)
        {
            var code = (char)body[i++];
            var end = Array.IndexOf(body, (byte)0, i);
            if (end < 0) break;
            d[code] = Encoding.UTF8.GetString(body, i, end - i);
            i = end + 1;
        }
        return new PgFields(d.GetValueOrDefault('S', ""), d.GetValueOrDefault('C', ""), d.GetValueOrDefault('M', ""), d.GetValueOrDefault('D'));
    }

    public override string ToString() => $"{Severity} {SqlState} \"{Message}\"";
}

/// <summary>What a simple query got back: columns (name, type OID), rows as text, the tag, an error, notices, the status of ReadyForQuery.</summary>
public sealed record QueryResult(
    IReadOnlyList<(string Name, int Type)> Columns, IReadOnlyList<IReadOnlyList<string?>> Rows, string? Tag, PgFields? Error,
    IReadOnlyList<PgFields> Notices, char Status)
{
    public QueryResult EnsureOk()
        => Error == null ? this : throw new Xunit.Sdk.XunitException($"console answered {Error}");

    public int Index(string column)
    {
        for (var i = 0; i < Columns.Count; i++) if (Columns[i].Name == column) return i;
        throw new Xunit.Sdk.XunitException($"no column {column} in [{string.Join(", ", Columns.Select(c => c.Name))}]");
    }

    /// <summary>The rows as column-name maps.</summary>
    public IEnumerable<IReadOnlyDictionary<string, string?>> Maps()
        => Rows.Select(r => (IReadOnlyDictionary<string, string?>)Columns.Select((c, i) => (c.Name, r[i])).ToDictionary(x => x.Name, x => x.Item2));

    public override string ToString()
        => Error != null ? $"error {Error}" : $"tag {Tag}, {Rows.Count} rows: " + string.Join(" / ", Rows.Select(r => string.Join("|", r)));
}

/// <summary>Thrown when a login is refused (ErrorResponse before ReadyForQuery).</summary>
public sealed class PgLoginException(PgFields error) : Exception($"login refused: {error}")
{
    public PgFields Error { get; } = error;
}

/// <summary>
/// A bare simple-query client (Npgsql speaks the extended protocol, which the console refuses, as PgBouncer's does).
/// Logs in with trust, cleartext, MD5 or SCRAM-SHA-256; every read is bounded by <see cref="ReadTimeout"/>.
/// </summary>
public sealed class ConsoleClient : IAsyncDisposable
{
    private readonly TcpClient _tcp;
    private readonly NetworkStream _stream;

    private ConsoleClient(TcpClient tcp)
    {
        _tcp = tcp;
        _stream = tcp.GetStream();
    }

    public TimeSpan ReadTimeout { get; set; } = TimeSpan.FromSeconds(60);
    public Dictionary<string, string> Parameters { get; } = new();

    public static async Task<ConsoleClient> ConnectAsync(int port, string user, string? password, string database)
    {
        var tcp = new TcpClient { NoDelay = true };
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30))) await tcp.ConnectAsync("127.0.0.1", port, cts.Token);
        var c = new ConsoleClient(tcp);
        try
        {
            await c.LoginAsync(user, password, database);
            return c;
        }
        catch
        {
            await c.DisposeAsync();
            throw;
        }
    }

    /// <summary>The error a login is refused with (fails the test if it is accepted).</summary>
    public static async Task<PgFields> LoginErrorAsync(int port, string user, string? password, string database)
    {
        try
        {
            await using var c = await ConnectAsync(port, user, password, database);
        }
        catch (PgLoginException e)
        {
            return e.Error;
        }
        throw new Xunit.Sdk.XunitException($"login of {user} to {database} was accepted");
    }

    private async Task LoginAsync(string user, string? password, string database)
    {
        var body = new List<byte>();
        body.AddRange(Int32(196608));
        foreach (var s in new[] { "user", user, "database", database }) body.AddRange(CString(s));
        body.Add(0);
        await _stream.WriteAsync(new byte[][] { Int32(body.Count + 4), [.. body] }.SelectMany(b => b).ToArray());
        ScramClient? scram = null;
        while (true)
        {
            var (type, m) = await ReadAsync() ?? throw new IOException("connection closed during login");
            switch (type)
            {
                case 'R':
                    var code = BinaryPrimitives.ReadInt32BigEndian(m);
                    switch (code)
                    {
                        case 0: break;
                        case 3: await SendAsync('p', CString(password ?? "")); break;
                        case 5:
                            var inner = Convert.ToHexStringLower(MD5.HashData(Encoding.UTF8.GetBytes((password ?? "") + user)));
                            var outer = Convert.ToHexStringLower(MD5.HashData([.. Encoding.UTF8.GetBytes(inner), .. m.AsSpan(4, 4)]));
                            await SendAsync('p', CString("md5" + outer));
                            break;
                        case 10:
                            scram = new ScramClient(password ?? "");
                            var first = Encoding.UTF8.GetBytes(scram.ClientFirstMessage());
                            await SendAsync('p', [.. CString("SCRAM-SHA-256"), .. Int32(first.Length), .. first]);
                            break;
                        case 11:
                            await SendAsync('p', Encoding.UTF8.GetBytes(scram!.ClientFinalMessage(Encoding.UTF8.GetString(m, 4, m.Length - 4))));
                            break;
                        case 12:
                            if (!scram!.VerifyServerFinal(Encoding.UTF8.GetString(m, 4, m.Length - 4))) throw new IOException("bad SCRAM server signature");
                            break;
                        default: throw new IOException($"unsupported authentication request {code}");
                    }
                    break;
                case 'S':
                    var parts = Encoding.UTF8.GetString(m).Split('\0');
                    Parameters[parts[0]] = parts[1];
                    break;
                case 'E':
                    throw new PgLoginException(PgFields.Parse(m));
                case 'Z':
                    return;
            }
        }
    }

    private static byte[] Int32(int v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(b, v);
        return b;
    }

    private static byte[] CString(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    public async Task SendAsync(char type, byte[] body) => await _stream.WriteAsync(new byte[][] { [(byte)type], Int32(body.Length + 4), body }.SelectMany(b => b).ToArray());

    public Task SendQueryAsync(string sql) => SendAsync('Q', CString(sql));

    /// <summary>Parse of an unnamed statement, then Sync: the extended protocol.</summary>
    public Task SendParseAndSyncAsync(string sql)
        => _stream.WriteAsync(new byte[][] { [(byte)'P', .. Int32(4 + 1 + sql.Length + 1 + 2), 0, .. CString(sql), 0, 0], [(byte)'S', 0, 0, 0, 4] }
            .SelectMany(b => b).ToArray()).AsTask();

    /// <summary>The next message, or null at EOF (a reset counts as EOF); TimeoutException after <paramref name="timeout"/>.</summary>
    public async Task<(char Type, byte[] Body)?> ReadAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? ReadTimeout);
        try
        {
            var header = new byte[5];
            if (!await ReadExactlyAsync(header, cts.Token)) return null;
            var len = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(1));
            var body = new byte[len - 4];
            if (!await ReadExactlyAsync(body, cts.Token)) return null;
            return ((char)header[0], body);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no message within {(timeout ?? ReadTimeout).TotalSeconds} s");
        }
    }

    private async Task<bool> ReadExactlyAsync(byte[] buffer, CancellationToken ct)
    {
        var got = 0;
        while (got < buffer.Length)
        {
            int n;
            try { n = await _stream.ReadAsync(buffer.AsMemory(got), ct); }
            catch (IOException) { return false; }
            if (n == 0) return false;
            got += n;
        }
        return true;
    }

    /// <summary>Reads an answer through ReadyForQuery.</summary>
    public async Task<QueryResult> ReadResultAsync(TimeSpan? timeout = null)
    {
        var columns = new List<(string, int)>();
        var rows = new List<IReadOnlyList<string?>>();
        var notices = new List<PgFields>();
        string? tag = null;
        PgFields? error = null;
        while (true)
        {
            var (type, m) = await ReadAsync(timeout) ?? throw new IOException($"connection closed before ReadyForQuery (error so far: {error})");
            switch (type)
            {
                case 'T':
                    var pos = 2;
                    for (var i = 0; i < BinaryPrimitives.ReadInt16BigEndian(m); i++)
                    {
                        var end = Array.IndexOf(m, (byte)0, pos);
                        var name = Encoding.UTF8.GetString(m, pos, end - pos);
                        pos = end + 1;
                        columns.Add((name, BinaryPrimitives.ReadInt32BigEndian(m.AsSpan(pos + 6))));
                        pos += 18;
                    }
                    break;
                case 'D':
                    var row = new List<string?>();
                    var p = 2;
                    for (var i = 0; i < BinaryPrimitives.ReadInt16BigEndian(m); i++)
                    {
                        var len = BinaryPrimitives.ReadInt32BigEndian(m.AsSpan(p));
                        p += 4;
                        row.Add(len < 0 ? null : Encoding.UTF8.GetString(m, p, len));
                        if (len > 0) p += len;
                    }
                    rows.Add(row);
                    break;
                case 'C': tag = Encoding.UTF8.GetString(m, 0, m.Length - 1); break;
                case 'E': error = PgFields.Parse(m); break;
                case 'N': notices.Add(PgFields.Parse(m)); break;
                case 'Z': return new QueryResult(columns, rows, tag, error, notices, (char)m[0]);
            }
        }
    }

    public async Task<QueryResult> QueryAsync(string sql, TimeSpan? timeout = null)
    {
        await SendQueryAsync(sql);
        return await ReadResultAsync(timeout);
    }

    public ValueTask DisposeAsync()
    {
        _tcp.Dispose();
        return ValueTask.CompletedTask;
    }
}
