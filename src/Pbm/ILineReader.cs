namespace Pbm;

/// <summary>Reads the interactive session's lines.</summary>
internal interface ILineReader
{
    /// <summary>Shows <paramref name="prompt"/> and returns the next line; null at the end of input.</summary>
    Task<string?> ReadLineAsync(string prompt, Completion completion, CancellationToken ct);
}
