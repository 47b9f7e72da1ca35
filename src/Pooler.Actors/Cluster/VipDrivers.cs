using System.Diagnostics;
using System.Globalization;
using Pooler.Actors.Config;

namespace Pooler.Actors.Cluster;

/// <summary>
/// Puts the VIP up, renews its lease and takes it down. Called only by <see cref="VipOwner"/>, which runs
/// on its own thread, so the calls may block briefly (a child process, a bind).
/// </summary>
public interface IVipDriver
{
    /// <summary>What the log lines call it, e.g. "10.0.0.250/24 on eth0".</summary>
    string Describe { get; }
    /// <summary>The address is this machine's while held, so the holder listens on it (and routes from it).</summary>
    bool Listens { get; }
    /// <summary>Puts the VIP up; throws with the reason when it cannot.</summary>
    void Up();
    /// <summary>Extends the VIP's lifetime; throws when it cannot (the owner then takes it down).</summary>
    void Renew();
    /// <summary>Takes the VIP down; never throws (a VIP already gone is fine).</summary>
    void Down();
}

/// <summary>Makes the driver <c>pooler.vip.driver</c> names.</summary>
public static class VipDrivers
{
    /// <param name="warn">Where a driver reports what went wrong in the background (the gratuitous ARP).</param>
    public static IVipDriver Create(VipSettings vip, Action<string>? warn = null) => vip.Driver switch
    {
        VipDriverKind.Linux => new LinuxVipDriver(vip, warn),
        VipDriverKind.Bind => new BindVipDriver(vip),
        VipDriverKind.Script => new ScriptVipDriver(vip),
        _ => new NoVipDriver(),
    };
}

/// <summary><c>none</c>: the singleton still runs (and can be moved), no address is touched.</summary>
public sealed class NoVipDriver : IVipDriver
{
    public string Describe => "no VIP (driver none)";
    public bool Listens => false;
    public void Up() { }
    public void Renew() { }
    public void Down() { }
}

/// <summary>Runs a command and waits for it, bounded; the result carries stderr for the log line.</summary>
public static class Command
{
    public sealed record Result(int ExitCode, string Output);

    public static Result Run(string file, IEnumerable<string> args, IDictionary<string, string>? env = null, TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(timeout ?? TimeSpan.FromSeconds(5)))
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            return new Result(-1, $"{file} timed out");
        }
        p.WaitForExit();
        var text = (stderr.Result + stdout.Result).Trim();
        return new Result(p.ExitCode, text);
    }
}

/// <summary>
/// <c>linux</c>: the address with a kernel lifetime (<c>valid_lft</c>), so it disappears by itself if this
/// process dies or freezes; gratuitous ARP after adding it so neighbours update their caches at once.
/// </summary>
public sealed class LinuxVipDriver(VipSettings vip, Action<string>? warn = null) : IVipDriver
{
    private string Lifetime => ((int)vip.Lifetime.TotalSeconds).ToString(CultureInfo.InvariantCulture);

    public string Describe => $"{vip.Address} on {vip.Interface} (linux, lifetime {Lifetime}s)";
    public bool Listens => true;

    public void Up()
    {
        // replace = add, or refresh if a copy is still there
        Ip("replace", vip.Address, "dev", vip.Interface, "valid_lft", Lifetime, "preferred_lft", Lifetime);
        // arping waits a second after its packet: let it run beside the hand-over, not in front of it
        _ = Task.Run(() =>
        {
            try
            {
                var arp = Command.Run(vip.ArpingCommand, ["-U", "-c", "1", "-I", vip.Interface, vip.Host]);
                if (arp.ExitCode != 0) warn?.Invoke($"gratuitous ARP for {vip.Host} failed ({vip.ArpingCommand} exit {arp.ExitCode}): {arp.Output}");
            }
            catch (Exception e)
            {
                warn?.Invoke($"gratuitous ARP for {vip.Host} failed: {e.Message}");
            }
        });
    }

    public void Renew() => Ip("change", vip.Address, "dev", vip.Interface, "valid_lft", Lifetime, "preferred_lft", Lifetime);

    public void Down()
    {
        var r = Command.Run(vip.IpCommand, ["addr", "del", vip.Address, "dev", vip.Interface]);
        _ = r; // "Cannot assign requested address": it was not there, which is the goal
    }

    private void Ip(params string[] args)
    {
        var r = Command.Run(vip.IpCommand, ["addr", .. args]);
        if (r.ExitCode != 0) throw new InvalidOperationException($"{vip.IpCommand} addr {string.Join(' ', args)}: exit {r.ExitCode}: {r.Output}");
    }
}

/// <summary><c>script</c>: the user's commands move the address (e.g. a cloud API); no lifetime to renew.</summary>
public sealed class ScriptVipDriver(VipSettings vip) : IVipDriver
{
    public string Describe => $"{vip.Address} (script)";
    public bool Listens => false; // the address may land on another machine (a cloud IP)

    private Dictionary<string, string> Env => new()
    {
        ["VIP_ADDRESS"] = vip.Address,
        ["VIP_INTERFACE"] = vip.Interface,
        ["VIP_PORT"] = vip.Port.ToString(CultureInfo.InvariantCulture),
    };

    public void Up()
    {
        var r = Command.Run("/bin/sh", ["-c", vip.UpCommand], Env, TimeSpan.FromSeconds(30));
        if (r.ExitCode != 0) throw new InvalidOperationException($"up-command failed (exit {r.ExitCode}): {r.Output}");
    }

    public void Renew() { }

    public void Down() => Command.Run("/bin/sh", ["-c", vip.DownCommand], Env, TimeSpan.FromSeconds(30));
}

/// <summary>
/// <c>bind</c>: nothing to put on an interface: the address already exists (e.g. 127.0.0.100 on loopback),
/// and holding the VIP is listening on it (<see cref="VipOwner"/> binds it). Only one process can bind the
/// address, so the kernel refuses a second owner; a paused owner keeps it until it wakes and drops it.
/// </summary>
public sealed class BindVipDriver(VipSettings vip) : IVipDriver
{
    public string Describe => $"{vip.Host}:{vip.Port} (bind)";
    public bool Listens => true;
    public void Up() { }
    public void Renew() { }
    public void Down() { }
}
