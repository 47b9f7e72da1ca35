using System.Globalization;

namespace Pooler.Tests.Infrastructure;

/// <summary>This test process's open descriptors, for leak checks (Linux /proc).</summary>
public static class Descriptors
{
    /// <summary>Sockets this process holds open (entries of /proc/self/fd that are sockets).</summary>
    public static int OpenSockets() => SocketInodes().Count();

    /// <summary>
    /// Sockets this process holds whose local port is <paramref name="port"/>: an in-process pooler's listener and the
    /// connections it accepted. Unlike a count of every descriptor, tests running beside it (their files, pipes and
    /// sockets) do not change it.
    /// </summary>
    public static int SocketsOnLocalPort(int port)
    {
        var inodes = new HashSet<string>();
        foreach (var table in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
        {
            if (!File.Exists(table)) continue;
            foreach (var line in File.ReadLines(table).Skip(1))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 10) continue;
                var local = f[1];
                if (int.Parse(local[(local.LastIndexOf(':') + 1)..], NumberStyles.HexNumber, CultureInfo.InvariantCulture) == port)
                    inodes.Add(f[9]);
            }
        }
        return SocketInodes().Count(inodes.Contains);
    }

    /// <summary>The inode of every socket this process holds ("socket:[123]" gives "123").</summary>
    private static IEnumerable<string> SocketInodes()
    {
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(fd).LinkTarget;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // closed while we looked
            }
            if (target?.StartsWith("socket:[", StringComparison.Ordinal) == true) yield return target[8..^1];
        }
    }
}
