namespace Pbm;

/// <summary>Lines from a pipe or file: no editing, no completion. Each line is echoed after its prompt so
/// the output reads as a transcript.</summary>
internal sealed class RedirectedLines(TextReader input, TextWriter output) : ILineReader
{
    public async Task<string?> ReadLineAsync(string prompt, Completion completion, CancellationToken ct)
    {
        await output.WriteAsync(prompt);
        string? line;
        try
        {
            // WaitAsync: a console read ignores its token, and Ctrl-C must still end the session.
            line = await input.ReadLineAsync(ct).AsTask().WaitAsync(ct);
        }
        catch (OperationCanceledException)
        {
            line = null;
        }
        await output.WriteLineAsync(line ?? "");
        return line;
    }
}
