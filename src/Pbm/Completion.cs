namespace Pbm;

/// <summary>What Tab does to the line: the word starting at <see cref="Start"/> (up to the cursor) becomes
/// <see cref="Replacement"/>; <see cref="Choices"/> lists the candidates when there is more than one.</summary>
internal sealed record Completions(int Start, string Replacement, IReadOnlyList<string> Choices);

/// <summary>Tab completion of command words against the node's command list; pure.</summary>
internal sealed class Completion
{
    /// <summary>Words the shell itself knows, offered even when the node does not list them.</summary>
    public static readonly IReadOnlyList<string> Builtins = ["help", "exit", "quit"];

    private readonly string[][] _commands;

    /// <param name="commands">Commands as the node lists them, e.g. <c>cluster show</c>.</param>
    public Completion(IEnumerable<string> commands) =>
        _commands = commands.Concat(Builtins)
            .Select(c => c.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(words => words.Length > 0)
            .ToArray();

    /// <summary>Completes the last word of <paramref name="text"/> (the line up to the cursor); null when nothing fits.</summary>
    public Completions? Complete(string text)
    {
        // Command words are plain; a quote means an argument is being typed.
        if (text.Contains('"'))
            return null;
        var start = text.Length;
        while (start > 0 && !char.IsWhiteSpace(text[start - 1]))
            start--;
        var word = text[start..];
        var before = text[..start].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)
            .Where(w => w != PbmProgram.JsonFlag)
            .ToArray();

        var matches = _commands
            .Where(c => c.Length > before.Length && c.Take(before.Length).SequenceEqual(before, StringComparer.Ordinal))
            .Select(c => c[before.Length])
            .Where(w => w.StartsWith(word, StringComparison.Ordinal))
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal)
            .ToList();
        return matches.Count switch
        {
            0 => null,
            // The space lets the next word (or the arguments) follow at once.
            1 => new Completions(start, matches[0] + " ", []),
            _ => new Completions(start, CommonPrefix(matches), matches),
        };
    }

    private static string CommonPrefix(List<string> words)
    {
        var length = words[0].Length;
        foreach (var w in words)
        {
            var i = 0;
            while (i < length && i < w.Length && w[i] == words[0][i])
                i++;
            length = i;
        }
        return words[0][..length];
    }
}
