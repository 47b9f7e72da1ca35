using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Pbm;

/// <summary>A node's command endpoint: HOST:PORT, [IPV6]:PORT, or a bare PORT on 127.0.0.1.</summary>
internal sealed record Endpoint(string Host, int Port)
{
    public const string EnvironmentVariable = "PBM_ENDPOINT";
    public static readonly Endpoint Default = new("127.0.0.1", 9110);

    public override string ToString() => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";

    public static bool TryParse(string text, [NotNullWhen(true)] out Endpoint? endpoint)
    {
        endpoint = null;
        if (text.Length == 0)
            return false;
        if (text.All(char.IsAsciiDigit))
        {
            if (!TryPort(text, out var bare))
                return false;
            endpoint = new Endpoint("127.0.0.1", bare);
            return true;
        }

        string host, port;
        if (text[0] == '[')
        {
            var close = text.IndexOf("]:", StringComparison.Ordinal);
            if (close < 0)
                return false;
            host = text[1..close];
            if (!IPAddress.TryParse(host, out var address) || address.AddressFamily != AddressFamily.InterNetworkV6)
                return false;
            port = text[(close + 2)..];
        }
        else
        {
            // One colon only: an unbracketed IPv6 address cannot be told apart from its port.
            var colon = text.IndexOf(':');
            if (colon <= 0 || colon != text.LastIndexOf(':'))
                return false;
            host = text[..colon];
            if (!host.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_'))
                return false;
            port = text[(colon + 1)..];
        }
        if (!TryPort(port, out var number))
            return false;
        endpoint = new Endpoint(host, number);
        return true;
    }

    /// <summary>
    /// The endpoint for a command line: its first argument when that looks like an endpoint, else
    /// <paramref name="environment"/> (PBM_ENDPOINT), else the default. Null when the environment value is no endpoint.
    /// </summary>
    public static (Endpoint? Endpoint, bool TookFirstArgument) Choose(IReadOnlyList<string> args, string? environment)
    {
        if (args.Count > 0 && TryParse(args[0], out var given))
            return (given, true);
        if (string.IsNullOrWhiteSpace(environment))
            return (Default, false);
        return (TryParse(environment.Trim(), out var configured) ? configured : null, false);
    }

    private static bool TryPort(string text, out int port) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port is > 0 and <= 65535;
}
