using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Pooler.Actors.Config;

namespace Pooler.Actors.Tls;

/// <summary>What a finished handshake established, as the sessions need it (cert login, SHOW, logs).</summary>
public sealed record TlsInfo(string Protocol, string Cipher, bool Direct, bool Alpn, string? PeerCommonName, bool PeerPresented, string? PeerProblem)
{
    /// <summary>The peer sent a certificate that chains to the configured CA and is in its validity period.</summary>
    public bool PeerValid => PeerPresented && PeerProblem == null;

    /// <summary>PgBouncer's SHOW CLIENTS tls column: protocol/cipher.</summary>
    public string Describe => $"{Protocol}/{Cipher}";
}

/// <summary>
/// The certificates of both sides, loaded from the files the settings name. Built whole at start and on
/// every reload, so a reload re-reads files replaced in place and a bad file changes nothing.
/// </summary>
public sealed class TlsContexts
{
    public static readonly TlsContexts None = new(null, null);

    private TlsContexts(ClientTls? client, ServerTls? server)
    {
        Client = client;
        Server = server;
    }

    /// <summary>Null when client-tls-sslmode is disable.</summary>
    public ClientTls? Client { get; }
    /// <summary>Null when server-tls-sslmode is disable.</summary>
    public ServerTls? Server { get; }

    /// <exception cref="ConfigException">A file cannot be read or is not a valid PEM certificate or key; names the key.</exception>
    public static TlsContexts Load(PoolerSettings settings)
    {
        var c = settings.ClientTls;
        var s = settings.ServerTls;
        return new TlsContexts(
            c.Enabled ? new ClientTls(c, LoadCertificate("client-tls", c.CertFile!, c.KeyFile!), LoadCa("client-tls", c.CaFile),
                askForCertificate: c.Verifies || settings.Auth.Type == AuthType.Cert) : null,
            s.Enabled ? new ServerTls(s, s.CertFile != null ? LoadCertificate("server-tls", s.CertFile, s.KeyFile!) : null, LoadCa("server-tls", s.CaFile)) : null);
    }

    private static (X509Certificate2 Leaf, X509Certificate2Collection Chain) LoadCertificate(string prefix, string certFile, string keyFile)
    {
        X509Certificate2 leaf;
        try { leaf = X509Certificate2.CreateFromPemFile(certFile, keyFile); }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new ConfigException($"pooler.{prefix}-cert-file", $"cannot load certificate '{certFile}' with key '{keyFile}': {e.Message}");
        }
        // a PEM key is ephemeral; OpenSSL-backed SslStream uses it as is
        var chain = new X509Certificate2Collection();
        try { chain.ImportFromPemFile(certFile); }
        catch (CryptographicException e) { throw new ConfigException($"pooler.{prefix}-cert-file", $"cannot read '{certFile}': {e.Message}"); }
        var intermediates = new X509Certificate2Collection();
        foreach (var c in chain)
            if (c.Thumbprint != leaf.Thumbprint) intermediates.Add(c);
        return (leaf, intermediates);
    }

    private static X509Certificate2Collection? LoadCa(string prefix, string? caFile)
    {
        if (caFile == null) return null;
        var ca = new X509Certificate2Collection();
        try { ca.ImportFromPemFile(caFile); }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"pooler.{prefix}-ca-file", $"cannot read CA certificates from '{caFile}': {e.Message}");
        }
        if (ca.Count == 0) throw new ConfigException($"pooler.{prefix}-ca-file", $"'{caFile}' holds no PEM certificate");
        return ca;
    }

    /// <summary>
    /// Checks <paramref name="cert"/> against the configured roots only (not the system store), without
    /// revocation (no CRL is configured). Returns null when valid, else why not, in words.
    /// </summary>
    internal static string? CheckChain(X509Certificate? cert, X509Chain? presented, X509Certificate2Collection roots)
    {
        if (cert == null) return "no certificate";
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(roots);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (presented != null)
            foreach (var e in presented.ChainElements) chain.ChainPolicy.ExtraStore.Add(e.Certificate);
        var leaf = cert as X509Certificate2 ?? new X509Certificate2(cert);
        if (chain.Build(leaf)) return null;
        var problems = chain.ChainStatus.Select(s => s.Status switch
        {
            X509ChainStatusFlags.NotTimeValid => DateTime.Now > leaf.NotAfter ? $"certificate has expired (not after {leaf.NotAfter.ToUniversalTime():u})" : $"certificate is not yet valid (not before {leaf.NotBefore.ToUniversalTime():u})",
            X509ChainStatusFlags.UntrustedRoot or X509ChainStatusFlags.PartialChain => "certificate is not signed by a trusted CA",
            _ => s.StatusInformation.Trim(),
        }).Distinct();
        return string.Join("; ", problems);
    }

    internal static string CommonName(X509Certificate cert)
        => (cert as X509Certificate2 ?? new X509Certificate2(cert)).GetNameInfo(X509NameType.SimpleName, forIssuer: false);

    internal static TlsInfo Describe(SslStream ssl, bool direct, string? peerCn, bool presented, string? problem)
        => new(ssl.SslProtocol switch
        {
            System.Security.Authentication.SslProtocols.Tls13 => "TLSv1.3",
            System.Security.Authentication.SslProtocols.Tls12 => "TLSv1.2",
            var p => p.ToString(),
        }, ssl.NegotiatedCipherSuite.ToString(), direct, ssl.NegotiatedApplicationProtocol == ClientTls.Alpn, peerCn, presented, problem);
}

/// <summary>The pooler as a TLS server to its clients.</summary>
public sealed class ClientTls
{
    /// <summary>ALPN name of PostgreSQL 17's direct TLS (libpq sslnegotiation=direct).</summary>
    public static readonly SslApplicationProtocol Alpn = new("postgresql");

    private readonly SslStreamCertificateContext _certificate;
    private readonly X509Certificate2Collection? _ca;
    private readonly bool _askForCertificate;

    /// <param name="askForCertificate">Send a CertificateRequest: only when a certificate is checked (verify-ca,
    /// verify-full) or logs in (auth.type = cert), as PgBouncer; otherwise the handshake is a message shorter.</param>
    public ClientTls(TlsSettings settings, (X509Certificate2 Leaf, X509Certificate2Collection Chain) cert, X509Certificate2Collection? ca, bool askForCertificate)
    {
        Settings = settings;
        // built once: the chain to send is resolved here, not at every handshake
        _certificate = SslStreamCertificateContext.Create(cert.Leaf, cert.Chain, offline: true);
        _ca = ca;
        _askForCertificate = askForCertificate && ca != null;
    }

    public TlsSettings Settings { get; }

    /// <summary>Runs the server side of a handshake. A client certificate is asked for when a CA is set, and checked
    /// here; a bad or missing one does not fail the handshake, so the session can answer with a clear error.</summary>
    public async Task<TlsInfo> AcceptAsync(SslStream ssl, bool direct, CancellationToken ct)
    {
        X509Certificate? peer = null;
        string? problem = null;
        var options = new SslServerAuthenticationOptions
        {
            ServerCertificateContext = _certificate,
            EnabledSslProtocols = Settings.Protocols,
            ClientCertificateRequired = _askForCertificate,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            ApplicationProtocols = [Alpn],
            RemoteCertificateValidationCallback = (_, cert, chain, _) =>
            {
                peer = cert;
                problem = _askForCertificate && cert != null ? TlsContexts.CheckChain(cert, chain, _ca!) : null;
                return true;
            },
        };
        await ssl.AuthenticateAsServerAsync(options, ct).ConfigureAwait(false);
        return TlsContexts.Describe(ssl, direct, peer != null ? TlsContexts.CommonName(peer) : null, peer != null, peer == null ? "no certificate" : problem);
    }
}

/// <summary>The pooler as a TLS client of the servers.</summary>
public sealed class ServerTls
{
    private readonly X509Certificate2Collection? _clientCert;
    private readonly X509Certificate2Collection? _ca;

    public ServerTls(TlsSettings settings, (X509Certificate2 Leaf, X509Certificate2Collection Chain)? cert, X509Certificate2Collection? ca)
    {
        Settings = settings;
        if (cert is { } c)
        {
            _clientCert = [c.Leaf];
            _clientCert.AddRange(c.Chain);
        }
        _ca = ca;
    }

    public TlsSettings Settings { get; }

    /// <summary>Runs the client side of a handshake with <paramref name="host"/>; throws when the server's
    /// certificate fails the checks sslmode asks for (the message says which).</summary>
    public async Task<TlsInfo> ConnectAsync(SslStream ssl, string host, CancellationToken ct)
    {
        string? problem = null;
        var mode = Settings.Mode;
        var options = new SslClientAuthenticationOptions
        {
            // SNI and the name check need a host name; SslStream leaves SNI out for an IP address
            TargetHost = host,
            EnabledSslProtocols = Settings.Protocols,
            ClientCertificates = _clientCert,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = (_, cert, chain, _) =>
            {
                if (mode < SslMode.VerifyCa) return true;
                problem = TlsContexts.CheckChain(cert, chain, _ca!);
                if (problem == null && mode == SslMode.VerifyFull && !(cert as X509Certificate2 ?? new X509Certificate2(cert!)).MatchesHostname(host))
                    problem = $"server certificate for \"{TlsContexts.CommonName(cert!)}\" does not match host name \"{host}\"";
                return problem == null;
            },
        };
        try
        {
            await ssl.AuthenticateAsClientAsync(options, ct).ConfigureAwait(false);
        }
        catch (System.Security.Authentication.AuthenticationException e) when (problem != null)
        {
            throw new System.Security.Authentication.AuthenticationException($"server certificate rejected ({TlsSettings.NameOf(mode)}): {problem}", e);
        }
        var peer = ssl.RemoteCertificate;
        return TlsContexts.Describe(ssl, false, peer != null ? TlsContexts.CommonName(peer) : null, peer != null, null);
    }
}
