using System.Security.Cryptography;
using System.Text;

namespace Pooler.Actors.Auth;

/// <summary>
/// PostgreSQL's MD5 password scheme. The stored secret is "md5" + hex(md5(password + user)); on the wire
/// the client answers AuthenticationMD5Password(salt) with "md5" + hex(md5(hex-of-secret + salt)).
/// </summary>
public static class Md5Auth
{
    private const string Prefix = "md5";
    private const int HexLength = 32;

    /// <summary>True for "md5" followed by exactly 32 lowercase hex digits (PostgreSQL's own test).</summary>
    public static bool IsMd5Secret(string s)
    {
        if (s.Length != Prefix.Length + HexLength || !s.StartsWith(Prefix, StringComparison.Ordinal))
            return false;
        foreach (var c in s.AsSpan(Prefix.Length))
            if (!char.IsAsciiHexDigitLower(c)) // 0-9a-f
                return false;
        return true;
    }

    /// <summary>The secret PostgreSQL stores for this password and user.</summary>
    public static string Hash(string password, string user) =>
        Prefix + Convert.ToHexStringLower(MD5.HashData(Encoding.UTF8.GetBytes(password + user)));

    /// <summary>
    /// The client's reply to AuthenticationMD5Password. An md5 secret is used as is, which is how a pooler
    /// logs in to a backend knowing only the stored hash.
    /// </summary>
    public static string Response(string passwordOrMd5Secret, string user, ReadOnlySpan<byte> salt)
    {
        var secret = IsMd5Secret(passwordOrMd5Secret) ? passwordOrMd5Secret : Hash(passwordOrMd5Secret, user);
        var input = new byte[HexLength + salt.Length];
        Encoding.ASCII.GetBytes(secret.AsSpan(Prefix.Length), input);
        salt.CopyTo(input.AsSpan(HexLength));
        return Prefix + Convert.ToHexStringLower(MD5.HashData(input));
    }

    /// <summary>
    /// Server side: checks a client's response against a plain or md5 stored secret. A SCRAM secret cannot
    /// be turned into the MD5 hash, so it never verifies.
    /// </summary>
    public static bool Verify(string storedSecret, string user, ReadOnlySpan<byte> salt, string clientResponse)
    {
        if (ScramServer.IsScramSecret(storedSecret))
            return false;
        var expected = Encoding.UTF8.GetBytes(Response(storedSecret, user, salt));
        // Constant time so response timing does not leak how many leading characters matched.
        return CryptographicOperations.FixedTimeEquals(expected, Encoding.UTF8.GetBytes(clientResponse));
    }
}
