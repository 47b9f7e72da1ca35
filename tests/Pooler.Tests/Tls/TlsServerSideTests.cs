using System.Buffers.Binary;
using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Npgsql;
using Pooler.Actors.Config;
using Pooler.Tests.Infrastructure;
using Pooler.Tests.Ops;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Tls;

/// <summary>
/// server-tls-*: the pooler as a TLS client of PostgreSQL (the TLS fixture refuses plaintext over TCP). Every sslmode,
/// the certificate checks and how their failures reach the client, certificate login to the server, and the reload of
/// the pooler's own (client-tls) certificate files. Clients talk to the pooler in plaintext unless a test says otherwise.
/// </summary>
[Collection(PostgresTlsCollection.Name)]
public sealed partial class TlsServerSideTests(TlsPostgresFixture pg, ITestOutputHelper output)
{
    private const string User = TlsPostgresFixture.ScramUser;
    private const string Db = TlsPostgresFixture.Database;
    private const string Admin = TlsPostgresFixture.AdminUser;
    private const string BackendSsl = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

    private TestCertificates Certs => pg.Certs;

    private static string Q(string path) => "\"" + path + "\"";

    private string ServerTls(string mode, string? ca = null, string extra = "")
        => $"server-tls-sslmode = {mode}\n" + (ca != null ? $"server-tls-ca-file = {Q(ca)}\n" : "") + extra;

    /// <summary>Opens a plaintext client through the pooler and runs <paramref name="sql"/>.</summary>
    private static async Task<object?> QueryThroughAsync(PoolerHarness p, string sql, string database = Db, string user = User)
    {
        await using var c = await p.OpenAsync(user, database: database);
        await using var cmd = new NpgsqlCommand(sql, c);
        return await cmd.ExecuteScalarAsync();
    }

    /// <summary>The error a client gets through <paramref name="p"/> (fails the test if it gets in and the query runs).</summary>
    private static async Task<PostgresException> ClientErrorAsync(PoolerHarness p, string database = Db)
        => await Assert.ThrowsAsync<PostgresException>(() => QueryThroughAsync(p, "select 1", database));

    // ---------------- sslmodes against the TLS server ----------------

    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("localhost")]
    public async Task Verify_full_with_the_ca_works_and_the_server_connection_is_encrypted(string host)
    {
        await using var p = await PoolerHarness.StartAsync(pg, ServerTls("verify-full", Certs.CaCert,
            host == "127.0.0.1" ? "" : $"databases {{ {Db} {{ host = \"{host}\" }} }}"));
        Assert.Equal(true, await QueryThroughAsync(p, BackendSsl));
        Assert.Equal(User, await QueryThroughAsync(p, "select current_user"));
    }

    [Fact]
    public async Task Pgbench_through_a_verify_full_pooler_fails_no_transaction_and_every_backend_is_encrypted()
    {
        await using var p = await PoolerHarness.StartAsync(pg, ServerTls("verify-full", Certs.CaCert));
        using var dir = TestDirectory.Create("tls-pgbench");
        var script = dir.Combine("select1.sql");
        await File.WriteAllTextAsync(script, "select 1;\n");
        var run = await Task.Run(() => pg.RunPgbench(["-n", "-f", script, "-c", "10", "-j", "2", "-T", "3"], User,
            port: p.Port, host: "127.0.0.1", timeout: TimeSpan.FromSeconds(60),
            environment: new Dictionary<string, string?> { ["PGSSLMODE"] = "disable" }));
        output.WriteLine(run.ToString());
        run.EnsureSuccess("pgbench through the pooler");
        Assert.Contains("number of failed transactions: 0 (0.000%)", run.StdOut);
        var processed = ProcessedLine().Match(run.StdOut);
        Assert.True(processed.Success && long.Parse(processed.Groups[1].Value, CultureInfo.InvariantCulture) > 0, run.StdOut);

        // the pooler keeps its server connections open: all of them are TLS
        var counts = (string?)await pg.ScalarAsync(
            "select (count(*) filter (where not s.ssl))::text || '/' || count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) " +
            $"where a.usename = '{User}' and a.backend_type = 'client backend'");
        output.WriteLine($"unencrypted/total scram_user backends: {counts}");
        var parts = counts!.Split('/');
        Assert.Equal("0", parts[0]);
        Assert.True(int.Parse(parts[1], CultureInfo.InvariantCulture) > 0, $"no backend of the pooler seen: {counts}");
    }

    [GeneratedRegex(@"number of transactions actually processed: (\d+)")]
    private static partial Regex ProcessedLine();

    [Theory]
    [InlineData("require", false)]
    [InlineData("verify-ca", true)]
    [InlineData("prefer", false)]
    public async Task Other_modes_use_tls_with_the_tls_server(string mode, bool withCa)
    {
        await using var p = await PoolerHarness.StartAsync(pg, ServerTls(mode, withCa ? Certs.CaCert : null));
        Assert.Equal(true, await QueryThroughAsync(p, BackendSsl));
    }

    [Fact]
    public async Task Allow_tries_plaintext_first_and_after_pg_hba_refuses_it_retries_with_tls()
    {
        static int Rejections(string log) => Regex.Matches(log, Regex.Escape(
            $"pg_hba.conf rejects connection for host \"127.0.0.1\", user \"{User}\", database \"{Db}\", no encryption")).Count;
        var before = Rejections(pg.ReadLog());
        await using var p = await PoolerHarness.StartAsync(pg, ServerTls("allow"));
        // five clients in transactions at once: five server connections, each refused in plaintext, then over TLS
        var clients = new List<NpgsqlConnection>();
        try
        {
            for (var i = 0; i < 5; i++) clients.Add(await p.OpenAsync());
            var inTransaction = 0;
            var allIn = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var rows = await Task.WhenAll(clients.Select(async c =>
            {
                await using var tx = await c.BeginTransactionAsync();
                await using var cmd = new NpgsqlCommand("select pg_backend_pid()::text || '|' || ssl::text from pg_stat_ssl where pid = pg_backend_pid()", c, tx);
                var row = (string)(await cmd.ExecuteScalarAsync())!;
                // each holds its server until all five are in a transaction (pool size 5): five servers
                if (Interlocked.Increment(ref inTransaction) == clients.Count) allIn.SetResult();
                await allIn.Task.WaitAsync(TimeSpan.FromSeconds(30));
                await tx.CommitAsync();
                return row;
            })).WaitAsync(TimeSpan.FromSeconds(60));
            Assert.All(rows, r => Assert.EndsWith("|true", r));
            Assert.Equal(5, rows.Distinct().Count());
        }
        finally
        {
            foreach (var c in clients) await c.DisposeAsync();
        }
        // the plaintext attempts really happened (and were refused by pg_hba) before the TLS ones
        await Eventually.True(() => Rejections(pg.ReadLog()) >= before + 5, "PostgreSQL logged the refused plaintext logins of the pooler");
    }

    // ---------------- failures are clear, and stay with the pooler that has them ----------------

    [Fact]
    public async Task Verify_full_with_another_ca_fails_with_08006_and_a_correct_pooler_keeps_working()
    {
        await using var good = await PoolerHarness.StartAsync(pg, ServerTls("verify-full", Certs.CaCert));
        await using var bad = await PoolerHarness.StartAsync(pg, ServerTls("verify-full", Certs.OtherCaCert));
        await using var open = await good.OpenAsync();

        var e = await ClientErrorAsync(bad);
        output.WriteLine(e.MessageText);
        Assert.Equal("08006", e.SqlState);
        Assert.Contains("TLS handshake with server", e.MessageText);
        Assert.Contains("not signed by a trusted CA", e.MessageText);

        await using (var cmd = new NpgsqlCommand("select 1", open)) Assert.Equal(1, await cmd.ExecuteScalarAsync());
        Assert.Equal(true, await QueryThroughAsync(good, BackendSsl));
        // and the failing pooler keeps answering the same way (it did not crash)
        Assert.Contains("not signed by a trusted CA", (await ClientErrorAsync(bad)).MessageText);
    }

    [Fact]
    public async Task Verify_full_rejects_a_server_certificate_for_another_host_while_verify_ca_accepts_it()
    {
        await WithPostgresCertificateAsync(Certs.WrongHostCert, Certs.WrongHostKey, TestCertificates.WrongHost, async () =>
        {
            await using var good = await PoolerHarness.StartAsync(pg, ServerTls("verify-ca", Certs.CaCert));
            await using var bad = await PoolerHarness.StartAsync(pg, ServerTls("verify-full", Certs.CaCert));

            var e = await ClientErrorAsync(bad);
            output.WriteLine(e.MessageText);
            Assert.Equal("08006", e.SqlState);
            Assert.Contains("TLS handshake with server", e.MessageText);
            Assert.Contains("does not match host name", e.MessageText);

            Assert.Equal(true, await QueryThroughAsync(good, BackendSsl));
        });
    }

    [Fact]
    public async Task An_expired_server_certificate_fails_verification_while_require_still_connects()
    {
        await WithPostgresCertificateAsync(Certs.ExpiredServerCert, Certs.ExpiredServerKey, TestCertificates.ServerHost, async () =>
        {
            await using var good = await PoolerHarness.StartAsync(pg, ServerTls("require"));
            await using var bad = await PoolerHarness.StartAsync(pg, ServerTls("verify-full", Certs.CaCert));

            var e = await ClientErrorAsync(bad);
            output.WriteLine(e.MessageText);
            Assert.Equal("08006", e.SqlState);
            Assert.Contains("TLS handshake with server", e.MessageText);
            Assert.Contains("expired", e.MessageText);

            Assert.Equal(true, await QueryThroughAsync(good, BackendSsl));
        }, expired: true);
    }

    /// <summary>
    /// Makes PostgreSQL serve <paramref name="cert"/> (ALTER SYSTEM + reload) while <paramref name="body"/> runs, then puts
    /// the fixture's certificate back. The classes of the collection run one after another, so no other test sees it.
    /// </summary>
    private async Task WithPostgresCertificateAsync(string cert, string key, string expectedCn, Func<Task> body, bool expired = false)
    {
        var served = await ServedCertificateAsync(pg.Port);
        Assert.Equal(TestCertificates.ServerHost, served.Cn);
        Assert.False(served.Expired);
        try
        {
            await pg.ExecuteAsync($"ALTER SYSTEM SET ssl_cert_file = '{Certs.ServiceUserCopy(cert)}'");
            await pg.ExecuteAsync($"ALTER SYSTEM SET ssl_key_file = '{Certs.ServiceUserCopy(key)}'");
            await pg.ScalarAsync("select pg_reload_conf()");
            await Eventually.Value(() => ServedCertificateAsync(pg.Port), s => s.Cn == expectedCn && s.Expired == expired,
                $"PostgreSQL serves {Path.GetFileName(cert)}");
            await body();
        }
        finally
        {
            await pg.ExecuteAsync("ALTER SYSTEM RESET ssl_cert_file");
            await pg.ExecuteAsync("ALTER SYSTEM RESET ssl_key_file");
            await pg.ScalarAsync("select pg_reload_conf()");
            await Eventually.Value(() => ServedCertificateAsync(pg.Port), s => s.Cn == TestCertificates.ServerHost && !s.Expired,
                "PostgreSQL serves its own certificate again");
        }
    }

    // ---------------- certificate login to the server ----------------

    private string CertDbSettings(bool withClientCert)
    {
        var (cert, key) = Certs.ClientCert(TlsPostgresFixture.CertUser);
        return ServerTls("verify-full", Certs.CaCert,
            (withClientCert ? $"server-tls-cert-file = {Q(cert)}\nserver-tls-key-file = {Q(key)}\n" : "") +
            $"databases {{ certdb {{ host = \"127.0.0.1\", port = {pg.Port}, dbname = \"{Db}\", user = \"{TlsPostgresFixture.CertUser}\" }} }}");
    }

    [Fact]
    public async Task The_pooler_logs_in_to_the_server_with_its_client_certificate()
    {
        await using var p = await PoolerHarness.StartAsync(pg, CertDbSettings(withClientCert: true));
        Assert.Equal(TlsPostgresFixture.CertUser, await QueryThroughAsync(p, "select current_user", "certdb"));
        Assert.Equal("/CN=cert_user", await QueryThroughAsync(p, "select client_dn from pg_stat_ssl where pid = pg_backend_pid()", "certdb"));
        // the same pooler's password logins over TLS are not disturbed by the certificate it presents
        Assert.Equal(User, await QueryThroughAsync(p, "select current_user"));
    }

    [Fact]
    public async Task Without_a_client_certificate_the_servers_refusal_reaches_the_client()
    {
        await using var p = await PoolerHarness.StartAsync(pg, CertDbSettings(withClientCert: false));
        var e = await ClientErrorAsync(p, "certdb");
        output.WriteLine(e.MessageText);
        Assert.Equal("28000", e.SqlState);
        Assert.Contains("certificate", e.MessageText);
        Assert.Equal(User, await QueryThroughAsync(p, "select current_user"));
    }

    // ---------------- RELOAD of the pooler's certificate files ----------------

    private string ClientTls(string mode, string certFile, string keyFile)
        => $"client-tls-sslmode = {mode}\nclient-tls-cert-file = {Q(certFile)}\nclient-tls-key-file = {Q(keyFile)}\n";

    private string TlsClient(int port, Npgsql.SslMode mode = Npgsql.SslMode.VerifyFull)
        => pg.ConnectionString(User, sslMode: mode, port: port, host: "127.0.0.1");

    private async Task<object?> TlsQueryAsync(int port, string sql, Npgsql.SslMode mode = Npgsql.SslMode.VerifyFull)
    {
        await using var c = new NpgsqlConnection(TlsClient(port, mode));
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, c);
        return await cmd.ExecuteScalarAsync();
    }

    [Fact]
    public async Task Reload_rereads_certificate_files_replaced_in_place_and_keeps_the_old_ones_when_a_file_is_bad()
    {
        using var dir = TestDirectory.Create("tls-reload");
        var certFile = dir.Combine("pooler.crt");
        var keyFile = dir.Combine("pooler.key");
        File.Copy(Certs.ServerCert, certFile);
        File.Copy(Certs.ServerKey, keyFile);
        var settings = ServerTls("require") + ClientTls("require", certFile, keyFile);
        await using var p = await PoolerHarness.StartAsync(pg, settings);

        Assert.Equal(TestCertificates.ServerHost, (await ServedCertificateAsync(p.Port)).Cn);
        await using var open = new NpgsqlConnection(TlsClient(p.Port));
        await open.OpenAsync();
        await using (var cmd = new NpgsqlCommand("select 1", open)) Assert.Equal(1, await cmd.ExecuteScalarAsync());

        // the files are replaced in place by a certificate for another name
        File.Copy(Certs.WrongHostCert, certFile, overwrite: true);
        File.Copy(Certs.WrongHostKey, keyFile, overwrite: true);
        p.Reload(settings);
        Assert.Equal(TestCertificates.WrongHost, (await ServedCertificateAsync(p.Port)).Cn);
        var refused = await Assert.ThrowsAnyAsync<NpgsqlException>(() => TlsQueryAsync(p.Port, "select 1"));
        output.WriteLine($"verify-full after the reload: {refused.Message} / {refused.InnerException?.Message}");
        Assert.IsAssignableFrom<System.Security.Authentication.AuthenticationException>(refused.InnerException);
        // the chain is still good: only the name is wrong
        Assert.Equal(User, await TlsQueryAsync(p.Port, "select current_user", Npgsql.SslMode.VerifyCA));
        await using (var cmd = new NpgsqlCommand("select 2", open)) Assert.Equal(2, await cmd.ExecuteScalarAsync());

        // a broken file: the reload fails naming the key, and nothing changes
        await File.WriteAllTextAsync(certFile, "this is not a certificate\n");
        var e = Assert.Throws<ConfigException>(() => p.Reload(settings));
        output.WriteLine(e.Message);
        Assert.Equal("pooler.client-tls-cert-file", e.Key);
        Assert.Equal(TestCertificates.WrongHost, (await ServedCertificateAsync(p.Port)).Cn);
        Assert.Equal(User, await TlsQueryAsync(p.Port, "select current_user", Npgsql.SslMode.VerifyCA));
        await using (var cmd = new NpgsqlCommand("select 3", open)) Assert.Equal(3, await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public async Task Admin_console_reload_with_a_broken_certificate_file_answers_an_error_and_the_process_keeps_serving()
    {
        using var dir = TestDirectory.Create("tls-reload-process");
        var certFile = dir.Combine("pooler.crt");
        var keyFile = dir.Combine("pooler.key");
        File.Copy(Certs.ServerCert, certFile);
        File.Copy(Certs.ServerKey, keyFile);
        var config = PoolerProcess.DefaultConfig(pg.Port, settings:
            $"admin-users = [{Admin}]\n" + ServerTls("verify-full", Certs.CaCert) + ClientTls("prefer", certFile, keyFile));
        await using var p = await PoolerProcess.StartAsync(config);
        Assert.Equal(User, await TlsQueryAsync(p.Port, "select current_user"));

        await File.WriteAllTextAsync(certFile, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n");
        await using (var admin = await ConsoleClient.ConnectAsync(p.Port, Admin, TlsPostgresFixture.AdminPassword, "pgbouncer"))
        {
            var r = await admin.QueryAsync("RELOAD", TimeSpan.FromSeconds(30));
            output.WriteLine(r.ToString());
            Assert.True(r.Error != null, $"RELOAD with a broken certificate file answered {r}");
            Assert.Equal("ERROR", r.Error.Severity);
            Assert.Contains("client-tls-cert-file", r.Error.Message);
            (await admin.QueryAsync("SHOW VERSION")).EnsureOk();
        }

        Assert.False(p.HasExited, p.OutputText);
        // still the certificate from before the failed reload, and the server side is untouched
        Assert.Equal(TestCertificates.ServerHost, (await ServedCertificateAsync(p.Port)).Cn);
        Assert.Equal(true, await TlsQueryAsync(p.Port, BackendSsl));
    }

    // ---------------- helpers ----------------

    /// <summary>
    /// The certificate a PostgreSQL-protocol server (PostgreSQL or the pooler) presents after an SSLRequest: its CN and
    /// whether it has expired. Nothing is checked; the handshake is only run to see the certificate.
    /// </summary>
    private static async Task<(string Cn, bool Expired)> ServedCertificateAsync(int port)
    {
        using var tcp = new TcpClient { NoDelay = true };
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await tcp.ConnectAsync("127.0.0.1", port, cts.Token);
        var stream = tcp.GetStream();
        var request = new byte[8];
        BinaryPrimitives.WriteInt32BigEndian(request, 8);
        BinaryPrimitives.WriteInt32BigEndian(request.AsSpan(4), 80877103);
        await stream.WriteAsync(request, cts.Token);
        var answer = new byte[1];
        await stream.ReadExactlyAsync(answer, cts.Token);
        Assert.Equal((byte)'S', answer[0]);
        X509Certificate2? seen = null;
        await using var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            RemoteCertificateValidationCallback = (_, cert, _, _) =>
            {
                if (cert != null) seen = X509CertificateLoader.LoadCertificate(cert.GetRawCertData());
                return true;
            },
        }, cts.Token);
        Assert.NotNull(seen);
        using (seen)
            return (seen.GetNameInfo(X509NameType.SimpleName, forIssuer: false), seen.NotAfter < DateTime.Now);
    }
}

/// <summary>server-tls-* against a PostgreSQL without TLS (ssl = off: it answers an SSLRequest with 'N').</summary>
[Collection(PostgresCollection.Name)]
public sealed class TlsServerSidePlainServerTests(PostgresFixture pg, ITestOutputHelper output)
{
    [Theory]
    [InlineData("prefer")]
    [InlineData("allow")]
    public async Task Prefer_and_allow_go_on_in_plaintext_with_a_server_without_tls(string mode)
    {
        await using var p = await PoolerHarness.StartAsync(pg, $"server-tls-sslmode = {mode}");
        await using var c = await p.OpenAsync();
        await using var cmd = new NpgsqlCommand("select ssl::text || '|' || current_user from pg_stat_ssl where pid = pg_backend_pid()", c);
        Assert.Equal($"false|{PostgresFixture.ScramUser}", await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public async Task Require_fails_with_08006_when_the_server_does_not_support_tls()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "server-tls-sslmode = require");
        var e = await Assert.ThrowsAsync<PostgresException>(async () =>
        {
            await using var c = await p.OpenAsync();
            await using var cmd = new NpgsqlCommand("select 1", c);
            await cmd.ExecuteScalarAsync();
        });
        output.WriteLine(e.MessageText);
        Assert.Equal("08006", e.SqlState);
        Assert.Contains("does not support TLS", e.MessageText);
        // a pooler without server TLS in front of the same server is not affected
        await using var plain = await PoolerHarness.StartAsync(pg);
        await using var ok = await plain.OpenAsync();
        await using var q = new NpgsqlCommand("select 1", ok);
        Assert.Equal(1, await q.ExecuteScalarAsync());
    }
}
