using System.Security.Cryptography;
using System.Text;

namespace Pooler.Actors.Auth;

/// <summary>SCRAM-SHA-256 primitives (RFC 5802 section 3, RFC 7677) and message-attribute helpers.</summary>
internal static class Scram
{
    public const string Mechanism = "SCRAM-SHA-256";
    public const int KeyLength = 32;
    public const int DefaultIterations = 4096;
    public const int DefaultSaltLength = 16;

    /// <summary>Same raw nonce size as PostgreSQL and libpq (18 bytes, 24 base64 characters).</summary>
    private const int RawNonceLength = 18;

    public static byte[] SaltedPassword(string password, byte[] salt, int iterations) =>
        Rfc2898DeriveBytes.Pbkdf2(SaslPrep.Normalize(password), salt, iterations, HashAlgorithmName.SHA256, KeyLength);

    public static byte[] Hmac(byte[] key, string text) => HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(text));

    public static byte[] ClientKey(byte[] saltedPassword) => Hmac(saltedPassword, "Client Key");

    public static byte[] ServerKey(byte[] saltedPassword) => Hmac(saltedPassword, "Server Key");

    public static byte[] StoredKey(byte[] clientKey) => SHA256.HashData(clientKey);

    public static byte[] Xor(byte[] a, byte[] b)
    {
        var result = new byte[a.Length];
        for (var i = 0; i < a.Length; i++)
            result[i] = (byte)(a[i] ^ b[i]);
        return result;
    }

    public static string NewNonce() => Convert.ToBase64String(RandomNumberGenerator.GetBytes(RawNonceLength));

    /// <summary>RFC 5802 "printable": %x21-2B / %x2D-7E, i.e. visible ASCII except ','.</summary>
    public static bool IsPrintable(string s)
    {
        foreach (var c in s)
            if (c < 0x21 || c > 0x7E || c == ',')
                return false;
        return true;
    }

    /// <summary>Reads "x=value" for the expected attribute letter.</summary>
    public static bool TryGetAttribute(string part, char name, out string value)
    {
        if (part.Length >= 2 && part[0] == name && part[1] == '=')
        {
            value = part[2..];
            return true;
        }
        value = "";
        return false;
    }

    public static bool TryDecodeBase64(string text, out byte[] bytes)
    {
        var buffer = new byte[text.Length * 3 / 4];
        if (Convert.TryFromBase64String(text, buffer, out var written))
        {
            bytes = buffer[..written];
            return true;
        }
        bytes = [];
        return false;
    }

    /// <summary>RFC 5802 saslname: ',' and '=' must be escaped as =2C and =3D.</summary>
    public static string EscapeSaslName(string name) => name.Replace("=", "=3D").Replace(",", "=2C");
}
