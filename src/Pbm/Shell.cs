using System.Text.Json;

namespace Pbm;

/// <summary>
/// The interactive session: reads command lines, runs each on one connection to the node, and completes
/// command words from the node's command list, fetched once at the start.
/// </summary>
internal sealed class Shell(Endpoint endpoint, Terminal terminal)
{
    private PbmClient? _client;

    /// <returns>The exit code of the last command (0 when none ran), or 2 when the node cannot be reached at the start.</returns>
    public async Task<int> RunAsync()
    {
        Completion completion;
        using (var start = terminal.Interrupts.BeginCommand())
        {
            try
            {
                _client = await PbmClient.ConnectAsync(endpoint, start.Token);
                completion = new Completion(await FetchCommandsAsync(_client, start.Token));
            }
            catch (NodeUnreachableException e)
            {
                await terminal.Err.WriteLineAsync($"pbm: cannot reach {endpoint}: {e.Message}");
                await DropAsync();
                return PbmProgram.Unreachable;
            }
            catch (OperationCanceledException) when (start.Interrupted)
            {
                await DropAsync();
                return PbmProgram.Ok;
            }
        }

        await terminal.Out.WriteLineAsync($"Connected to {endpoint} (type help, exit to quit)");
        var prompt = $"pbm {endpoint}> ";
        var status = PbmProgram.Ok;
        try
        {
            while (await terminal.Input.ReadLineAsync(prompt, completion, terminal.Interrupts.Session) is { } line)
            {
                List<string> words;
                try
                {
                    words = CommandLine.Split(line);
                }
                catch (FormatException e)
                {
                    await terminal.Err.WriteLineAsync($"pbm: {e.Message}");
                    status = PbmProgram.Failed;
                    continue;
                }
                if (words.Count == 0)
                    continue;
                if (words is ["exit" or "quit"])
                    break;
                status = await RunAsync(words);
            }
        }
        finally
        {
            await DropAsync();
        }
        return status;
    }

    private async Task<int> RunAsync(List<string> words)
    {
        var (command, json) = PbmProgram.SplitJsonFlag(words);
        if (command.Count == 0)
            return await PbmProgram.NoCommandAsync(terminal);
        using var run = terminal.Interrupts.BeginCommand();
        try
        {
            // After a broken connection or an interrupted tail, the next command opens a new one.
            _client ??= await PbmClient.ConnectAsync(endpoint, run.Token);
            return await PbmProgram.RunCommandAsync(_client, command, json, terminal, run.Token);
        }
        catch (NodeUnreachableException e)
        {
            await terminal.Err.WriteLineAsync($"pbm: cannot reach {endpoint}: {e.Message}");
            await DropAsync();
            return PbmProgram.Unreachable;
        }
        catch (OperationCanceledException) when (run.Interrupted)
        {
            // The node streams until the connection closes: closing it is what stops the command.
            await DropAsync();
            return PbmProgram.Ok;
        }
    }

    /// <summary>The node's command words (<c>cluster show</c>, ...) from <c>help --json</c>; none when it lists none.</summary>
    private static async Task<IReadOnlyList<string>> FetchCommandsAsync(PbmClient client, CancellationToken ct)
    {
        JsonElement list = default;
        var outcome = await client.ExecuteAsync(["help"], true, _ => { }, value => list = value, ct);
        if (outcome.Exit != 0 || list.ValueKind != JsonValueKind.Array)
            return [];
        return list.EnumerateArray()
            .Where(c => c.ValueKind == JsonValueKind.Object && c.TryGetProperty("command", out var name) && name.ValueKind == JsonValueKind.String)
            .Select(c => c.GetProperty("command").GetString()!)
            .ToList();
    }

    private async Task DropAsync()
    {
        if (_client is not null)
            await _client.DisposeAsync();
        _client = null;
    }
}
