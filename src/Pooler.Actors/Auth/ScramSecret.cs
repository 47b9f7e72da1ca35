using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Pooler.Actors.Auth;

/// <summary>
/// A PostgreSQL SCRAM-SHA-256 verifier: <c>SCRAM-SHA-256$iter:salt$StoredKey:ServerKey</c> (base64 parts).
/// It lets a server check a client without knowing the password.
/// </summary>
internal sealed class ScramSecret
{
    private const string Prefix = Scram.Mechanism + "$";

    public int Iterations { get; }
    public byte[] Salt { get; }
    public byte[] StoredKey { get; }
    public byte[] ServerKey { get; }

    private ScramSecret(int iterations, byte[] salt, byte[] storedKey, byte[] serverKey)
    {
        Iterations = iterations;
        Salt = salt;
        StoredKey = storedKey;
        ServerKey = serverKey;
    }

    public static ScramSecret FromPassword(string password, byte[] salt, int iterations)
    {
        var salted = Scram.SaltedPassword(password, salt, iterations);
        return new ScramSecret(iterations, salt, Scram.StoredKey(Scram.ClientKey(salted)), Scram.ServerKey(salted));
    }

    public static bool TryParse(string text, [NotNullWhen(true)] out ScramSecret? secret)
    {
        secret = null;
        if (!text.StartsWith(Prefix, StringComparison.Ordinal))
            return false;
        var parts = text[Prefix.Length..].Split('$');
        if (parts.Length != 2)
            return false;
        var iterAndSalt = parts[0].Split(':');
        var keys = parts[1].Split(':');
        if (iterAndSalt.Length != 2 || keys.Length != 2)
            return false;
        if (!int.TryParse(iterAndSalt[0], NumberStyles.None, CultureInfo.InvariantCulture, out var iterations) || iterations < 1)
            return false;
        if (!Scram.TryDecodeBase64(iterAndSalt[1], out var salt) || salt.Length == 0)
            return false;
        if (!Scram.TryDecodeBase64(keys[0], out var storedKey) || storedKey.Length != Scram.KeyLength)
            return false;
        if (!Scram.TryDecodeBase64(keys[1], out var serverKey) || serverKey.Length != Scram.KeyLength)
            return false;
        secret = new ScramSecret(iterations, salt, storedKey, serverKey);
        return true;
    }

    public override string ToString() =>
        $"{Prefix}{Iterations.ToString(CultureInfo.InvariantCulture)}:{Convert.ToBase64String(Salt)}" +
        $"${Convert.ToBase64String(StoredKey)}:{Convert.ToBase64String(ServerKey)}";
}
