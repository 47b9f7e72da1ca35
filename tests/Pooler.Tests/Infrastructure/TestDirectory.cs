namespace Pooler.Tests.Infrastructure;

/// <summary>
/// A scratch folder under /tmp (named <c>pooler-it-*</c>) deleted on dispose. It records the id of the
/// test process that made it, so a later run can stop servers left behind by a crashed run
/// (<see cref="CleanupStale"/>).
/// </summary>
public sealed class TestDirectory : IDisposable
{
    private const string Prefix = "pooler-it-";
    private const string OwnerFile = "owner.pid";
    private static int _staleCleaned;

    public string Path { get; }

    private TestDirectory(string path) => Path = path;

    /// <summary>Root of all scratch folders: $POOLER_TEST_TMP, else /tmp (PostgreSQL must be able to reach it when we run as root).</summary>
    public static string Root =>
        Environment.GetEnvironmentVariable("POOLER_TEST_TMP") is { Length: > 0 } dir ? dir : "/tmp";

    /// <summary>Creates a fresh folder; with <paramref name="forServiceUser"/> it is owned by the postgres OS user when running as root.</summary>
    public static TestDirectory Create(string kind, bool forServiceUser = false)
    {
        if (Interlocked.Exchange(ref _staleCleaned, 1) == 0)
            CleanupStale();
        Directory.CreateDirectory(Root);
        var path = System.IO.Path.Combine(Root, $"{Prefix}{kind}-{Guid.NewGuid().ToString("N")[..12]}");
        var info = Directory.CreateDirectory(path);
        if (!OperatingSystem.IsWindows())
            info.UnixFileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        File.WriteAllText(System.IO.Path.Combine(path, OwnerFile), Environment.ProcessId.ToString());
        if (forServiceUser)
            ProcessRunner.GiveToServiceUser(path);
        return new TestDirectory(path);
    }

    /// <summary>Path of a file or folder inside this one.</summary>
    public string Combine(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => TryDelete(Path);

    internal static void TryDelete(string path)
    {
        for (var i = 0; i < 5; i++)
        {
            try
            {
                if (Directory.Exists(path))
                    Directory.Delete(path, recursive: true);
                return;
            }
            catch (IOException) { Thread.Sleep(100); }
            catch (UnauthorizedAccessException) { Thread.Sleep(100); }
        }
    }

    /// <summary>
    /// Stops PostgreSQL/PgBouncer processes left in scratch folders whose test process is gone, and deletes those folders.
    /// </summary>
    public static void CleanupStale()
    {
        string[] dirs;
        try { dirs = Directory.GetDirectories(Root, Prefix + "*"); }
        catch (Exception) { return; }
        foreach (var dir in dirs)
        {
            try
            {
                var ownerPath = System.IO.Path.Combine(dir, OwnerFile);
                if (!File.Exists(ownerPath)) continue;
                if (!int.TryParse(File.ReadAllText(ownerPath).Trim(), out var owner)) continue;
                if (owner == Environment.ProcessId || ProcessRunner.IsAlive(owner)) continue;

                foreach (var pidFile in Directory.EnumerateFiles(dir, "*.pid", SearchOption.AllDirectories))
                {
                    var name = System.IO.Path.GetFileName(pidFile);
                    if (name == OwnerFile) continue;
                    var first = File.ReadLines(pidFile).FirstOrDefault();
                    if (!int.TryParse(first?.Trim(), out var pid) || !ProcessRunner.IsAlive(pid)) continue;
                    var cmd = ReadCmdline(pid);
                    if (!cmd.Contains("postgres") && !cmd.Contains("pgbouncer")) continue;
                    // SIGQUIT is PostgreSQL's immediate shutdown (it takes the backends along).
                    ProcessRunner.Signal(pid, name == "postmaster.pid" ? 3 : ProcessRunner.SigKill);
                    for (var i = 0; i < 50 && ProcessRunner.IsAlive(pid); i++) Thread.Sleep(100);
                    if (ProcessRunner.IsAlive(pid)) ProcessRunner.Signal(pid, ProcessRunner.SigKill);
                }
                TryDelete(dir);
            }
            catch (Exception)
            {
                // best effort
            }
        }
    }

    private static string ReadCmdline(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' '); }
        catch (Exception) { return ""; }
    }
}
