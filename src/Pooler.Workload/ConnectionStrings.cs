using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;

namespace Pooler.Workload;

/// <summary>
/// Turns the <c>--uri</c> argument into Npgsql settings. Accepts a libpq-style URI
/// (<c>postgresql://user:pw@host:port/db?sslmode=prefer&amp;application_name=x</c>, several hosts separated by
/// commas) or an Npgsql connection string (<c>Host=...;Username=...</c>).
/// </summary>
public static partial class ConnectionStrings
{
    /// <summary>Client-side statement timeout when the URI sets none: long, because overloaded runs can take a minute per statement.</summary>
    public const int DefaultCommandTimeoutSeconds = 300;

    public static bool IsUri(string uri) =>
        uri.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase) || uri.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Parses <paramref name="uri"/>. Unless the URI says otherwise, GSS encryption is off (its probe costs a
    /// round trip per connection and poolers refuse it anyway) and the command timeout is <see cref="DefaultCommandTimeoutSeconds"/>.
    /// </summary>
    public static NpgsqlConnectionStringBuilder ToBuilder(string uri)
    {
        NpgsqlConnectionStringBuilder b;
        bool gssGiven, timeoutGiven;
        if (IsUri(uri))
        {
            (b, gssGiven, timeoutGiven) = FromUri(uri);
        }
        else
        {
            b = new NpgsqlConnectionStringBuilder(uri);
            var lower = uri.ToLowerInvariant();
            gssGiven = lower.Contains("gss");
            timeoutGiven = lower.Contains("command timeout") || lower.Contains("commandtimeout");
        }
        if (!gssGiven) b.GssEncryptionMode = GssEncryptionMode.Disable;
        if (!timeoutGiven) b.CommandTimeout = DefaultCommandTimeoutSeconds;
        return b;
    }

    private static (NpgsqlConnectionStringBuilder, bool Gss, bool Timeout) FromUri(string uri)
    {
        var b = new NpgsqlConnectionStringBuilder();
        var rest = uri[(uri.IndexOf("://", StringComparison.Ordinal) + 3)..];
        string? query = null;
        var q = rest.IndexOf('?');
        if (q >= 0)
        {
            query = rest[(q + 1)..];
            rest = rest[..q];
        }
        var slash = rest.IndexOf('/');
        var authority = slash >= 0 ? rest[..slash] : rest;
        var path = slash >= 0 ? rest[(slash + 1)..] : "";
        var at = authority.LastIndexOf('@');
        if (at >= 0)
        {
            var userInfo = authority[..at];
            authority = authority[(at + 1)..];
            var colon = userInfo.IndexOf(':');
            b.Username = Uri.UnescapeDataString(colon >= 0 ? userInfo[..colon] : userInfo);
            if (colon >= 0) b.Password = Uri.UnescapeDataString(userInfo[(colon + 1)..]);
        }
        if (authority.Length > 0)
        {
            // Each host may carry its own port; Npgsql takes "h1:p1,h2:p2" in Host.
            var hosts = authority.Split(',');
            if (hosts.Length == 1)
            {
                var (host, port) = HostPort(hosts[0]);
                if (host.Length > 0) b.Host = host;
                if (port is { } p) b.Port = p;
            }
            else
            {
                b.Host = string.Join(',', hosts.Select(h =>
                {
                    var (host, port) = HostPort(h);
                    return port is { } p ? $"{host}:{p}" : host;
                }));
            }
        }
        if (path.Length > 0) b.Database = Uri.UnescapeDataString(path);

        bool gss = false, timeout = false;
        foreach (var pair in (query ?? "").Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = pair.IndexOf('=');
            if (eq <= 0) throw new FormatException($"bad URI parameter '{pair}'");
            var key = Uri.UnescapeDataString(pair[..eq]);
            var value = Uri.UnescapeDataString(pair[(eq + 1)..]);
            switch (key)
            {
                case "sslmode":
                    b.SslMode = value switch
                    {
                        "disable" => SslMode.Disable,
                        "allow" => SslMode.Allow,
                        "prefer" => SslMode.Prefer,
                        "require" => SslMode.Require,
                        "verify-ca" => SslMode.VerifyCA,
                        "verify-full" => SslMode.VerifyFull,
                        _ => throw new FormatException($"unknown sslmode '{value}'"),
                    };
                    break;
                case "gssencmode":
                    gss = true;
                    b.GssEncryptionMode = value switch
                    {
                        "disable" => GssEncryptionMode.Disable,
                        "prefer" => GssEncryptionMode.Prefer,
                        "require" => GssEncryptionMode.Require,
                        _ => throw new FormatException($"unknown gssencmode '{value}'"),
                    };
                    break;
                case "application_name": b.ApplicationName = value; break;
                case "connect_timeout": b.Timeout = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "options": b.Options = value; break;
                case "user": b.Username = value; break;
                case "password": b.Password = value; break;
                case "dbname": b.Database = value; break;
                case "host": b.Host = value; break;
                case "port": b.Port = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "sslrootcert": b.RootCertificate = value; break;
                case "sslcert": b.SslCertificate = value; break;
                case "sslkey": b.SslKey = value; break;
                case "target_session_attrs": b["Target Session Attributes"] = value; break;
                default:
                    // Anything else must be an Npgsql keyword (e.g. "Command Timeout=60").
                    if (key.Equals("command timeout", StringComparison.OrdinalIgnoreCase) ||
                        key.Equals("commandtimeout", StringComparison.OrdinalIgnoreCase))
                        timeout = true;
                    b[key] = value;
                    break;
            }
        }
        return (b, gss, timeout);
    }

    private static (string Host, int? Port) HostPort(string s)
    {
        string host = s, port = "";
        if (s.StartsWith('['))
        {
            var close = s.IndexOf(']');
            if (close < 0) throw new FormatException($"bad host '{s}'");
            host = s[1..close];
            if (close + 1 < s.Length && s[close + 1] == ':') port = s[(close + 2)..];
        }
        else
        {
            var colon = s.LastIndexOf(':');
            if (colon >= 0)
            {
                host = s[..colon];
                port = s[(colon + 1)..];
            }
        }
        if (port.Length == 0) return (Uri.UnescapeDataString(host), null);
        if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out var p) || p is < 1 or > 65535)
            throw new FormatException($"bad port '{port}'");
        return (Uri.UnescapeDataString(host), p);
    }

    /// <summary>The URI with its password replaced by <c>***</c> (for reports).</summary>
    public static string Redact(string uri)
    {
        if (IsUri(uri))
        {
            var r = UserInfoPassword().Replace(uri, "$1***@");
            return QueryPassword().Replace(r, "$1***");
        }
        try
        {
            var b = new NpgsqlConnectionStringBuilder(uri);
            if (!string.IsNullOrEmpty(b.Password)) b.Password = "***";
            return b.ConnectionString;
        }
        catch (ArgumentException)
        {
            return "(unparsable)";
        }
    }

    [GeneratedRegex(@"^([a-zA-Z]+://[^:/@?]*:)[^@/?]*@")]
    private static partial Regex UserInfoPassword();

    [GeneratedRegex(@"([?&]password=)[^&]*")]
    private static partial Regex QueryPassword();
}
