using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Pooler.Tests.Infrastructure;

/// <summary>Outcome of a node script: the process result and the JSON of its last "RESULT {...}" stdout line (null if none).</summary>
public sealed record NodeResult(ProcessResult Process, JsonElement? Summary)
{
    public bool Succeeded => Process.Succeeded && Summary != null;

    /// <summary>The summary; fails the test with both output streams when the script failed, timed out or printed none.</summary>
    public JsonElement EnsureSuccess(string what)
    {
        if (!Succeeded)
            throw new Xunit.Sdk.XunitException($"{what} failed{(Summary == null && Process.Succeeded ? " (no RESULT line)" : "")}: {Process}");
        return Summary!.Value;
    }

    public override string ToString() => Process.ToString();
}

/// <summary>
/// Runs the node-postgres (npm <c>pg</c>) scripts of <c>tests/Pooler.Tests/node</c>. The packages are installed once
/// per package.json/package-lock.json content with <c>npm install</c> into a cache folder under the test output
/// (<c>node-pg/&lt;hash&gt;</c>, shared by test processes through a lock file), and the scripts run from the
/// source folder with <c>NODE_PATH</c> pointing at that cache, so <c>dotnet test</c> alone is enough.
/// Connection settings go in PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE (see node/common.js).
/// </summary>
public static class NodePg
{
    public static readonly TimeSpan DefaultRunTimeout = TimeSpan.FromMinutes(3);

    private static NpmTools Tools => NpmTools.For(Path.Combine("tests", "Pooler.Tests", "node"));

    /// <summary>tests/Pooler.Tests/node of the repository.</summary>
    public static string ScriptDirectory => Tools.SourceDirectory;

    /// <summary>The installed node_modules folder (installs on first use; throws with npm's output when it cannot).</summary>
    public static string ModulesDirectory => Tools.ModulesDirectory;

    /// <summary>
    /// Runs <c>node &lt;script&gt;</c> against 127.0.0.1:<paramref name="port"/> as <paramref name="user"/>
    /// (password null = the fixture user's known one). <paramref name="environment"/> adds script settings
    /// (e.g. CLIENTS). The script's own watchdog fires a little before <paramref name="timeout"/>, then the process tree is killed.
    /// </summary>
    public static async Task<NodeResult> RunAsync(string script, int port, string user = PostgresFixture.ScramUser,
        string? password = null, string database = PostgresFixture.Database,
        IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null)
    {
        var limit = timeout ?? DefaultRunTimeout;
        var env = new Dictionary<string, string?>
        {
            ["PGHOST"] = "127.0.0.1",
            ["PGPORT"] = port.ToString(CultureInfo.InvariantCulture),
            ["PGUSER"] = user,
            ["PGPASSWORD"] = password ?? PostgresFixture.PasswordOf(user) ?? "",
            ["PGDATABASE"] = database,
            ["NODE_PG_TIMEOUT_MS"] = ((long)Math.Max(1000, limit.TotalMilliseconds - 10_000)).ToString(CultureInfo.InvariantCulture),
        };
        if (environment != null)
            foreach (var (k, v) in environment) env[k] = v;
        var result = await Tools.RunNodeAsync(script, [], env, limit).ConfigureAwait(false);
        return new NodeResult(result, ParseSummary(result.StdOut));
    }

    private static JsonElement? ParseSummary(string stdout)
    {
        var line = stdout.Split('\n').Select(l => l.TrimEnd('\r')).LastOrDefault(l => l.StartsWith("RESULT ", StringComparison.Ordinal));
        if (line == null) return null;
        try
        {
            using var doc = JsonDocument.Parse(line["RESULT ".Length..]);
            return doc.RootElement.Clone();
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
