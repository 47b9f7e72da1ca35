namespace Pooler.Tests.Infrastructure;

/// <summary>
/// A private network made of Linux network namespaces for one test: a bridge in a namespace of its own and,
/// per member, a namespace joined to it by a veth pair with an address on a test subnet that exists only
/// inside these namespaces (no route out). Needs root (CI runs as root). Dispose deletes every namespace,
/// which also removes their links and addresses.
/// </summary>
public sealed class NetNs : IDisposable
{
    private readonly List<string> _namespaces = new();
    private readonly Dictionary<string, string> _veths = new();
    private readonly string _id = Guid.NewGuid().ToString("N")[..6];

    public string Bridge { get; }

    /// <summary>The first three octets of the subnet, e.g. "10.231.0".</summary>
    public string Subnet { get; }

    /// <summary>arping's path (Debian puts it in /usr/bin or /usr/sbin; a namespace's PATH may lack sbin).</summary>
    public static string Arping => new[] { "/usr/bin/arping", "/usr/sbin/arping", "/bin/arping" }.FirstOrDefault(File.Exists) ?? "arping";

    /// <summary>Root and iproute2: what the namespaces need.</summary>
    public static bool Available => ProcessRunner.IsRoot && ProcessRunner.Run("ip", ["-V"], timeout: TimeSpan.FromSeconds(5)).ExitCode == 0;

    public NetNs(string subnet = "10.231.0")
    {
        Subnet = subnet;
        Bridge = Add("br");
        Ip(Bridge, "link", "add", "br0", "type", "bridge");
        Ip(Bridge, "link", "set", "br0", "up");
    }

    /// <summary>A namespace named after <paramref name="role"/> with eth0 = subnet.<paramref name="host"/>/24 on the bridge.</summary>
    public string Member(string role, int host)
    {
        var ns = Add(role);
        var veth = $"v{_namespaces.Count}{_id}";
        _veths[ns] = veth;
        Ip(Bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns);
        Ip(Bridge, "link", "set", veth, "master", "br0", "up");
        Ip(ns, "addr", "add", $"{Subnet}.{host}/24", "dev", "eth0");
        Ip(ns, "link", "set", "eth0", "up");
        Ip(ns, "link", "set", "lo", "up");
        return ns;
    }

    /// <summary>The bridge-side link of a member: set it down to cut the member off (a partition), up to heal.</summary>
    public void SetLink(string ns, bool up)
    {
        if (!_veths.TryGetValue(ns, out var veth)) throw new ArgumentException($"{ns} is not a member");
        Ip(Bridge, "link", "set", veth, up ? "up" : "down");
    }

    /// <summary>Runs <c>ip -n NS ARGS</c>; throws with its output when it fails.</summary>
    public static string Ip(string ns, params string[] args)
    {
        var r = ProcessRunner.Run("ip", ["-n", ns, .. args], timeout: TimeSpan.FromSeconds(10));
        if (r.ExitCode != 0) throw new InvalidOperationException($"ip -n {ns} {string.Join(' ', args)}: {r.StdErr}{r.StdOut}");
        return r.StdOut;
    }

    /// <summary>Does <paramref name="ns"/> hold <paramref name="address"/> on eth0 now?</summary>
    public static bool HasAddress(string ns, string address)
    {
        var r = ProcessRunner.Run("ip", ["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"], timeout: TimeSpan.FromSeconds(5));
        return r.ExitCode == 0 && r.StdOut.Contains($" {address}/", StringComparison.Ordinal);
    }

    private string Add(string role)
    {
        var ns = $"pl{role}-{_id}";
        var r = ProcessRunner.Run("ip", ["netns", "add", ns], timeout: TimeSpan.FromSeconds(10));
        if (r.ExitCode != 0) throw new InvalidOperationException($"ip netns add {ns}: {r.StdErr}");
        _namespaces.Add(ns);
        return ns;
    }

    public void Dispose()
    {
        foreach (var ns in Enumerable.Reverse(_namespaces))
            ProcessRunner.Run("ip", ["netns", "del", ns], timeout: TimeSpan.FromSeconds(10));
        _namespaces.Clear();
    }
}
