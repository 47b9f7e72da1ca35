using System.Security.Cryptography.X509Certificates;
using Npgsql;
using Xunit;

namespace Pooler.Tests.Infrastructure;

[Collection(PostgresTlsCollection.Name)]
public sealed class TlsFixtureTests
{
    // ssl::text would be "true"; psql -At prints a bool as t, so spell it the same for both clients.
    private const string SslQuery =
        "SELECT current_user || '|' || CASE WHEN ssl THEN 't' ELSE 'f' END || '|' || coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

    private readonly TlsPostgresFixture _pg;

    public TlsFixtureTests(TlsPostgresFixture pg) => _pg = pg;

    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("localhost")]
    public void Psql_verify_full_with_the_ca_connects_over_tls(string host)
    {
        var result = _pg.RunPsqlCommand(SslQuery, user: TlsPostgresFixture.ScramUser, host: host,
            environment: _pg.SslEnvironment("verify-full", _pg.Certs.CaCert));
        result.EnsureSuccess("psql");
        Assert.Equal("scram_user|t|", result.StdOut.Trim());
    }

    [Fact]
    public void Pg_stat_ssl_reports_the_psql_session_as_tls()
    {
        var result = _pg.RunPsqlCommand("select ssl from pg_stat_ssl where pid = pg_backend_pid()", user: TlsPostgresFixture.ScramUser);
        result.EnsureSuccess("psql");
        Assert.Equal("t", result.StdOut.Trim());
    }

    [Fact]
    public void Psql_without_tls_is_rejected_by_pg_hba()
    {
        var result = _pg.RunPsqlCommand("SELECT 1", user: TlsPostgresFixture.ScramUser,
            environment: new Dictionary<string, string?> { ["PGSSLMODE"] = "disable" });
        Assert.False(result.Succeeded, result.ToString());
        // An explicit reject line says "pg_hba.conf rejects connection ..., no encryption" (not "no pg_hba.conf entry").
        Assert.Contains("pg_hba.conf rejects connection", result.StdErr);
        Assert.Contains("no encryption", result.StdErr);
    }

    [Fact]
    public void Cert_user_logs_in_with_its_client_certificate_and_no_password()
    {
        var result = _pg.RunPsqlCommand(SslQuery, user: TlsPostgresFixture.CertUser,
            environment: _pg.ClientCertEnvironment(TlsPostgresFixture.CertUser));
        result.EnsureSuccess("psql");
        Assert.Equal("cert_user|t|/CN=cert_user", result.StdOut.Trim());
    }

    [Fact]
    public void Cert_user_with_a_certificate_for_another_name_is_rejected()
    {
        var result = _pg.RunPsqlCommand("SELECT 1", user: TlsPostgresFixture.CertUser,
            environment: _pg.ClientCertEnvironment(TlsPostgresFixture.ScramUser));
        Assert.False(result.Succeeded, result.ToString());
        Assert.Contains("certificate authentication failed for user \"cert_user\"", result.StdErr);
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Cert_user_with_an_expired_or_foreign_client_certificate_is_rejected(bool expired, bool otherCa)
    {
        var result = _pg.RunPsqlCommand("SELECT 1", user: TlsPostgresFixture.CertUser,
            environment: _pg.ClientCertEnvironment(TlsPostgresFixture.CertUser, expired, otherCa));
        Assert.False(result.Succeeded, result.ToString());
        // The server aborts the handshake (alert) before authentication.
        Assert.Contains(expired ? "certificate expired" : "unknown ca", result.StdErr);
    }

    [Fact]
    public void Verify_full_against_another_ca_fails()
    {
        var result = _pg.RunPsqlCommand("SELECT 1", user: TlsPostgresFixture.ScramUser,
            environment: _pg.SslEnvironment("verify-full", _pg.Certs.OtherCaCert));
        Assert.False(result.Succeeded, result.ToString());
        Assert.Contains("certificate verify failed", result.StdErr);
    }

    [Theory]
    [InlineData(TlsPostgresFixture.ScramUser)]
    [InlineData(TlsPostgresFixture.Md5User)]
    [InlineData(TlsPostgresFixture.TrustUser)]
    [InlineData(TlsPostgresFixture.AdminUser)]
    public async Task Npgsql_verify_full_with_the_ca_as_root_certificate(string user)
    {
        await using var conn = new NpgsqlConnection(_pg.ConnectionString(user));
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(SslQuery, conn);
        Assert.Equal($"{user}|t|", await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public async Task Npgsql_logs_in_with_a_client_certificate()
    {
        await using var conn = new NpgsqlConnection(_pg.CertConnectionString());
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(SslQuery, conn);
        Assert.Equal("cert_user|t|/CN=cert_user", await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public async Task Npgsql_without_tls_is_rejected()
    {
        await using var conn = new NpgsqlConnection(_pg.ConnectionString(TlsPostgresFixture.ScramUser, sslMode: SslMode.Disable));
        var e = await Assert.ThrowsAsync<PostgresException>(() => conn.OpenAsync());
        Assert.Equal("28000", e.SqlState);
    }

    [Fact]
    public void Certificates_chain_to_their_ca_with_the_intended_names_and_dates()
    {
        var certs = _pg.Certs;
        using var ca = certs.LoadCaCertificate();
        using var otherCa = TestCertificates.LoadCertificate(certs.OtherCaCert);

        using var server = TestCertificates.LoadCertificate(certs.ServerCert);
        Assert.True(Chains(server, ca));
        Assert.False(Chains(server, otherCa));
        Assert.True(server.MatchesHostname("localhost"));
        Assert.True(server.MatchesHostname("127.0.0.1"));

        using var wrongHost = TestCertificates.LoadCertificate(certs.WrongHostCert);
        Assert.True(Chains(wrongHost, ca));
        Assert.False(wrongHost.MatchesHostname("localhost"));
        Assert.False(wrongHost.MatchesHostname("127.0.0.1"));

        using var expired = TestCertificates.LoadCertificate(certs.ExpiredServerCert);
        Assert.True(expired.NotAfter < DateTime.Now);
        Assert.False(Chains(expired, ca));

        var (clientCert, clientKey) = certs.ClientCert("someone", otherCa: true);
        Assert.EndsWith("client.someone.other-ca.crt", clientCert);
        using var client = X509Certificate2.CreateFromPemFile(clientCert, clientKey);
        Assert.True(client.HasPrivateKey);
        Assert.Equal("CN=someone", client.Subject);
        Assert.True(Chains(client, otherCa));
        Assert.Equal(certs.ClientCert("someone", otherCa: true), (clientCert, clientKey));

        foreach (var key in new[] { certs.CaKey, certs.ServerKey, certs.WrongHostKey, clientKey, certs.ClientCert(TlsPostgresFixture.CertUser).KeyPath })
        {
            Assert.StartsWith("-----BEGIN PRIVATE KEY-----", File.ReadAllText(key));
            if (!OperatingSystem.IsWindows())
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(key));
        }

        using var withKey = certs.LoadServerCertificate();
        Assert.True(withKey.HasPrivateKey);
    }

    private static bool Chains(X509Certificate2 cert, X509Certificate2 root)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(root);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(cert);
    }
}
