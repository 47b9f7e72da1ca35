using System.Security.Authentication;

namespace Pooler.Actors.Tls;

/// <summary>PgBouncer's client_tls_sslmode / server_tls_sslmode values (libpq's sslmode names).</summary>
public enum SslMode { Disable, Allow, Prefer, Require, VerifyCa, VerifyFull }

/// <summary>
/// One side's TLS settings (<c>client-tls-*</c>: clients connecting to the pooler; <c>server-tls-*</c>: the
/// pooler connecting to PostgreSQL or CockroachDB). File paths are absolute (resolved by the loader).
/// </summary>
public sealed record TlsSettings(SslMode Mode, string? KeyFile, string? CertFile, string? CaFile, SslProtocols Protocols)
{
    public static readonly TlsSettings Off = new(SslMode.Disable, null, null, null, SslProtocols.Tls12 | SslProtocols.Tls13);

    public bool Enabled => Mode != SslMode.Disable;

    /// <summary>The certificate of the peer is checked against <see cref="CaFile"/>.</summary>
    public bool Verifies => Mode >= SslMode.VerifyCa;

    public static readonly KeyValuePair<string, SslMode>[] ModeNames =
    [
        new("disable", SslMode.Disable), new("allow", SslMode.Allow), new("prefer", SslMode.Prefer),
        new("require", SslMode.Require), new("verify-ca", SslMode.VerifyCa), new("verify-full", SslMode.VerifyFull),
    ];

    public static string NameOf(SslMode mode) => ModeNames.First(m => m.Value == mode).Key;

    /// <summary>
    /// Parses PgBouncer's tls_protocols: "secure" (TLS 1.2 and 1.3), "all", or a list of tlsv1.2 / tlsv1.3.
    /// TLS 1.0 and 1.1 are refused: the OpenSSL under .NET disables them and PgBouncer's "secure" excludes them.
    /// </summary>
    public static bool TryParseProtocols(string text, out SslProtocols protocols, out string? error)
    {
        protocols = SslProtocols.None;
        error = null;
        foreach (var raw in text.Split([',', ' ', ':'], StringSplitOptions.RemoveEmptyEntries))
        {
            switch (raw.Trim().ToLowerInvariant())
            {
                case "secure" or "all" or "default":
                    protocols |= SslProtocols.Tls12 | SslProtocols.Tls13;
                    break;
                case "tlsv1.2" or "tls1.2":
                    protocols |= SslProtocols.Tls12;
                    break;
                case "tlsv1.3" or "tls1.3":
                    protocols |= SslProtocols.Tls13;
                    break;
                case "tlsv1.0" or "tlsv1.1" or "legacy":
                    error = $"'{raw}' is not supported (TLS 1.0 and 1.1 are insecure; use tlsv1.2, tlsv1.3 or secure)";
                    return false;
                default:
                    error = $"unknown protocol '{raw}' (expected secure, all, tlsv1.2 or tlsv1.3)";
                    return false;
            }
        }
        if (protocols == SslProtocols.None) { error = "names no protocol"; return false; }
        return true;
    }
}
