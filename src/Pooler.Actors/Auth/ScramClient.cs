using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Pooler.Actors.Auth;

/// <summary>
/// Client side of SCRAM-SHA-256 without channel binding, for the pooler logging in to PostgreSQL. Works
/// from a password, or from the ClientKey/ServerKey pair a <see cref="ScramServer"/> recovered from a
/// client (PgBouncer's trick to reuse a SCRAM login without knowing the password).
/// </summary>
public sealed class ScramClient
{
    private const string Gs2Header = "n,,";

    private readonly string? _password;
    private readonly byte[]? _clientKey;
    private readonly byte[]? _serverKey;
    private readonly string _clientFirstBare;
    private readonly string _clientNonce;
    private byte[]? _expectedServerSignature;

    public ScramClient(string password) : this(password, Scram.NewNonce()) { }

    /// <summary>Test hook: fixes the nonce and user name (libpq sends an empty name; RFC 7677's vector does not).</summary>
    internal ScramClient(string password, string clientNonce, string user = "") : this(password, null, null, clientNonce, user) { }

    private ScramClient(string? password, byte[]? clientKey, byte[]? serverKey, string clientNonce, string user)
    {
        _password = password;
        _clientKey = clientKey;
        _serverKey = serverKey;
        _clientNonce = clientNonce;
        _clientFirstBare = $"n={Scram.EscapeSaslName(user)},r={clientNonce}";
    }

    /// <summary>
    /// A client that proves knowledge of the keys instead of the password. The server's salt and
    /// iteration count are not checked: they must be the ones these keys were derived with.
    /// </summary>
    public static ScramClient FromKeys(byte[] clientKey, byte[] serverKey) => FromKeys(clientKey, serverKey, Scram.NewNonce());

    internal static ScramClient FromKeys(byte[] clientKey, byte[] serverKey, string clientNonce)
    {
        if (clientKey.Length != Scram.KeyLength || serverKey.Length != Scram.KeyLength)
            throw new ArgumentException($"SCRAM-SHA-256 keys must be {Scram.KeyLength} bytes.");
        return new ScramClient(null, (byte[])clientKey.Clone(), (byte[])serverKey.Clone(), clientNonce, "");
    }

    public string ClientFirstMessage() => Gs2Header + _clientFirstBare;

    /// <summary>Answers server-first-message "r=...,s=...,i=..." with client-final-message.</summary>
    public string ClientFinalMessage(string serverFirstMessage)
    {
        var parts = serverFirstMessage.Split(',');
        if (parts[0].StartsWith("m=", StringComparison.Ordinal))
            throw Malformed("the server requires an unsupported SCRAM extension");
        if (parts.Length < 3
            || !Scram.TryGetAttribute(parts[0], 'r', out var nonce)
            || !Scram.TryGetAttribute(parts[1], 's', out var saltText)
            || !Scram.TryGetAttribute(parts[2], 'i', out var iterText))
            throw Malformed("expected r=, s= and i= attributes");
        // Strictly longer: a server that adds no nonce of its own would make the proof replayable.
        if (nonce.Length <= _clientNonce.Length || !nonce.StartsWith(_clientNonce, StringComparison.Ordinal) || !Scram.IsPrintable(nonce))
            throw Malformed("the server nonce does not extend the client nonce");
        if (!Scram.TryDecodeBase64(saltText, out var salt) || salt.Length == 0)
            throw Malformed("invalid salt");
        if (!int.TryParse(iterText, NumberStyles.None, CultureInfo.InvariantCulture, out var iterations) || iterations < 1)
            throw Malformed("invalid iteration count");

        byte[] clientKey, serverKey;
        if (_password is not null)
        {
            var salted = Scram.SaltedPassword(_password, salt, iterations);
            clientKey = Scram.ClientKey(salted);
            serverKey = Scram.ServerKey(salted);
        }
        else
        {
            clientKey = _clientKey!;
            serverKey = _serverKey!;
        }

        var withoutProof = $"c={Convert.ToBase64String(Encoding.ASCII.GetBytes(Gs2Header))},r={nonce}";
        var authMessage = $"{_clientFirstBare},{serverFirstMessage},{withoutProof}";
        var clientSignature = Scram.Hmac(Scram.StoredKey(clientKey), authMessage);
        _expectedServerSignature = Scram.Hmac(serverKey, authMessage);
        return $"{withoutProof},p={Convert.ToBase64String(Scram.Xor(clientKey, clientSignature))}";
    }

    /// <summary>True only for "v=" with the expected server signature; "e=..." and garbage are false.</summary>
    public bool VerifyServerFinal(string serverFinalMessage)
    {
        if (_expectedServerSignature is null)
            throw new InvalidOperationException("ClientFinalMessage must be called before VerifyServerFinal.");
        var verifier = serverFinalMessage.Split(',')[0];
        return Scram.TryGetAttribute(verifier, 'v', out var text)
            && Scram.TryDecodeBase64(text, out var signature)
            && CryptographicOperations.FixedTimeEquals(signature, _expectedServerSignature);
    }

    private static InvalidOperationException Malformed(string reason) =>
        new($"Malformed SCRAM server-first-message: {reason}.");
}
