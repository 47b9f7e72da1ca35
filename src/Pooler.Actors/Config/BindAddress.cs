using System.Net;
using System.Net.Sockets;

namespace Pooler.Actors.Config;

/// <summary>What a listen <c>host</c> setting (client listener, pbm, HTTP) binds to.</summary>
public static class BindAddress
{
    /// <summary><c>*</c> or empty: every IPv4 interface; <c>localhost</c>: 127.0.0.1; an IP address; else a host name resolved once.</summary>
    public static async Task<IPAddress> ResolveAsync(string host)
    {
        if (host is "*" or "") return IPAddress.Any;
        if (host == "localhost") return IPAddress.Loopback;
        if (IPAddress.TryParse(host, out var ip)) return ip;
        var found = await Dns.GetHostAddressesAsync(host);
        return found.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? found.FirstOrDefault()
            ?? throw new InvalidOperationException($"{host} resolves to no address");
    }
}
