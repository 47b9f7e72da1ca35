using System.Buffers.Binary;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.RegularExpressions;
using Akka.Actor;
using Npgsql;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Tls;

/// <summary>
/// TLS between clients and the pooler (client-tls-*), end to end: psql and Npgsql through a pooler in front of the
/// TLS-only PostgreSQL (so the pooler's server side is TLS too), raw TLS clients for what libraries hide (direct TLS
/// with and without ALPN, handshakes cut off or refused), the refusals of each sslmode and of auth type cert, and that
/// failed connections neither disturb open sessions nor leave sessions, actors or descriptors behind.
/// </summary>
[Collection(PostgresTlsCollection.Name)]
public sealed class TlsClientSideTests(TlsPostgresFixture pg, ITestOutputHelper output)
{
    private const string ScramUser = TlsPostgresFixture.ScramUser;
    private const string CertUser = TlsPostgresFixture.CertUser;
    private const string Database = TlsPostgresFixture.Database;

    // psql -At prints a bool as t; Npgsql would give a bool: one text answer for both
    private const string SslQuery = "select case when ssl then 't' else 'f' end from pg_stat_ssl where pid = pg_backend_pid()";

    private const string SslRequiredPrefix = "SSL required";
    private const string NoAlpnMessage = "received direct SSL connection request without ALPN protocol negotiation extension";
    private const string NoClientCertMessage = "connection requires a valid client certificate";

    private static readonly TimeSpan IoTimeout = TimeSpan.FromSeconds(10);

    // ---------------- set-up ----------------

    /// <summary>
    /// A pooler with client-tls-sslmode = <paramref name="mode"/> serving server.crt (or wronghost.crt), optionally
    /// asking for client certificates of the CA, and verify-full TLS to the fixture's PostgreSQL.
    /// </summary>
    private Task<PoolerHarness> StartAsync(string mode, bool clientCa = false, bool wrongHost = false, string extra = "")
    {
        var certs = pg.Certs;
        var (cert, key) = wrongHost ? (certs.WrongHostCert, certs.WrongHostKey) : (certs.ServerCert, certs.ServerKey);
        var settings = $"""
            client-tls-sslmode = {mode}
            client-tls-cert-file = "{cert}"
            client-tls-key-file = "{key}"
            {(clientCa ? $"client-tls-ca-file = \"{certs.CaCert}\"" : "")}
            server-tls-sslmode = verify-full
            server-tls-ca-file = "{certs.CaCert}"
            {extra}
            """;
        return PoolerHarness.StartAsync(pg, settings);
    }

    /// <summary>Npgsql to the pooler at 127.0.0.1 (in server.crt's SANs); VerifyFull with ca.crt unless told otherwise.</summary>
    private NpgsqlConnectionStringBuilder Npgsql(PoolerHarness p, string user = ScramUser, string? password = null,
        SslMode sslMode = SslMode.VerifyFull, string? rootCertificate = null, (string Cert, string Key)? clientCert = null,
        string? applicationName = null)
        => pg.ConnectionStringBuilder(user, password, Database, sslMode, rootCertificate, clientCert?.Cert, clientCert?.Key,
            applicationName, pooling: false, port: p.Port, host: "127.0.0.1");

    private static async Task<NpgsqlConnection> OpenAsync(NpgsqlConnectionStringBuilder b)
    {
        var c = new NpgsqlConnection(b.ConnectionString);
        try
        {
            await c.OpenAsync();
            return c;
        }
        catch
        {
            await c.DisposeAsync();
            throw;
        }
    }

    private static async Task<string?> ScalarAsync(NpgsqlConnection c, string sql)
    {
        await using var cmd = new NpgsqlCommand(sql, c);
        return (await cmd.ExecuteScalarAsync())?.ToString();
    }

    /// <summary>psql -At through the pooler; TLS per <paramref name="env"/> (default verify-full with ca.crt).</summary>
    private Task<ProcessResult> PsqlAsync(PoolerHarness p, string sql, string user = ScramUser, string? password = null,
        IReadOnlyDictionary<string, string?>? env = null, string host = "127.0.0.1", string database = Database)
        => pg.RunPsqlAsync(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql], user, password, database, p.Port, host,
            TimeSpan.FromSeconds(30), env ?? pg.SslEnvironment());

    // ---------------- 1. TLS end to end ----------------

    [Fact]
    public async Task Psql_verify_full_through_the_pooler_is_tls_on_both_legs()
    {
        await using var p = await StartAsync("require");
        var r = await pg.RunPsqlAsync(["-v", "ON_ERROR_STOP=1", "-At", "-c", "\\conninfo", "-c", SslQuery], ScramUser,
            port: p.Port, host: "127.0.0.1", environment: pg.SslEnvironment("verify-full"));
        r.EnsureSuccess("psql verify-full through the pooler");
        output.WriteLine(r.StdOut);
        // client -> pooler: libpq verified server.crt against ca.crt and the host name, and reports TLS
        Assert.Matches(@"SSL connection \(protocol: TLSv1\.[23]", r.StdOut);
        // pooler -> PostgreSQL: the backend serving the query sees TLS too
        Assert.Equal("t", r.StdOut.Trim().Split('\n')[^1].Trim());
        await p.AssertDrainedAsync(servers: 5);
    }

    [Theory]
    [InlineData(SslNegotiation.Postgres)]
    [InlineData(SslNegotiation.Direct)]
    public async Task Npgsql_verify_full_through_the_pooler_reaches_postgres_over_tls(SslNegotiation negotiation)
    {
        await using var p = await StartAsync("require");
        var b = Npgsql(p);
        b.SslNegotiation = negotiation;
        await using (var c = await OpenAsync(b))
        {
            Assert.Equal("t", await ScalarAsync(c, SslQuery));
            Assert.Equal(ScramUser, await ScalarAsync(c, "select current_user"));
        }
        await p.AssertDrainedAsync(servers: 5);
    }

    // ---------------- 2. direct TLS and ALPN ----------------

    /// <summary>
    /// A connection per transaction (pgbench -C), a couple of thousand TLS handshakes in a row, none lost. Written after
    /// a race the benchmark found (the 'S' answering SSLRequest went out before the adapter switched to handshaking, so a
    /// fast client's hello could be read as plaintext: about 1 in 4,000 connections of a Release build); the timing of
    /// this in-process run does not reproduce that race on demand, so it guards the path under load rather than proving the fix.
    /// </summary>
    [Fact]
    public async Task Pgbench_with_a_new_tls_connection_per_transaction_loses_none()
    {
        await using var p = await StartAsync("require");
        using var dir = TestDirectory.Create("tls-pgbench-connect");
        var script = dir.Combine("select1.sql");
        await File.WriteAllTextAsync(script, "select 1;\n");
        var run = await Task.Run(() => pg.RunPgbench(["-n", "-C", "-f", script, "-c", "8", "-j", "2", "-T", "8"], ScramUser,
            port: p.Port, host: "127.0.0.1", timeout: TimeSpan.FromSeconds(60),
            environment: new Dictionary<string, string?> { ["PGSSLMODE"] = "require" }));
        output.WriteLine(run.ToString());
        run.EnsureSuccess("pgbench -C through the pooler"); // a client aborted while connecting exits 2
        Assert.Contains("number of failed transactions: 0 (0.000%)", run.StdOut);
        var processed = Regex.Match(run.StdOut, @"number of transactions actually processed: (\d+)");
        Assert.True(processed.Success && int.Parse(processed.Groups[1].Value) > 200, run.StdOut);
        await p.AssertDrainedAsync(servers: 5);
    }

    [Fact]
    public async Task Direct_tls_without_alpn_gets_08P01_inside_tls_and_is_closed()
    {
        await using var p = await StartAsync("require");
        using var c = await RawTls.ConnectAsync(p.Port, direct: true, alpn: false, pg.Certs.CaCert);
        Assert.Equal(default, c.Ssl.NegotiatedApplicationProtocol);
        var m = await c.ReadAsync();
        Assert.NotNull(m);
        Assert.Equal('E', m.Type);
        var f = m.Fields();
        Assert.Equal("FATAL", f.GetValueOrDefault('S'));
        Assert.Equal("08P01", f.GetValueOrDefault('C'));
        Assert.Equal(NoAlpnMessage, f.GetValueOrDefault('M'));
        Assert.True(await c.ClosedAsync(), "the pooler closes the connection after the FATAL");
        await p.AssertDrainedAsync(servers: 5);
    }

    [Fact]
    public async Task Direct_tls_with_alpn_postgresql_proceeds_to_authentication()
    {
        await using var p = await StartAsync("require");
        using var c = await RawTls.ConnectAsync(p.Port, direct: true, alpn: true, pg.Certs.CaCert);
        Assert.Equal(new SslApplicationProtocol("postgresql"), c.Ssl.NegotiatedApplicationProtocol);
        await c.SendStartupAsync(ScramUser, Database);
        var m = await c.ReadAsync();
        Assert.NotNull(m);
        Assert.True(m.Type == 'R', $"expected an authentication request, got {Describe(m)}");
        Assert.Equal(10, BinaryPrimitives.ReadInt32BigEndian(m.Body)); // AuthenticationSASL
        Assert.Contains("SCRAM-SHA-256", Encoding.ASCII.GetString(m.Body, 4, m.Body.Length - 4));
    }

    [Theory]
    [InlineData("tlsv1.2", SslProtocols.Tls12)]
    [InlineData("tlsv1.3", SslProtocols.Tls13)]
    public async Task Client_tls_protocols_limits_the_versions_offered(string setting, SslProtocols only)
    {
        await using var p = await StartAsync("require", extra: $"client-tls-protocols = \"{setting}\"");
        using (var c = await RawTls.ConnectAsync(p.Port, direct: false, alpn: false, pg.Certs.CaCert))
            Assert.Equal(only, c.Ssl.SslProtocol);
        var other = only == SslProtocols.Tls12 ? SslProtocols.Tls13 : SslProtocols.Tls12;
        var e = await Record.ExceptionAsync(() => RawTls.ConnectAsync(p.Port, direct: false, alpn: false, pg.Certs.CaCert, protocols: other));
        Assert.True(e is AuthenticationException or IOException, $"a client offering only {other} fails its handshake; got {e?.GetType().Name}: {e?.Message}");
        await p.AssertDrainedAsync(servers: 5);
    }

    // ---------------- 3. require / prefer ----------------

    [Fact]
    public async Task Require_refuses_plaintext_clients_with_28000_ssl_required()
    {
        await using var p = await StartAsync("require");

        var e = await Assert.ThrowsAsync<PostgresException>(() => OpenAsync(Npgsql(p, sslMode: SslMode.Disable)));
        Assert.Equal("28000", e.SqlState);
        Assert.StartsWith(SslRequiredPrefix, e.MessageText);

        var r = await PsqlAsync(p, "select 1", env: new Dictionary<string, string?> { ["PGSSLMODE"] = "disable" });
        Assert.False(r.Succeeded, r.ToString());
        Assert.Contains("FATAL:  " + SslRequiredPrefix, r.StdErr);

        // a raw plaintext client: the error, then the pooler closes (as PostgreSQL does after a FATAL)
        using var raw = await RawTls.ConnectPlainAsync(p.Port);
        await raw.SendStartupAsync(ScramUser, Database);
        var m = await raw.ReadAsync();
        Assert.NotNull(m);
        Assert.Equal('E', m.Type);
        Assert.Equal("28000", m.Fields().GetValueOrDefault('C'));
        Assert.StartsWith(SslRequiredPrefix, m.Fields().GetValueOrDefault('M'));
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var closed = await raw.ClosedAsync();
        output.WriteLine($"plaintext refusal: closed={closed} after {watch.ElapsedMilliseconds} ms");
        Assert.True(closed && watch.Elapsed < TimeSpan.FromSeconds(3), $"the pooler closes a refused plaintext connection right after its FATAL (closed={closed} after {watch.ElapsedMilliseconds} ms)");

        // TLS clients are still served
        await using (var ok = await OpenAsync(Npgsql(p)))
            Assert.Equal("t", await ScalarAsync(ok, SslQuery));
        await p.AssertDrainedAsync(servers: 5);
    }

    [Fact]
    public async Task Prefer_serves_plaintext_and_tls_clients()
    {
        // cleartext passwords, so that a bare plaintext client can log in too
        await using var p = await StartAsync("prefer", extra: "auth.type = plain");
        await using (var plain = await OpenAsync(Npgsql(p, sslMode: SslMode.Disable)))
            Assert.Equal("t", await ScalarAsync(plain, SslQuery)); // the backend leg is TLS regardless
        await using (var tls = await OpenAsync(Npgsql(p)))
            Assert.Equal("t", await ScalarAsync(tls, SslQuery));
        var r = await PsqlAsync(p, "select 42", env: new Dictionary<string, string?> { ["PGSSLMODE"] = "disable" });
        r.EnsureSuccess("plaintext psql with client-tls-sslmode = prefer");
        Assert.Equal("42", r.StdOut.Trim());

        // a plaintext client that says goodbye gets an orderly close (FIN), as with client-tls-sslmode = disable
        await using var raw = await RawPgConnection.ConnectAsync(p.Port, ScramUser, Database, TlsPostgresFixture.ScramPassword);
        Assert.Equal("t", await raw.ScalarAsync(SslQuery));
        await raw.SendAsync('X', []);
        var end = await Record.ExceptionAsync(() => raw.ReadAsync());
        Assert.True(end is EndOfStreamException, $"plaintext: expected end of stream after Terminate, got {end?.GetType().Name}: {end?.Message}");

        // and a TLS client gets close_notify and FIN, not a reset
        using var tlsRaw = await RawTls.ConnectAsync(p.Port, direct: false, alpn: false, pg.Certs.CaCert);
        await tlsRaw.LoginCleartextAsync(ScramUser, Database, TlsPostgresFixture.ScramPassword);
        await tlsRaw.SendAsync('X', []);
        var tlsEnd = await Record.ExceptionAsync(async () => Assert.Null(await tlsRaw.ReadAsync()));
        Assert.True(tlsEnd == null, $"TLS: expected end of stream after Terminate, got {tlsEnd?.GetType().Name}: {tlsEnd?.Message}");
        await p.AssertDrainedAsync(servers: 5);
    }

    [Fact]
    public async Task Plaintext_pipelined_behind_sslrequest_is_refused()
    {
        await using var p = await StartAsync("require");
        using var raw = await RawTls.ConnectPlainAsync(p.Port);
        // SSLRequest and a plaintext startup packet in one write: the bytes after SSLRequest must not be taken as
        // if they came through TLS (CVE-2021-23214); the answer is an error, not 'S'
        await raw.SendSslRequestWithStartupAsync(ScramUser, Database);
        var m = await raw.ReadAsync();
        Assert.True(m is { Type: 'E' }, $"expected an ErrorResponse, got {Describe(m)}");
        Assert.Equal("08P01", m.Fields().GetValueOrDefault('C'));
        Assert.Equal("received unencrypted data after SSL request", m.Fields().GetValueOrDefault('M'));
    }

    [Fact]
    public async Task Stalled_connections_are_cut_off_at_the_login_timeout()
    {
        await using var p = await StartAsync("require", extra: "client-login-timeout = 1s");
        var certs = pg.Certs;
        await using var session = await OpenAsync(Npgsql(p));
        using var silent = await RawTls.ConnectPlainAsync(p.Port); // TCP only
        using var afterS = await RawTls.ConnectPlainAsync(p.Port);
        await afterS.SendSslRequestAsync(); // 'S', then no ClientHello
        using var partialHello = await RawTls.ConnectPlainAsync(p.Port);
        await partialHello.SendPartialClientHelloAsync();
        using var tlsNoStartup = await RawTls.ConnectAsync(p.Port, direct: false, alpn: false, certs.CaCert); // TLS, no startup packet
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var stalled = new[] { ("TCP only", silent), ("SSLRequest only", afterS), ("partial ClientHello", partialHello), ("TLS, no startup packet", tlsNoStartup) };
        var ends = await Task.WhenAll(stalled.Select(async s => (Name: s.Item1, Closed: await s.Item2.ClosedAsync(skipData: true), At: watch.Elapsed)));
        var report = string.Join(", ", ends.Select(e => $"{e.Name}: {(e.Closed ? "closed" : "open")} at {e.At.TotalMilliseconds:0} ms"));
        output.WriteLine(report);
        // closed at the 1 s login timeout (a 3 s margin), each of them
        Assert.True(ends.All(e => e.Closed && e.At < TimeSpan.FromSeconds(4)), report);
        Assert.Equal("t", await ScalarAsync(session, SslQuery));
        await Eventually.True(() => p.Runtime.ClientCount == 1, $"only the open session is left (clients={p.Runtime.ClientCount})");
    }

    [Fact]
    public async Task Reload_serves_a_new_certificate_to_new_clients_and_keeps_open_sessions()
    {
        await using var p = await StartAsync("require");
        await using var session = await OpenAsync(Npgsql(p));
        Assert.Equal("t", await ScalarAsync(session, SslQuery));
        (await PsqlAsync(p, "select 1")).EnsureSuccess("verify-full before the reload");

        p.Reload($"""
            client-tls-cert-file = "{pg.Certs.WrongHostCert}"
            client-tls-key-file = "{pg.Certs.WrongHostKey}"
            """);
        var r = await PsqlAsync(p, "select 1");
        Assert.False(r.Succeeded, "verify-full to 127.0.0.1 after the reload to wronghost.crt: " + r);
        Assert.Contains("does not match host name \"127.0.0.1\"", r.StdErr);
        (await PsqlAsync(p, "select 1", env: pg.SslEnvironment("verify-ca"))).EnsureSuccess("verify-ca after the reload");
        Assert.Equal("t", await ScalarAsync(session, SslQuery));
    }

    // ---------------- 4. client certificates ----------------

    [Theory]
    [InlineData("verify-ca")]
    [InlineData("verify-full")]
    public async Task Verify_modes_refuse_missing_expired_and_foreign_client_certificates(string mode)
    {
        await using var p = await StartAsync(mode, clientCa: true);
        var certs = pg.Certs;

        var none = await RawTls.LoginErrorAsync(p.Port, certs.CaCert, clientCert: null);
        Assert.Equal(("28000", NoClientCertMessage), none);

        var expired = await RawTls.LoginErrorAsync(p.Port, certs.CaCert, certs.ClientCert(ScramUser, expired: true));
        Assert.Equal("28000", expired.SqlState);
        Assert.StartsWith("client certificate is not valid: certificate has expired", expired.Message);

        var foreign = await RawTls.LoginErrorAsync(p.Port, certs.CaCert, certs.ClientCert(ScramUser, otherCa: true));
        Assert.Equal(("28000", "client certificate is not valid: certificate is not signed by a trusted CA"), foreign);

        // libpq shows the same texts
        var psqlNone = await PsqlAsync(p, "select 1");
        Assert.False(psqlNone.Succeeded, psqlNone.ToString());
        Assert.Contains("FATAL:  " + NoClientCertMessage, psqlNone.StdErr);
        var psqlExpired = await PsqlAsync(p, "select 1", env: pg.ClientCertEnvironment(ScramUser, expired: true));
        Assert.False(psqlExpired.Succeeded, psqlExpired.ToString());
        Assert.Contains("FATAL:  client certificate is not valid: certificate has expired", psqlExpired.StdErr);

        // a valid certificate (and the password, auth is scram-sha-256) gets in
        await using (var c = await OpenAsync(Npgsql(p, clientCert: certs.ClientCert(ScramUser))))
            Assert.Equal("t", await ScalarAsync(c, SslQuery));
        var psqlOk = await PsqlAsync(p, SslQuery, env: pg.ClientCertEnvironment(ScramUser));
        psqlOk.EnsureSuccess("psql with a valid client certificate");
        Assert.Equal("t", psqlOk.StdOut.Trim());
        await p.AssertDrainedAsync(servers: 5);
    }

    // ---------------- 5. auth type cert ----------------

    [Fact]
    public async Task Cert_auth_logs_in_the_user_named_by_the_certificate_cn()
    {
        await using var p = await StartAsync("require", clientCa: true, extra: "auth { type = cert }");
        var certs = pg.Certs;

        // no password: the pooler logs in to PostgreSQL with scram_user's password from its users file
        await using (var c = await OpenAsync(Npgsql(p, password: "", clientCert: certs.ClientCert(ScramUser))))
        {
            Assert.Equal(ScramUser, await ScalarAsync(c, "select current_user"));
            Assert.Equal("t", await ScalarAsync(c, SslQuery));
        }
        var psql = await PsqlAsync(p, "select current_user", password: "", env: pg.ClientCertEnvironment(ScramUser));
        psql.EnsureSuccess("psql with auth type cert");
        Assert.Equal(ScramUser, psql.StdOut.Trim());

        var wrongCn = await Assert.ThrowsAsync<PostgresException>(() =>
            OpenAsync(Npgsql(p, password: "", clientCert: certs.ClientCert(CertUser))));
        Assert.Equal("28000", wrongCn.SqlState);
        Assert.Equal($"certificate authentication failed for user \"{ScramUser}\": the certificate's CN is \"{CertUser}\"", wrongCn.MessageText);

        var noCert = await Assert.ThrowsAsync<PostgresException>(() => OpenAsync(Npgsql(p, password: "")));
        Assert.Equal("28000", noCert.SqlState);
        Assert.Equal(NoClientCertMessage, noCert.MessageText);

        // a password does not stand in for the certificate
        var withPassword = await Assert.ThrowsAsync<PostgresException>(() => OpenAsync(Npgsql(p)));
        Assert.Equal("28000", withPassword.SqlState);
        await p.AssertDrainedAsync(servers: 5);
    }

    // ---------------- 6. the client's check of the pooler's certificate ----------------

    [Fact]
    public async Task Clients_trusting_another_ca_refuse_the_pooler_and_leave_nothing_behind()
    {
        await using var p = await StartAsync("require");
        var r = await PsqlAsync(p, "select 1", env: pg.SslEnvironment("verify-full", pg.Certs.OtherCaCert));
        Assert.False(r.Succeeded, r.ToString());
        Assert.Contains("certificate verify failed", r.StdErr);

        var e = await Assert.ThrowsAnyAsync<NpgsqlException>(() => OpenAsync(Npgsql(p, rootCertificate: pg.Certs.OtherCaCert)));
        Assert.IsType<AuthenticationException>(e.InnerException, exactMatch: false);
        await p.AssertDrainedAsync(servers: 5, because: "after handshakes the clients refused");
    }

    [Fact]
    public async Task Wrong_host_certificate_fails_verify_full_but_not_require_or_verify_ca()
    {
        await using var p = await StartAsync("require", wrongHost: true);
        foreach (var host in new[] { "127.0.0.1", "localhost" })
        {
            var r = await PsqlAsync(p, "select 1", host: host);
            output.WriteLine($"verify-full to {host}: {r.StdErr}");
            Assert.False(r.Succeeded, r.ToString());
            // libpq: server certificate for "not-this-host.example" (and 1 other name) does not match host name "127.0.0.1"
            Assert.Matches($@"server certificate for ""{Regex.Escape(TestCertificates.WrongHost)}""( \(and \d+ other names?\))? does not match host name ""{Regex.Escape(host)}""", r.StdErr);
        }
        foreach (var mode in new[] { "require", "verify-ca" })
        {
            var ok = await PsqlAsync(p, SslQuery, env: pg.SslEnvironment(mode));
            ok.EnsureSuccess($"psql sslmode={mode} against wronghost.crt");
            Assert.Equal("t", ok.StdOut.Trim());
        }
        await p.AssertDrainedAsync(servers: 5);
    }

    // ---------------- 7. failures do not touch other sessions ----------------

    [Fact]
    public async Task Failing_connections_leave_an_open_tls_session_working()
    {
        await using var p = await StartAsync("verify-ca", clientCa: true);
        var certs = pg.Certs;
        await using var session = await OpenAsync(Npgsql(p, clientCert: certs.ClientCert(ScramUser)));
        Assert.Equal("t", await ScalarAsync(session, SslQuery));
        Assert.Equal(1, p.Runtime.ClientCount);

        // all at once, while the session is open
        var failures = new List<Task>
        {
            Task.Run(async () => Assert.Equal("28000", (await RawTls.LoginErrorAsync(p.Port, certs.CaCert, null)).SqlState)),
            Task.Run(async () => Assert.Equal("28000", (await RawTls.LoginErrorAsync(p.Port, certs.CaCert, certs.ClientCert(ScramUser, expired: true))).SqlState)),
            Task.Run(async () => Assert.Equal("28000", (await RawTls.LoginErrorAsync(p.Port, certs.CaCert, certs.ClientCert(ScramUser, otherCa: true))).SqlState)),
            Task.Run(async () =>
            {
                var e = await Assert.ThrowsAsync<PostgresException>(() => OpenAsync(Npgsql(p, sslMode: SslMode.Disable)));
                Assert.Equal("28000", e.SqlState);
            }),
            Task.Run(async () => await Assert.ThrowsAnyAsync<NpgsqlException>(() =>
                OpenAsync(Npgsql(p, rootCertificate: certs.OtherCaCert, clientCert: certs.ClientCert(ScramUser))))),
            Task.Run(() => RawTls.RejectPoolerCertificateAsync(p.Port)),
            Task.Run(() => RawTls.PartialClientHelloAsync(p.Port, afterSslRequest: false)),
            Task.Run(() => RawTls.PartialClientHelloAsync(p.Port, afterSslRequest: true)),
            Task.Run(async () =>
            {
                using var c = await RawTls.ConnectAsync(p.Port, direct: true, alpn: false, certs.CaCert, certs.ClientCert(ScramUser));
                Assert.Equal("08P01", (await c.ReadAsync())?.Fields().GetValueOrDefault('C'));
            }),
        };
        await Task.WhenAll(failures);

        Assert.Equal("t", await ScalarAsync(session, SslQuery));
        Assert.Equal(ScramUser, await ScalarAsync(session, "select current_user"));
        await Eventually.True(() => p.Runtime.ClientCount == 1, $"only the open session is left (clients={p.Runtime.ClientCount})");
        await session.CloseAsync();
        await p.AssertDrainedAsync(servers: 5);
    }

    // ---------------- 8. SHOW CLIENTS ----------------

    [Fact]
    public async Task Show_clients_shows_the_tls_of_each_client()
    {
        await using var p = await StartAsync("prefer", extra: $"admin-users = [\"{TlsPostgresFixture.AdminUser}\"]");
        await using var tls = await OpenAsync(Npgsql(p, applicationName: "tls-client"));
        await using var plain = await OpenAsync(Npgsql(p, sslMode: SslMode.Disable, applicationName: "plain-client"));

        var r = await pg.RunPsqlAsync(["-A", "-c", "SHOW CLIENTS"], TlsPostgresFixture.AdminUser, database: "pgbouncer",
            port: p.Port, host: "127.0.0.1", environment: pg.SslEnvironment("verify-full"));
        r.EnsureSuccess("SHOW CLIENTS over TLS");
        output.WriteLine(r.StdOut);
        var lines = r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var header = lines[0].Split('|');
        var tlsCol = Array.IndexOf(header, "tls");
        var appCol = Array.IndexOf(header, "application_name");
        Assert.True(tlsCol >= 0 && appCol >= 0, $"SHOW CLIENTS has tls and application_name columns: {lines[0]}");
        var dbCol = Array.IndexOf(header, "database");
        var rows = lines.Skip(1).Select(l => l.Split('|')).Where(c => c.Length == header.Length).ToList();
        // the console session is told apart by its database (its application_name column is empty, see the report)
        var byApp = rows.ToDictionary(c => c[dbCol] == "pgbouncer" ? "console" : c[appCol], c => c[tlsCol]);
        Assert.Matches(@"^TLSv1\.[23]/\S+$", byApp.GetValueOrDefault("tls-client") ?? "(no row)");
        Assert.Equal("", byApp.GetValueOrDefault("plain-client") ?? "(no row)");
        Assert.Matches(@"^TLSv1\.[23]/\S+$", byApp.GetValueOrDefault("console") ?? "(no row)"); // the console session itself (psql)
    }

    // ---------------- 9. leaks ----------------

    [Fact]
    public async Task Hundred_mixed_tls_connections_leave_no_sessions_actors_or_descriptors()
    {
        await using var p = await StartAsync("require");
        var certs = pg.Certs;
        var kinds = new Func<Task>[]
        {
            async () =>
            {
                await using var c = await OpenAsync(Npgsql(p));
                Assert.Equal("t", await ScalarAsync(c, SslQuery));
            },
            () => RawTls.RejectPoolerCertificateAsync(p.Port),
            () => RawTls.PartialClientHelloAsync(p.Port, afterSslRequest: false),
            () => RawTls.PartialClientHelloAsync(p.Port, afterSslRequest: true),
            () => RawTls.SslRequestThenCloseAsync(p.Port),
            async () =>
            {
                using var raw = await RawTls.ConnectPlainAsync(p.Port);
                await raw.SendStartupAsync(ScramUser, Database);
                Assert.Equal("28000", (await raw.ReadAsync())?.Fields().GetValueOrDefault('C'));
            },
            async () =>
            {
                using var c = await RawTls.ConnectAsync(p.Port, direct: true, alpn: false, certs.CaCert);
                Assert.Equal("08P01", (await c.ReadAsync())?.Fields().GetValueOrDefault('C'));
            },
        };
        // warm every path (JIT, thread pool, the pool's first server) before the baseline
        foreach (var k in kinds) await k();
        await p.AssertDrainedAsync(servers: 5, because: "after the warm-up");
        // the pooler's own sockets (its port): descriptors of tests running beside this one do not count
        var baseFds = Descriptors.SocketsOnLocalPort(p.Port);
        var baseIo = await DescendantsAsync(p.System, "/system/IO-TCP");
        output.WriteLine($"baseline: {baseFds} sockets on the pooler's port, {baseIo} actors under /system/IO-TCP, {await DescendantsAsync(p.System, "/user/listener")} under /user/listener");

        for (var i = 0; i < 100; i++)
            await kinds[i % kinds.Length]();

        await p.AssertDrainedAsync(servers: 5, because: "after 100 mixed connections");
        await Eventually.True(async () => await DescendantsAsync(p.System, "/user/listener") == 0,
            "no session (or TLS adapter) left under /user/listener");
        await Eventually.True(async () => await DescendantsAsync(p.System, "/system/IO-TCP") <= baseIo,
            $"Akka.IO connection actors back to baseline {baseIo}");
        await Eventually.True(() => Descriptors.SocketsOnLocalPort(p.Port) <= baseFds,
            $"sockets on the pooler's port back to baseline {baseFds} (now {Descriptors.SocketsOnLocalPort(p.Port)})", TimeSpan.FromSeconds(20));

        // and the pooler still serves
        await kinds[0]();
    }


    /// <summary>All actors below <paramref name="path"/> (children, grandchildren, ...).</summary>
    private static async Task<int> DescendantsAsync(ActorSystem system, string path)
    {
        var root = await system.ActorSelection(path).ResolveOne(TimeSpan.FromSeconds(5));
        static int Count(IActorRef a) => a is ActorRefWithCell w ? w.Children.Sum(c => 1 + Count(c)) : 0;
        return Count(root);
    }

    private static string Describe(RawPgMessage? m) => m == null ? "end of stream"
        : m.Type == 'E' ? $"error {m.Fields().GetValueOrDefault('C')} {m.Fields().GetValueOrDefault('M')}"
        : $"message '{m.Type}'";

    /// <summary>
    /// A bare client: TCP, optionally TLS (after SSLRequest, or direct), startup packets and backend messages by hand.
    /// Every read is bounded by <see cref="IoTimeout"/>.
    /// </summary>
    private sealed class RawTls : IDisposable
    {
        private const int SslRequestCode = 80877103;
        private readonly TcpClient _tcp;
        private readonly Stream _stream;

        private RawTls(TcpClient tcp, Stream stream, SslStream? ssl)
        {
            _tcp = tcp;
            _stream = stream;
            _ssl = ssl;
        }

        private readonly SslStream? _ssl;
        private X509Certificate2? _clientCert;
        public SslStream Ssl => _ssl ?? throw new InvalidOperationException("not a TLS connection");

        private static async Task<TcpClient> TcpAsync(int port)
        {
            var tcp = new TcpClient { NoDelay = true };
            try
            {
                await tcp.ConnectAsync("127.0.0.1", port);
                return tcp;
            }
            catch
            {
                tcp.Dispose();
                throw;
            }
        }

        public static async Task<RawTls> ConnectPlainAsync(int port)
        {
            var tcp = await TcpAsync(port);
            return new RawTls(tcp, tcp.GetStream(), null);
        }

        private static byte[] SslRequest()
        {
            var b = new byte[8];
            BinaryPrimitives.WriteInt32BigEndian(b, 8);
            BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(4), SslRequestCode);
            return b;
        }

        /// <summary>SSLRequest and its one-byte answer.</summary>
        private static async Task<char> SslRequestAsync(NetworkStream s)
        {
            await s.WriteAsync(SslRequest());
            var one = new byte[1];
            using var cts = new CancellationTokenSource(IoTimeout);
            await s.ReadExactlyAsync(one, cts.Token);
            return (char)one[0];
        }

        /// <summary>
        /// TLS to the pooler, checking its certificate against <paramref name="caFile"/> (chain and the name localhost).
        /// <paramref name="direct"/>: no SSLRequest; <paramref name="alpn"/>: offer "postgresql".
        /// </summary>
        public static async Task<RawTls> ConnectAsync(int port, bool direct, bool alpn, string caFile,
            (string Cert, string Key)? clientCert = null, SslProtocols protocols = SslProtocols.None)
        {
            var tcp = await TcpAsync(port);
            try
            {
                var net = tcp.GetStream();
                if (!direct)
                {
                    var answer = await SslRequestAsync(net);
                    if (answer != 'S') throw new InvalidOperationException($"SSLRequest answered '{answer}'");
                }
                using var ca = TestCertificates.LoadCertificate(caFile);
                var cert = clientCert is { } cc ? TestCertificates.LoadWithKey(cc.Cert, cc.Key) : null;
                var ssl = new SslStream(net, leaveInnerStreamOpen: false);
                var options = new SslClientAuthenticationOptions
                {
                    TargetHost = TestCertificates.ServerHost,
                    EnabledSslProtocols = protocols,
                    ApplicationProtocols = alpn ? [new SslApplicationProtocol("postgresql")] : null,
                    CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                    ClientCertificates = cert != null ? [cert] : null,
                    // send the given certificate even where SslStream would skip it (expired, foreign issuer)
                    LocalCertificateSelectionCallback = (_, _, _, _, _) => cert!,
                    RemoteCertificateValidationCallback = (_, c, _, errors) =>
                    {
                        if (c == null || (errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0) return false;
                        using var chain = new X509Chain();
                        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                        chain.ChainPolicy.CustomTrustStore.Add(ca);
                        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                        return chain.Build(c as X509Certificate2 ?? new X509Certificate2(c));
                    },
                };
                using var cts = new CancellationTokenSource(IoTimeout);
                try
                {
                    await ssl.AuthenticateAsClientAsync(options, cts.Token);
                }
                catch
                {
                    cert?.Dispose();
                    throw;
                }
                return new RawTls(tcp, ssl, ssl) { _clientCert = cert };
            }
            catch
            {
                tcp.Dispose();
                throw;
            }
        }

        /// <summary>SSLRequest, TLS (optionally with a client certificate), startup as scram_user: the FATAL the pooler answers.</summary>
        public static async Task<(string SqlState, string Message)> LoginErrorAsync(int port, string caFile, (string Cert, string Key)? clientCert)
        {
            using var c = await ConnectAsync(port, direct: false, alpn: false, caFile, clientCert);
            await c.SendStartupAsync(ScramUser, Database);
            var m = await c.ReadAsync();
            if (m is not { Type: 'E' }) throw new Xunit.Sdk.XunitException($"expected an ErrorResponse, got {Describe(m)}");
            var f = m.Fields();
            Assert.Equal("FATAL", f.GetValueOrDefault('S'));
            return (f.GetValueOrDefault('C') ?? "", f.GetValueOrDefault('M') ?? "");
        }

        /// <summary>SSLRequest, then a handshake in which the client refuses the pooler's certificate.</summary>
        public static async Task RejectPoolerCertificateAsync(int port)
        {
            using var tcp = await TcpAsync(port);
            var net = tcp.GetStream();
            Assert.Equal('S', await SslRequestAsync(net));
            await using var ssl = new SslStream(net, leaveInnerStreamOpen: false);
            using var cts = new CancellationTokenSource(IoTimeout);
            await Assert.ThrowsAsync<AuthenticationException>(() => ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = TestCertificates.ServerHost,
                RemoteCertificateValidationCallback = (_, _, _, _) => false,
            }, cts.Token));
        }

        /// <summary>The first bytes of a TLS ClientHello (directly, or after SSLRequest and 'S'), then the socket is closed.</summary>
        public static async Task PartialClientHelloAsync(int port, bool afterSslRequest)
        {
            using var tcp = await TcpAsync(port);
            var net = tcp.GetStream();
            if (afterSslRequest) Assert.Equal('S', await SslRequestAsync(net));
            await net.WriteAsync(PartialClientHello);
        }

        public async Task SendSslRequestAsync()
        {
            await _stream.WriteAsync(SslRequest());
            var one = new byte[1];
            using var cts = new CancellationTokenSource(IoTimeout);
            await _stream.ReadExactlyAsync(one, cts.Token);
            Assert.Equal('S', (char)one[0]);
        }

        public async Task SendSslRequestWithStartupAsync(string user, string database)
            => await _stream.WriteAsync(SslRequest().Concat(Startup(user, database)).ToArray());

        public async Task SendPartialClientHelloAsync() => await _stream.WriteAsync(PartialClientHello);

        // record: handshake (0x16), TLS 1.0 record version, length 512; handshake: ClientHello, length 508, version 1.2
        private static readonly byte[] PartialClientHello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x11, 0x22];

        /// <summary>SSLRequest, then gone without waiting for the answer.</summary>
        public static async Task SslRequestThenCloseAsync(int port)
        {
            using var tcp = await TcpAsync(port);
            await tcp.GetStream().WriteAsync(SslRequest());
        }

        public async Task SendStartupAsync(string user, string database)
        {
            await _stream.WriteAsync(Startup(user, database));
            await _stream.FlushAsync();
        }

        private static byte[] Startup(string user, string database)
        {
            var body = new MemoryStream();
            void Str(string s) { body.Write(Encoding.UTF8.GetBytes(s)); body.WriteByte(0); }
            var code = new byte[4];
            BinaryPrimitives.WriteInt32BigEndian(code, 196608);
            body.Write(code);
            Str("user"); Str(user);
            Str("database"); Str(database);
            body.WriteByte(0);
            var packet = new byte[4 + body.Length];
            BinaryPrimitives.WriteInt32BigEndian(packet, packet.Length);
            body.ToArray().CopyTo(packet, 4);
            return packet;
        }

        public async Task SendAsync(char type, byte[] body)
        {
            await _stream.WriteAsync(RawPgConnection.Message(type, body));
            await _stream.FlushAsync();
        }

        /// <summary>Startup and a cleartext password (auth.type = plain), through ReadyForQuery.</summary>
        public async Task LoginCleartextAsync(string user, string database, string password)
        {
            await SendStartupAsync(user, database);
            while (true)
            {
                var m = await ReadAsync();
                switch (m)
                {
                    case null or { Type: 'E' }:
                        throw new Xunit.Sdk.XunitException($"login failed: {Describe(m)}");
                    case { Type: 'R' } when BinaryPrimitives.ReadInt32BigEndian(m.Body) == 3:
                        await SendAsync('p', [.. Encoding.UTF8.GetBytes(password), 0]);
                        break;
                    case { Type: 'Z' }:
                        return;
                }
            }
        }

        /// <summary>One backend message; null when the connection ended before one started.</summary>
        public async Task<RawPgMessage?> ReadAsync()
        {
            using var cts = new CancellationTokenSource(IoTimeout);
            var header = new byte[5];
            if (!await FillAsync(header, cts.Token)) return null;
            var len = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(1));
            if (len < 4 || len > 1 << 20) throw new InvalidDataException($"bad message length {len}");
            var body = new byte[len - 4];
            if (!await FillAsync(body, cts.Token)) throw new EndOfStreamException("connection ended inside a message");
            return new RawPgMessage((char)header[0], body);
        }

        private async Task<bool> FillAsync(byte[] buffer, CancellationToken ct)
        {
            var n = 0;
            while (n < buffer.Length)
            {
                int got;
                try { got = await _stream.ReadAsync(buffer.AsMemory(n), ct); }
                catch (OperationCanceledException) { throw new TimeoutException($"nothing read within {IoTimeout.TotalSeconds} s"); }
                if (got == 0)
                {
                    if (n == 0) return false;
                    throw new EndOfStreamException("connection ended inside a message");
                }
                n += got;
            }
            return true;
        }

        /// <summary>
        /// True when the other side closes (EOF or reset) within <paramref name="within"/> (default <see cref="IoTimeout"/>)
        /// with nothing more sent; with <paramref name="skipData"/>, whatever comes before the close (a FATAL) is skipped.
        /// </summary>
        public async Task<bool> ClosedAsync(TimeSpan? within = null, bool skipData = false)
        {
            using var cts = new CancellationTokenSource(within ?? IoTimeout);
            var buf = new byte[4096];
            try
            {
                while (true)
                {
                    if (await _stream.ReadAsync(buf, cts.Token) == 0) return true;
                    if (!skipData) return false;
                }
            }
            catch (OperationCanceledException) { return false; }
            catch (IOException) { return true; }
        }

        public void Dispose()
        {
            _stream.Dispose();
            _tcp.Dispose();
            _clientCert?.Dispose();
        }
    }
}
