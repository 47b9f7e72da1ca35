using System.Net;
using System.Net.Sockets;

namespace Pooler.Tests.Infrastructure;

/// <summary>Finds TCP ports that are free on 127.0.0.1.</summary>
public static class FreePort
{
    private static readonly object Gate = new();
    private static readonly HashSet<int> Handed = new();

    /// <summary>
    /// Returns a port that nothing listens on right now. The OS picks it (bind to port 0), and this
    /// process never hands the same port out twice, so parallel tests don't collide with each other.
    /// Another process could still take it before the caller binds: callers that start servers retry.
    /// </summary>
    public static int Next()
    {
        for (var attempt = 0; attempt < 100; attempt++)
        {
            var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            listener.Stop();
            lock (Gate)
            {
                if (Handed.Add(port))
                    return port;
            }
        }
        throw new InvalidOperationException("Could not find a free TCP port on 127.0.0.1");
    }

    /// <summary>True when a TCP connect to host:port succeeds within the timeout.</summary>
    public static bool IsAccepting(int port, string host = "127.0.0.1", int timeoutMs = 500)
    {
        try
        {
            using var client = new TcpClient();
            var task = client.ConnectAsync(host, port);
            return task.Wait(timeoutMs) && client.Connected;
        }
        catch (Exception)
        {
            return false;
        }
    }
}
