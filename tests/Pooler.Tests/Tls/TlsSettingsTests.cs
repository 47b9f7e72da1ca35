using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Pooler.Actors.Config;
using Pooler.Actors.Tls;
using Pooler.Tests.Config;
using Xunit;

namespace Pooler.Tests.Tls;

/// <summary>client-tls-* / server-tls-* parsing, and loading the certificate files they name.</summary>
public sealed class TlsSettingsTests : IDisposable
{
    private readonly TempDir _dir = new();

    public TlsSettingsTests()
    {
        _dir.Write("userlist.txt", "\"alice\" \"secret\"\n");
        var (ca, caKey) = MakeCa("Settings Test CA");
        File.WriteAllText(Path.Combine(_dir.Path, "ca.crt"), ca.ExportCertificatePem());
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        using var leaf = req.Create(ca, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1), [1, 2, 3]);
        File.WriteAllText(Path.Combine(_dir.Path, "server.crt"), leaf.ExportCertificatePem());
        File.WriteAllText(Path.Combine(_dir.Path, "server.key"), key.ExportPkcs8PrivateKeyPem());
        File.WriteAllText(Path.Combine(_dir.Path, "garbage.pem"), "not a certificate\n");
        caKey.Dispose();
    }

    public void Dispose() => _dir.Dispose();

    private static (X509Certificate2 Ca, ECDsa Key) MakeCa(string name)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=" + name, key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        return (req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30)), key);
    }

    private PoolerSettings Load(params string[] sets)
        => SettingsLoader.Load(SettingsLoader.Layer(null, [], ["pooler.auth.users-file=userlist.txt", .. sets]), _dir.Path);

    private ConfigException Invalid(params string[] sets) => Assert.Throws<ConfigException>(() => Load(sets));

    [Fact]
    public void Tls_is_off_by_default_on_both_sides()
    {
        var s = Load();
        Assert.Equal(TlsSettings.Off, s.ClientTls);
        Assert.Equal(TlsSettings.Off, s.ServerTls);
        var tls = TlsContexts.Load(s);
        Assert.Null(tls.Client);
        Assert.Null(tls.Server);
    }

    [Fact]
    public void Every_key_is_read_and_relative_paths_resolve_against_the_config_folder()
    {
        var s = Load("pooler.client-tls-sslmode=verify-full", "pooler.client-tls-cert-file=server.crt", "pooler.client-tls-key-file=server.key",
            "pooler.client-tls-ca-file=ca.crt", "pooler.client-tls-protocols=tlsv1.3",
            "pooler.server-tls-sslmode=verify-ca", "pooler.server-tls-ca-file=ca.crt", "pooler.server-tls-cert-file=server.crt",
            "pooler.server-tls-key-file=server.key", "pooler.server-tls-protocols=all");
        Assert.Equal(new TlsSettings(SslMode.VerifyFull, Path.Combine(_dir.Path, "server.key"), Path.Combine(_dir.Path, "server.crt"),
            Path.Combine(_dir.Path, "ca.crt"), SslProtocols.Tls13), s.ClientTls);
        Assert.Equal(SslMode.VerifyCa, s.ServerTls.Mode);
        Assert.Equal(SslProtocols.Tls12 | SslProtocols.Tls13, s.ServerTls.Protocols);
        var tls = TlsContexts.Load(s);
        Assert.NotNull(tls.Client);
        Assert.NotNull(tls.Server);
    }

    [Theory]
    [InlineData("disable", SslMode.Disable)]
    [InlineData("allow", SslMode.Allow)]
    [InlineData("prefer", SslMode.Prefer)]
    [InlineData("require", SslMode.Require)]
    [InlineData("verify-ca", SslMode.VerifyCa)]
    [InlineData("VERIFY-FULL", SslMode.VerifyFull)]
    public void Server_sslmodes_are_libpq_names(string name, SslMode mode)
        => Assert.Equal(mode, Load($"pooler.server-tls-sslmode={name}", "pooler.server-tls-ca-file=ca.crt").ServerTls.Mode);

    [Theory]
    [InlineData("secure", SslProtocols.Tls12 | SslProtocols.Tls13)]
    [InlineData("all", SslProtocols.Tls12 | SslProtocols.Tls13)]
    [InlineData("tlsv1.2", SslProtocols.Tls12)]
    [InlineData("tlsv1.3", SslProtocols.Tls13)]
    [InlineData("tlsv1.2, tlsv1.3", SslProtocols.Tls12 | SslProtocols.Tls13)]
    public void Protocol_lists_parse(string text, SslProtocols expected)
    {
        Assert.True(TlsSettings.TryParseProtocols(text, out var p, out var error), error);
        Assert.Equal(expected, p);
    }

    [Theory]
    [InlineData("tlsv1.0")]
    [InlineData("tlsv1.1")]
    [InlineData("legacy")]
    [InlineData("sslv3")]
    [InlineData("")]
    public void Old_or_unknown_protocols_are_refused(string text)
    {
        Assert.False(TlsSettings.TryParseProtocols(text, out _, out var error));
        Assert.False(string.IsNullOrEmpty(error));
    }

    [Theory]
    [InlineData("pooler.client-tls-sslmode=sometimes", "pooler.client-tls-sslmode")]
    [InlineData("pooler.client-tls-sslmode=require", "pooler.client-tls-cert-file")]                       // no certificate to serve
    [InlineData("pooler.client-tls-sslmode=require|pooler.client-tls-cert-file=server.crt", "pooler.client-tls-key-file")]
    [InlineData("pooler.client-tls-sslmode=verify-ca|pooler.client-tls-cert-file=server.crt|pooler.client-tls-key-file=server.key", "pooler.client-tls-ca-file")]
    [InlineData("pooler.client-tls-sslmode=require|pooler.client-tls-cert-file=missing.crt|pooler.client-tls-key-file=server.key", "pooler.client-tls-cert-file")]
    [InlineData("pooler.client-tls-protocols=tlsv1.1", "pooler.client-tls-protocols")]
    [InlineData("pooler.server-tls-sslmode=verify-full", "pooler.server-tls-ca-file")]
    [InlineData("pooler.server-tls-sslmode=require|pooler.server-tls-key-file=server.key", "pooler.server-tls-cert-file")]
    [InlineData("pooler.auth.type=cert", "pooler.auth.type")]                                                // cert login without client TLS
    [InlineData("pooler.auth.type=cert|pooler.client-tls-sslmode=require|pooler.client-tls-cert-file=server.crt|pooler.client-tls-key-file=server.key", "pooler.auth.type")] // nor a CA
    public void Mistakes_are_refused_naming_the_key(string sets, string key)
        => Assert.Equal(key, Invalid(sets.Split('|')).Key);

    [Fact]
    public void Cert_auth_needs_no_users_file()
    {
        var s = SettingsLoader.Load(SettingsLoader.Layer(null, [], ["pooler.auth.type=cert", "pooler.client-tls-sslmode=require",
            "pooler.client-tls-cert-file=server.crt", "pooler.client-tls-key-file=server.key", "pooler.client-tls-ca-file=ca.crt"]), _dir.Path);
        Assert.Equal(AuthType.Cert, s.Auth.Type);
        Assert.Null(s.Auth.UsersFile);
    }

    [Theory]
    [InlineData("pooler.client-tls-cert-file=garbage.pem", "pooler.client-tls-cert-file")]
    [InlineData("pooler.client-tls-key-file=ca.crt", "pooler.client-tls-cert-file")]                 // a key file holding no key
    [InlineData("pooler.client-tls-ca-file=garbage.pem", "pooler.client-tls-ca-file")]
    public void Unusable_files_are_refused_when_loaded_naming_the_key(string set, string key)
    {
        var s = Load(["pooler.client-tls-sslmode=prefer", "pooler.client-tls-cert-file=server.crt", "pooler.client-tls-key-file=server.key",
            "pooler.client-tls-ca-file=ca.crt", set]);
        var e = Assert.Throws<ConfigException>(() => TlsContexts.Load(s));
        Assert.Equal(key, e.Key);
    }
}
