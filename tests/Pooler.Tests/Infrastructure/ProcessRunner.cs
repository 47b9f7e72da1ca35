using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace Pooler.Tests.Infrastructure;

/// <summary>Outcome of running an external program.</summary>
public sealed record ProcessResult(int ExitCode, string StdOut, string StdErr, bool TimedOut, TimeSpan Elapsed)
{
    public bool Succeeded => ExitCode == 0 && !TimedOut;

    /// <summary>Throws with both output streams when the program failed or timed out.</summary>
    public ProcessResult EnsureSuccess(string what)
    {
        if (!Succeeded)
            throw new InvalidOperationException(
                $"{what} failed (exit {ExitCode}{(TimedOut ? ", timed out" : "")}, {Elapsed.TotalSeconds:0.0} s)\n--- stdout ---\n{StdOut}\n--- stderr ---\n{StdErr}");
        return this;
    }

    public override string ToString() =>
        $"exit {ExitCode}{(TimedOut ? " (timed out)" : "")}\n--- stdout ---\n{StdOut}\n--- stderr ---\n{StdErr}";
}

/// <summary>
/// Runs external programs with a timeout, capturing output; and the few OS-user tricks needed
/// because PostgreSQL and PgBouncer refuse to run as root.
/// </summary>
public static class ProcessRunner
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(2);

    /// <summary>The OS user that runs PostgreSQL and PgBouncer when the tests run as root.</summary>
    public const string ServiceUser = "postgres";

    private static readonly Lazy<bool> Root = new(() => geteuid() == 0);
    private static readonly object UserGate = new();
    private static bool _userChecked;

    /// <summary>True when this process runs as root (uid 0).</summary>
    public static bool IsRoot => Root.Value;

    /// <summary>
    /// Runs <paramref name="fileName"/> with <paramref name="args"/>; kills the whole process tree on timeout.
    /// Environment entries with a null value are removed from the child's environment.
    /// </summary>
    public static ProcessResult Run(string fileName, IEnumerable<string> args,
        IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? timeout = null,
        string? workingDirectory = null, bool asServiceUser = false)
    {
        var psi = CreateStartInfo(fileName, args, environment, workingDirectory, asServiceUser);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = true;

        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var watch = Stopwatch.StartNew();
        using var process = new Process { StartInfo = psi };
        process.OutputDataReceived += (_, e) => { if (e.Data != null) lock (stdout) stdout.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (stderr) stderr.AppendLine(e.Data); };
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        var limit = timeout ?? DefaultTimeout;
        var timedOut = false;
        if (!process.WaitForExit(limit))
        {
            timedOut = true;
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            process.WaitForExit(5000);
        }
        else
        {
            // Let the async readers reach end of stream, but never hang on a grandchild that kept the pipes open.
            using var drain = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try { process.WaitForExitAsync(drain.Token).GetAwaiter().GetResult(); }
            catch (OperationCanceledException) { }
        }

        int exitCode;
        try { exitCode = timedOut ? -1 : process.ExitCode; } catch (InvalidOperationException) { exitCode = -1; }
        string o, e;
        lock (stdout) o = stdout.ToString();
        lock (stderr) e = stderr.ToString();
        return new ProcessResult(exitCode, o, e, timedOut, watch.Elapsed);
    }

    /// <summary>Like <see cref="Run"/> but off the calling thread.</summary>
    public static Task<ProcessResult> RunAsync(string fileName, IEnumerable<string> args,
        IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? timeout = null,
        string? workingDirectory = null, bool asServiceUser = false)
    {
        var list = args.ToList();
        return Task.Run(() => Run(fileName, list, environment, timeout, workingDirectory, asServiceUser));
    }

    /// <summary>
    /// Builds a start info; with <paramref name="asServiceUser"/> and when running as root the
    /// program is run through <c>runuser -u postgres -- /bin/sh -c 'ulimit -n "$(ulimit -Hn)"; exec "$@"'</c>.
    /// </summary>
    public static ProcessStartInfo CreateStartInfo(string fileName, IEnumerable<string> args,
        IReadOnlyDictionary<string, string?>? environment = null, string? workingDirectory = null,
        bool asServiceUser = false)
    {
        var psi = new ProcessStartInfo { UseShellExecute = false, CreateNoWindow = true };
        if (asServiceUser && IsRoot)
        {
            EnsureServiceUser();
            // runuser's PAM session (pam_limits) drops the soft open-files limit to 1024, too few for PgBouncer with
            // ~1000 clients: raise it back to the hard limit before exec'ing the program.
            psi.FileName = "runuser";
            foreach (var a in new[] { "-u", ServiceUser, "--", "/bin/sh", "-c", "ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$@\"", "sh", fileName })
                psi.ArgumentList.Add(a);
        }
        else
        {
            psi.FileName = fileName;
        }
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        if (workingDirectory != null)
            psi.WorkingDirectory = workingDirectory;
        // Keep libpq tools from picking up the developer's own settings.
        foreach (var name in new[] { "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE", "PGPASSFILE" })
            psi.Environment.Remove(name);
        psi.Environment["LC_ALL"] = "C";
        psi.Environment["LANG"] = "C";
        if (environment != null)
        {
            foreach (var (key, value) in environment)
            {
                if (value == null) psi.Environment.Remove(key);
                else psi.Environment[key] = value;
            }
        }
        return psi;
    }

    /// <summary>
    /// When root: makes sure the OS user <c>postgres</c> exists (Debian's postgresql package creates it;
    /// otherwise <c>useradd</c>). Does nothing for other users.
    /// </summary>
    public static void EnsureServiceUser()
    {
        if (!IsRoot) return;
        lock (UserGate)
        {
            if (_userChecked) return;
            if (Run("id", new[] { "-u", ServiceUser }, timeout: TimeSpan.FromSeconds(10)).ExitCode != 0)
            {
                var add = Run("useradd", new[] { "--system", "--user-group", "--no-create-home", "--home-dir", "/var/lib/postgresql", "--shell", "/bin/bash", ServiceUser },
                    timeout: TimeSpan.FromSeconds(30));
                // A parallel test process may have created it meanwhile.
                if (Run("id", new[] { "-u", ServiceUser }, timeout: TimeSpan.FromSeconds(10)).ExitCode != 0)
                    add.EnsureSuccess($"useradd {ServiceUser}");
            }
            _userChecked = true;
        }
    }

    /// <summary>When root, gives <paramref name="path"/> (recursively) to the service user so PostgreSQL/PgBouncer can use it.</summary>
    public static void GiveToServiceUser(string path)
    {
        if (!IsRoot) return;
        EnsureServiceUser();
        Run("chown", new[] { "-R", $"{ServiceUser}:", path }, timeout: TimeSpan.FromSeconds(30)).EnsureSuccess($"chown {path}");
    }

    /// <summary>Sends a signal to a process (SIGTERM = 15, SIGINT = 2, SIGKILL = 9). False if it does not exist.</summary>
    public static bool Signal(int pid, int signal) => pid > 0 && kill(pid, signal) == 0;

    /// <summary>True while a process with this id exists (signal 0 probe).</summary>
    public static bool IsAlive(int pid) => pid > 0 && (kill(pid, 0) == 0 || Marshal.GetLastPInvokeError() == 1 /* EPERM */);

    public const int SigInt = 2;
    public const int SigKill = 9;
    public const int SigTerm = 15;

    [DllImport("libc", SetLastError = true)]
    private static extern uint geteuid();

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);
}
