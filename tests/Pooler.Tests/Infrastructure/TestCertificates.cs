using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Pooler.Tests.Infrastructure;

/// <summary>
/// A throwaway certificate authority and the certificates the TLS tests need, as PEM files in a scratch folder
/// (deleted on dispose). Keys are ECDSA P-256, unencrypted PKCS#8 (<c>-----BEGIN PRIVATE KEY-----</c>), mode 0600 and
/// owned by the test process's user, which is what libpq wants for sslkey. PostgreSQL (run as the OS user
/// <c>postgres</c> when the tests run as root) gets its own copies through <see cref="ServiceUserCopy"/>.
/// <list type="bullet">
/// <item><c>ca.crt</c>/<c>ca.key</c>: root "Pooler Test CA"; <c>other-ca.crt</c>/<c>other-ca.key</c>: an unrelated root</item>
/// <item><c>server.crt</c>/<c>server.key</c>: CN=localhost, SAN DNS:localhost + IP:127.0.0.1, serverAuth</item>
/// <item><c>wronghost.crt</c>/<c>.key</c>: by the CA, SAN DNS:not-this-host.example only</item>
/// <item><c>expired-server.crt</c>/<c>.key</c>: like server.crt but valid only in the past</item>
/// <item><c>client.&lt;cn&gt;.crt</c>/<c>.key</c>: clientAuth, by <see cref="ClientCert"/> (scram_user and cert_user made up front)</item>
/// </list>
/// One instance per fixture; its methods may be called from several threads.
/// </summary>
public sealed class TestCertificates : IDisposable
{
    public const string CaName = "Pooler Test CA";
    public const string OtherCaName = "Pooler Other Test CA";
    public const string ServerHost = "localhost";
    public const string WrongHost = "not-this-host.example";

    private const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";
    private const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";
    private const UnixFileMode PrivateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode PublicMode = PrivateMode | UnixFileMode.GroupRead | UnixFileMode.OtherRead;

    private readonly TestDirectory _dir;
    private readonly X509Certificate2 _ca;
    private readonly X509Certificate2 _otherCa;
    private readonly object _gate = new();
    private readonly Dictionary<(string Cn, bool Expired, bool OtherCa), (string CertPath, string KeyPath)> _clients = new();
    private readonly Dictionary<string, string> _serviceUserCopies = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <summary>The scratch folder holding every file.</summary>
    public string Directory => _dir.Path;

    public string CaCert => _dir.Combine("ca.crt");
    public string CaKey => _dir.Combine("ca.key");
    public string OtherCaCert => _dir.Combine("other-ca.crt");
    public string OtherCaKey => _dir.Combine("other-ca.key");
    public string ServerCert => _dir.Combine("server.crt");
    public string ServerKey => _dir.Combine("server.key");
    public string WrongHostCert => _dir.Combine("wronghost.crt");
    public string WrongHostKey => _dir.Combine("wronghost.key");
    public string ExpiredServerCert => _dir.Combine("expired-server.crt");
    public string ExpiredServerKey => _dir.Combine("expired-server.key");

    private TestCertificates(TestDirectory dir)
    {
        _dir = dir;
        // Roots start well in the past so that the expired leaves still fall inside their issuer's validity
        // (CertificateRequest.Create refuses a leaf outliving or predating its issuer).
        var now = DateTimeOffset.UtcNow;
        _ca = CreateRoot(CaName, now.AddYears(-5), now.AddYears(10));
        _otherCa = CreateRoot(OtherCaName, now.AddYears(-5), now.AddYears(10));
        WriteCertificate(_ca, CaCert, CaKey);
        WriteCertificate(_otherCa, OtherCaCert, OtherCaKey);

        var serverSan = new SubjectAlternativeNameBuilder();
        serverSan.AddDnsName(ServerHost);
        serverSan.AddIpAddress(IPAddress.Loopback);
        IssueLeaf(_ca, ServerHost, ServerAuthOid, serverSan, now.AddDays(-1), now.AddYears(1), ServerCert, ServerKey);

        var wrongSan = new SubjectAlternativeNameBuilder();
        wrongSan.AddDnsName(WrongHost);
        IssueLeaf(_ca, WrongHost, ServerAuthOid, wrongSan, now.AddDays(-1), now.AddYears(1), WrongHostCert, WrongHostKey);

        var expiredSan = new SubjectAlternativeNameBuilder();
        expiredSan.AddDnsName(ServerHost);
        expiredSan.AddIpAddress(IPAddress.Loopback);
        IssueLeaf(_ca, ServerHost, ServerAuthOid, expiredSan, now.AddYears(-2), now.AddDays(-30), ExpiredServerCert, ExpiredServerKey);

        ClientCert(PostgresFixture.ScramUser);
        ClientCert(TlsPostgresFixture.CertUser);
    }

    /// <summary>
    /// Makes the CA and the fixed certificates in a new scratch folder. The folder belongs to the postgres OS user when
    /// running as root (so PostgreSQL can reach it); the files in it stay the test process's.
    /// </summary>
    public static TestCertificates Create()
    {
        var dir = TestDirectory.Create("certs", forServiceUser: true);
        try
        {
            return new TestCertificates(dir);
        }
        catch
        {
            dir.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A client certificate (clientAuth EKU) with CN=<paramref name="cn"/>, signed by the CA (or by the unrelated
    /// one with <paramref name="otherCa"/>), valid now or, with <paramref name="expired"/>, only in the past.
    /// Files: <c>client.&lt;cn&gt;[.expired][.other-ca].crt/.key</c>; made once, then the same paths are returned.
    /// </summary>
    public (string CertPath, string KeyPath) ClientCert(string cn, bool expired = false, bool otherCa = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(cn);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_clients.TryGetValue((cn, expired, otherCa), out var existing)) return existing;

            var stem = "client." + FileNamePart(cn) + (expired ? ".expired" : "") + (otherCa ? ".other-ca" : "");
            var paths = (CertPath: _dir.Combine(stem + ".crt"), KeyPath: _dir.Combine(stem + ".key"));
            var now = DateTimeOffset.UtcNow;
            var (notBefore, notAfter) = expired ? (now.AddYears(-2), now.AddDays(-30)) : (now.AddDays(-1), now.AddYears(1));
            IssueLeaf(otherCa ? _otherCa : _ca, cn, ClientAuthOid, san: null, notBefore, notAfter, paths.CertPath, paths.KeyPath);
            _clients[(cn, expired, otherCa)] = paths;
            return paths;
        }
    }

    /// <summary>
    /// A copy of one of these files (e.g. <see cref="ServerKey"/>) that the postgres OS user owns, mode 0600, in a
    /// sub-folder of <see cref="Directory"/>: PostgreSQL refuses an ssl_key_file that group or others may read, or that
    /// is not its own (root's is accepted only with 0640 and the group set to postgres). Not root: a plain 0600 copy.
    /// Made once per file.
    /// </summary>
    public string ServiceUserCopy(string path)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_serviceUserCopies.TryGetValue(path, out var existing)) return existing;
            var folder = _dir.Combine("service-user");
            System.IO.Directory.CreateDirectory(folder);
            var copy = Path.Combine(folder, Path.GetFileName(path));
            WriteFile(copy, File.ReadAllBytes(path), PrivateMode);
            ProcessRunner.GiveToServiceUser(folder);
            _serviceUserCopies[path] = copy;
            return copy;
        }
    }

    /// <summary>The CA certificate (public part only), e.g. for a custom trust store.</summary>
    public X509Certificate2 LoadCaCertificate() => LoadCertificate(CaCert);

    /// <summary>A certificate (public part only) from a .crt of this folder.</summary>
    public static X509Certificate2 LoadCertificate(string certPath) => X509Certificate2.CreateFromPem(File.ReadAllText(certPath));

    /// <summary>A certificate with its private key from a .crt/.key pair of this folder (e.g. the server's, for an SslStream).</summary>
    public static X509Certificate2 LoadWithKey(string certPath, string keyPath)
    {
        using var pem = X509Certificate2.CreateFromPemFile(certPath, keyPath);
        // The PEM-loaded key is ephemeral; a PKCS#12 round trip gives one SslStream can use on every platform.
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), password: null);
    }

    /// <summary><see cref="ServerCert"/> with <see cref="ServerKey"/>.</summary>
    public X509Certificate2 LoadServerCertificate() => LoadWithKey(ServerCert, ServerKey);

    private static X509Certificate2 CreateRoot(string name, DateTimeOffset notBefore, DateTimeOffset notAfter)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest(new X500DistinguishedName($"CN={name}, O=Pooler Tests"), key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign | X509KeyUsageFlags.DigitalSignature, true));
        var ski = new X509SubjectKeyIdentifierExtension(req.PublicKey, false);
        req.CertificateExtensions.Add(ski);
        req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromSubjectKeyIdentifier(ski));
        return req.CreateSelfSigned(notBefore, notAfter);
    }

    private static void IssueLeaf(X509Certificate2 issuer, string cn, string ekuOid, SubjectAlternativeNameBuilder? san,
        DateTimeOffset notBefore, DateTimeOffset notAfter, string certPath, string keyPath)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var subject = new X500DistinguishedNameBuilder();
        subject.AddCommonName(cn);
        var req = new CertificateRequest(subject.Build(), key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(new OidCollection { new Oid(ekuOid) }, false));
        if (san != null) req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(issuer, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        using var cert = req.Create(issuer, notBefore, notAfter, NewSerial());
        WriteFile(certPath, Encoding.ASCII.GetBytes(cert.ExportCertificatePem() + "\n"), PublicMode);
        WriteFile(keyPath, Encoding.ASCII.GetBytes(key.ExportPkcs8PrivateKeyPem() + "\n"), PrivateMode);
    }

    private static void WriteCertificate(X509Certificate2 cert, string certPath, string keyPath)
    {
        WriteFile(certPath, Encoding.ASCII.GetBytes(cert.ExportCertificatePem() + "\n"), PublicMode);
        using var key = cert.GetECDsaPrivateKey() ?? throw new InvalidOperationException("CA certificate without its key");
        WriteFile(keyPath, Encoding.ASCII.GetBytes(key.ExportPkcs8PrivateKeyPem() + "\n"), PrivateMode);
    }

    /// <summary>Positive, non-zero 128-bit serial (DER INTEGER without a leading sign byte).</summary>
    private static byte[] NewSerial()
    {
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] = (byte)((serial[0] & 0x7F) | 0x40);
        return serial;
    }

    /// <summary>Creates the file with its final mode, so a key is never readable by others even briefly.</summary>
    private static void WriteFile(string path, byte[] content, UnixFileMode mode)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = mode;
        using (var stream = new FileStream(path, options))
            stream.Write(content);
        // UnixCreateMode is filtered by the umask; set it again for the modes the umask would narrow.
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, mode);
    }

    /// <summary>The CN as a file-name part: other characters become '_', plus a short hash so two CNs never share files.</summary>
    private static string FileNamePart(string cn)
    {
        var safe = new string(cn.Select(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '@' ? c : '_').ToArray());
        if (safe == cn) return cn;
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(cn)))[..8];
        return safe + "-" + hash;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _ca.Dispose();
        _otherCa.Dispose();
        _dir.Dispose();
    }
}
