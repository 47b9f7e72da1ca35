using System.Security.Cryptography;
using System.Text;

namespace Pooler.Tests.Infrastructure;

/// <summary>
/// A PgBouncer-format users file (<c>"user" "secret"</c> per line) in its own scratch folder, deleted on dispose.
/// A secret is a plain password, <c>md5</c> + md5(password + user) (<see cref="Md5Secret"/>) or a SCRAM
/// verifier (<see cref="ScramSecret"/>).
/// </summary>
public sealed class UsersFile : IDisposable
{
    private readonly TestDirectory _dir;

    /// <summary>Full path of the file.</summary>
    public string Path { get; }

    /// <summary>The folder holding it (other files for the same test can go there too).</summary>
    public string Directory => _dir.Path;

    private UsersFile(TestDirectory dir, string path)
    {
        _dir = dir;
        Path = path;
    }

    /// <summary>
    /// Writes the entries to <c>{folder}/{fileName}</c>. With <paramref name="forServiceUser"/> the folder belongs to the
    /// postgres OS user when root (needed when PgBouncer reads it).
    /// </summary>
    public static UsersFile Create(IEnumerable<KeyValuePair<string, string>> entries, string fileName = "userlist.txt", bool forServiceUser = false)
    {
        var dir = TestDirectory.Create("users", forServiceUser);
        var file = new UsersFile(dir, System.IO.Path.Combine(dir.Path, fileName));
        file.Rewrite(entries);
        if (forServiceUser) ProcessRunner.GiveToServiceUser(file.Path);
        return file;
    }

    /// <inheritdoc cref="Create(IEnumerable{KeyValuePair{string, string}}, string, bool)"/>
    public static UsersFile Create(params (string User, string Secret)[] entries) =>
        Create(entries.Select(e => new KeyValuePair<string, string>(e.User, e.Secret)));

    /// <summary>Replaces the content atomically (write to a temp file, then rename), e.g. before a reload.</summary>
    public void Rewrite(IEnumerable<KeyValuePair<string, string>> entries)
    {
        var tmp = Path + ".tmp";
        File.WriteAllText(tmp, Format(entries));
        File.Move(tmp, Path, overwrite: true);
    }

    /// <summary>The file content for these entries.</summary>
    public static string Format(IEnumerable<KeyValuePair<string, string>> entries)
    {
        var sb = new StringBuilder();
        foreach (var (user, secret) in entries)
            sb.Append(QuoteField(user)).Append(' ').Append(QuoteField(secret)).Append('\n');
        return sb.ToString();
    }

    private static string QuoteField(string s) => "\"" + s.Replace("\"", "\"\"") + "\"";

    /// <summary>PostgreSQL/PgBouncer md5 secret: "md5" + hex(md5(password + user)).</summary>
    public static string Md5Secret(string user, string password) =>
        "md5" + Convert.ToHexStringLower(MD5.HashData(Encoding.UTF8.GetBytes(password + user)));

    /// <summary>
    /// SCRAM-SHA-256 verifier as PostgreSQL stores it: <c>SCRAM-SHA-256$iter:salt$StoredKey:ServerKey</c>
    /// (base64 parts). ASCII passwords only (no SASLprep).
    /// </summary>
    public static string ScramSecret(string password, byte[]? salt = null, int iterations = 4096)
    {
        salt ??= RandomNumberGenerator.GetBytes(16);
        var salted = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, iterations, HashAlgorithmName.SHA256, 32);
        var clientKey = HMACSHA256.HashData(salted, Encoding.ASCII.GetBytes("Client Key"));
        var storedKey = SHA256.HashData(clientKey);
        var serverKey = HMACSHA256.HashData(salted, Encoding.ASCII.GetBytes("Server Key"));
        return $"SCRAM-SHA-256${iterations}:{Convert.ToBase64String(salt)}${Convert.ToBase64String(storedKey)}:{Convert.ToBase64String(serverKey)}";
    }

    public void Dispose() => _dir.Dispose();
}
