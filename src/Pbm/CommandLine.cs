using System.Text;

namespace Pbm;

/// <summary>Splits an interactive line into command words the way a shell would, for double quotes only.</summary>
internal static class CommandLine
{
    /// <summary>
    /// Words are separated by white space; double quotes group a word (<c>"my db"</c>), may sit inside one
    /// (<c>a"b c"</c> is <c>ab c</c>), and inside them <c>\"</c> and <c>\\</c> stand for <c>"</c> and <c>\</c>.
    /// Other backslashes are kept, so Windows paths need no doubling.
    /// </summary>
    /// <exception cref="FormatException">A quote is left open.</exception>
    public static List<string> Split(string line)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        var inWord = false;
        var quoted = false;
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            if (quoted)
            {
                if (c == '\\' && i + 1 < line.Length && line[i + 1] is '"' or '\\')
                    word.Append(line[++i]);
                else if (c == '"')
                    quoted = false;
                else
                    word.Append(c);
            }
            else if (c == '"')
            {
                quoted = true;
                inWord = true;
            }
            else if (char.IsWhiteSpace(c))
            {
                if (inWord)
                    words.Add(word.ToString());
                word.Clear();
                inWord = false;
            }
            else
            {
                word.Append(c);
                inWord = true;
            }
        }
        if (quoted)
            throw new FormatException("unterminated quote");
        if (inWord)
            words.Add(word.ToString());
        return words;
    }
}
