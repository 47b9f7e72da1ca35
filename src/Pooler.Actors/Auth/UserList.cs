using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace Pooler.Actors.Auth;

/// <summary>
/// Users and secrets in PgBouncer's userlist.txt format: one <c>"user" "secret"</c> per line, a doubled
/// quote inside a quoted string stands for one quote, anything after the second field is ignored, and
/// blank lines and lines starting with ';' or '#' are comments. A secret is a plain password, an md5
/// secret or a SCRAM-SHA-256$ verifier. A later line for the same user replaces an earlier one.
/// </summary>
public sealed class UserList
{
    private readonly Dictionary<string, string> _secrets;
    private readonly List<string> _users;

    private UserList(Dictionary<string, string> secrets, List<string> users)
    {
        _secrets = secrets;
        _users = users;
    }

    public int Count => _secrets.Count;

    /// <summary>User names in the order they first appear.</summary>
    public IEnumerable<string> Users => _users.AsReadOnly();

    /// <summary>User names are case-sensitive, as in PostgreSQL.</summary>
    public bool TryGetSecret(string user, [MaybeNullWhen(false)] out string secret) => _secrets.TryGetValue(user, out secret);

    public static UserList Load(string path)
    {
        try
        {
            return Parse(File.ReadAllText(path));
        }
        catch (FormatException ex)
        {
            throw new FormatException($"{path}: {ex.Message}", ex);
        }
    }

    /// <exception cref="FormatException">A line is malformed; the message names the line.</exception>
    public static UserList Parse(string text)
    {
        var secrets = new Dictionary<string, string>(StringComparer.Ordinal);
        var users = new List<string>();
        var lines = text.TrimStart('\uFEFF').Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            if (ParseLine(lines[i].TrimEnd('\r'), i + 1) is not { } entry)
                continue;
            var (user, secret) = entry;
            if (!secrets.ContainsKey(user))
                users.Add(user);
            secrets[user] = secret;
        }
        return new UserList(secrets, users);
    }

    /// <summary>Null for a comment or blank line.</summary>
    private static (string User, string Secret)? ParseLine(string line, int lineNumber)
    {
        var pos = SkipSpace(line, 0);
        if (pos == line.Length || line[pos] == ';' || line[pos] == '#')
            return null;

        var user = ReadQuoted(line, ref pos, lineNumber, "user name");
        if (user.Length == 0)
            throw Error(lineNumber, "empty user name");
        pos = SkipSpace(line, pos);
        var secret = ReadQuoted(line, ref pos, lineNumber, "secret");
        // PostgreSQL would take a broken verifier as a plain password; here it is surely a mistake.
        if (secret.StartsWith("SCRAM-SHA-256$", StringComparison.Ordinal) && !ScramServer.IsScramSecret(secret))
            throw Error(lineNumber, "invalid SCRAM-SHA-256 secret");
        return (user, secret);
    }

    /// <summary>Reads a "..." string at pos, where "" means one quote; leaves pos after the closing quote.</summary>
    private static string ReadQuoted(string line, ref int pos, int lineNumber, string what)
    {
        if (pos >= line.Length || line[pos] != '"')
            throw Error(lineNumber, $"expected a quoted {what}");
        var value = new StringBuilder();
        for (pos++; pos < line.Length; pos++)
        {
            if (line[pos] != '"')
            {
                value.Append(line[pos]);
            }
            else if (pos + 1 < line.Length && line[pos + 1] == '"')
            {
                value.Append('"');
                pos++;
            }
            else
            {
                pos++;
                return value.ToString();
            }
        }
        throw Error(lineNumber, $"unterminated quoted {what}");
    }

    private static int SkipSpace(string line, int pos)
    {
        while (pos < line.Length && (line[pos] == ' ' || line[pos] == '\t'))
            pos++;
        return pos;
    }

    private static FormatException Error(int lineNumber, string reason) => new($"userlist line {lineNumber}: {reason}");
}
