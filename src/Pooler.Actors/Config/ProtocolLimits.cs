namespace Pooler.Actors.Config;

/// <summary>Fixed protocol limits that are not settings.</summary>
public static class ProtocolLimits
{
    /// <summary>
    /// Largest startup packet (StartupMessage, SSLRequest, CancelRequest, GSSENCRequest) accepted from a
    /// client, in bytes, length word included; larger ones are refused before login, as PgBouncer does.
    /// <c>pooler.max-packet-size</c> applies to packets after login.
    /// </summary>
    public const int MaxStartupPacketSize = 10000;
}
