using System.Reflection;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Pbm;

/// <summary>pbm's command line: one command, or an interactive session when none is given.</summary>
internal static class PbmProgram
{
    public const string JsonFlag = "--json";

    /// <summary>Exit codes: the command succeeded, failed on the node, or the node could not be reached.</summary>
    public const int Ok = 0, Failed = 1, Unreachable = 2;

    public const string Usage = """
        usage: pbm [HOST:PORT] [COMMAND...] [--json]

        Runs COMMAND on a pooler node and prints its answer. Without COMMAND, opens an interactive
        session on one connection, with line editing, history and Tab completion.

          HOST:PORT    the node's command endpoint: HOST:PORT, [IPV6]:PORT, or PORT on 127.0.0.1;
                       default $PBM_ENDPOINT, else 127.0.0.1:9110
          --json       print the answer as JSON
          -h, --help   print this help
          --version    print pbm's version

        `pbm HOST:PORT help` lists the node's commands.

        Exit status: 0 done, 1 the command failed, 2 the node could not be reached.
        """;

    public static async Task<int> RunAsync(IReadOnlyList<string> args, Terminal terminal, string? environmentEndpoint)
    {
        if (args is ["--help" or "-h", ..])
            return await PrintAsync(terminal.Out, Usage);
        if (args is ["--version", ..])
            return await PrintAsync(terminal.Out, $"pbm {Version()}");

        var (endpoint, tookFirst) = Endpoint.Choose(args, environmentEndpoint);
        if (endpoint is null)
        {
            await terminal.Err.WriteLineAsync(
                $"pbm: cannot reach {environmentEndpoint}: {Endpoint.EnvironmentVariable} is not HOST:PORT, [IPV6]:PORT or PORT");
            return Unreachable;
        }
        var words = args.Skip(tookFirst ? 1 : 0).ToList();
        if (words is ["--help" or "-h"])
            return await PrintAsync(terminal.Out, Usage);
        if (words is ["--version"])
            return await PrintAsync(terminal.Out, $"pbm {Version()}");
        if (words.Count == 0)
            return await new Shell(endpoint, terminal).RunAsync();
        var (command, json) = SplitJsonFlag(words);
        if (command.Count == 0)
            return await NoCommandAsync(terminal);

        using var run = terminal.Interrupts.BeginCommand();
        try
        {
            await using var client = await PbmClient.ConnectAsync(endpoint, run.Token);
            return await RunCommandAsync(client, command, json, terminal, run.Token);
        }
        catch (NodeUnreachableException e)
        {
            await terminal.Err.WriteLineAsync($"pbm: cannot reach {endpoint}: {e.Message}");
            return Unreachable;
        }
        catch (OperationCanceledException) when (run.Interrupted)
        {
            // Ctrl-C is how a streaming command (cluster tail) is meant to end.
            return Ok;
        }
    }

    /// <summary>Runs one command and prints its reply: lines and JSON to stdout, the failure to stderr.</summary>
    /// <exception cref="NodeUnreachableException">The connection broke before the command ended.</exception>
    public static async Task<int> RunCommandAsync(PbmClient client, IReadOnlyList<string> command, bool json,
        Terminal terminal, CancellationToken ct)
    {
        // A JSON value nobody asked for is not printed: without --json, stdout is for people.
        var outcome = await client.ExecuteAsync(command, json, terminal.Out.WriteLine,
            value => { if (json) terminal.Out.WriteLine(Pretty(value)); }, ct);
        if (outcome.Exit == 0)
            return Ok;
        await terminal.Err.WriteLineAsync($"pbm: {outcome.Error ?? "command failed"}");
        // Any failure the node reports is a command error; 2 stays reserved for an unreachable node.
        return Failed;
    }

    public static (List<string> Command, bool Json) SplitJsonFlag(IReadOnlyList<string> words) =>
        (words.Where(w => w != JsonFlag).ToList(), words.Contains(JsonFlag));

    public static async Task<int> NoCommandAsync(Terminal terminal)
    {
        await terminal.Err.WriteLineAsync($"pbm: {JsonFlag} needs a command");
        return Failed;
    }

    private static string Pretty(JsonElement value)
    {
        using var buffer = new MemoryStream();
        // Relaxed escaping keeps names and messages readable (no \u00e9 for é); the output is not HTML.
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            value.WriteTo(writer);
        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private static string Version() =>
        typeof(PbmProgram).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(PbmProgram).Assembly.GetName().Version?.ToString() ?? "unknown";

    private static async Task<int> PrintAsync(TextWriter output, string text)
    {
        await output.WriteLineAsync(text);
        return Ok;
    }
}
