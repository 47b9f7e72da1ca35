using System.Security.Cryptography;
using System.Text;

namespace Pooler.Actors.Auth;

/// <summary>
/// Server side of one SCRAM-SHA-256 exchange (RFC 5802, RFC 7677) without channel binding, as PostgreSQL
/// runs it: the user name in client-first is ignored (the startup packet names the user), and failures are
/// reported to the caller (who sends an ErrorResponse) rather than as a server-final "e=" message.
/// </summary>
/// <remarks>
/// Messages are strings; the caller decodes the SASL payloads as UTF-8. A client user name that is not
/// valid UTF-8 would not survive that round trip, but libpq sends an empty one.
/// </remarks>
public sealed class ScramServer
{
    /// <summary>
    /// The error for a well-formed exchange with a wrong password (PostgreSQL: 28P01); every other error
    /// text describes a protocol violation (08P01).
    /// </summary>
    public const string WrongPasswordError = "password";

    private enum State { AwaitingClientFirst, AwaitingClientFinal, Succeeded, Failed }

    private readonly ScramSecret _secret;
    private readonly string? _fixedServerNonce;
    private State _state = State.AwaitingClientFirst;
    private string _gs2Header = "";
    private string _clientFirstBare = "";
    private string _serverFirst = "";
    private string _nonce = "";

    /// <param name="storedSecret">A SCRAM-SHA-256$ verifier, or a plain password (a verifier with a random
    /// salt is made for this exchange). An md5 secret is refused: it cannot drive SCRAM, and treating it
    /// as a plain password would let anyone holding the hash log in.</param>
    public ScramServer(string storedSecret) : this(storedSecret, null, null) { }

    /// <summary>Test hook: fixes the server nonce and the salt used for a plain password.</summary>
    internal ScramServer(string storedSecret, string? serverNonce, byte[]? plainSalt)
    {
        if (Md5Auth.IsMd5Secret(storedSecret))
            throw new ArgumentException("An MD5 secret cannot be used for SCRAM authentication.", nameof(storedSecret));
        _secret = ScramSecret.TryParse(storedSecret, out var parsed)
            ? parsed
            : ScramSecret.FromPassword(storedSecret, plainSalt ?? RandomNumberGenerator.GetBytes(Scram.DefaultSaltLength),
                Scram.DefaultIterations);
        _fixedServerNonce = serverNonce;
    }

    /// <summary>The client's key, recovered from its proof; set only after a successful exchange.</summary>
    public byte[]? ClientKey { get; private set; }

    public byte[] ServerKey => (byte[])_secret.ServerKey.Clone();
    public byte[] StoredKey => (byte[])_secret.StoredKey.Clone();
    public int Iterations => _secret.Iterations;
    public byte[] Salt => (byte[])_secret.Salt.Clone();

    /// <summary>Makes a PostgreSQL-format verifier. Default salt: 16 random bytes, like PostgreSQL.</summary>
    public static string MakeSecret(string password, byte[]? salt = null, int iterations = Scram.DefaultIterations)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        if (salt is { Length: 0 })
            throw new ArgumentException("The salt must not be empty.", nameof(salt));
        return ScramSecret.FromPassword(password, salt ?? RandomNumberGenerator.GetBytes(Scram.DefaultSaltLength), iterations)
            .ToString();
    }

    public static bool IsScramSecret(string s) => ScramSecret.TryParse(s, out _);

    /// <summary>client-first-message → server-first-message, or null and an error.</summary>
    public string? HandleClientFirst(string clientFirstMessage, out string? error)
    {
        if (_state != State.AwaitingClientFirst)
            return Fail("unexpected SCRAM client-first-message", out error);

        // gs2-header: cbind-flag "," [authzid] ","
        var msg = clientFirstMessage;
        if (msg.StartsWith("p=", StringComparison.Ordinal))
            return Fail("SCRAM channel binding is not supported", out error);
        if (msg.Length < 3 || (msg[0] != 'n' && msg[0] != 'y') || msg[1] != ',')
            return Fail("malformed SCRAM message: bad GS2 header", out error);
        if (msg[2] != ',')
            return Fail(msg[2] == 'a'
                ? "SCRAM authorization identity is not supported"
                : "malformed SCRAM message: bad GS2 header", out error);
        // 'y' (client could bind but thinks we cannot) is fine: we never offer SCRAM-SHA-256-PLUS.
        // If that ever changes, 'y' must be rejected as a downgrade.
        _gs2Header = msg[..3];
        _clientFirstBare = msg[3..];

        var parts = _clientFirstBare.Split(',');
        if (parts[0].StartsWith("m=", StringComparison.Ordinal))
            return Fail("SCRAM mandatory extensions are not supported", out error);
        if (parts.Length < 2 || !Scram.TryGetAttribute(parts[0], 'n', out _))
            return Fail("malformed SCRAM message: expected user name attribute", out error);
        if (!Scram.TryGetAttribute(parts[1], 'r', out var clientNonce) || clientNonce.Length == 0 || !Scram.IsPrintable(clientNonce))
            return Fail("malformed SCRAM message: expected nonce attribute", out error);
        // Any further parts are optional extensions, which we ignore as PostgreSQL does.

        _nonce = clientNonce + (_fixedServerNonce ?? Scram.NewNonce());
        _serverFirst = $"r={_nonce},s={Convert.ToBase64String(_secret.Salt)},i={_secret.Iterations}";
        _state = State.AwaitingClientFinal;
        error = null;
        return _serverFirst;
    }

    /// <summary>client-final-message → server-final-message "v=...", or null and an error.</summary>
    public string? HandleClientFinal(string clientFinalMessage, out string? error)
    {
        if (_state != State.AwaitingClientFinal)
            return Fail("unexpected SCRAM client-final-message", out error);

        // The proof must be the last attribute; everything before it is signed.
        var msg = clientFinalMessage;
        var lastComma = msg.LastIndexOf(',');
        if (lastComma < 0 || !Scram.TryGetAttribute(msg[(lastComma + 1)..], 'p', out var proofText))
            return Fail("malformed SCRAM message: expected proof attribute at the end", out error);
        var withoutProof = msg[..lastComma];
        var parts = withoutProof.Split(',');
        if (!Scram.TryGetAttribute(parts[0], 'c', out var binding))
            return Fail("malformed SCRAM message: expected channel binding attribute", out error);
        if (binding != Convert.ToBase64String(Encoding.ASCII.GetBytes(_gs2Header)))
            return Fail("SCRAM channel binding check failed", out error);
        if (parts.Length < 2 || !Scram.TryGetAttribute(parts[1], 'r', out var nonce))
            return Fail("malformed SCRAM message: expected nonce attribute", out error);
        if (nonce != _nonce)
            return Fail("SCRAM nonce mismatch", out error);
        if (!Scram.TryDecodeBase64(proofText, out var proof) || proof.Length != Scram.KeyLength)
            return Fail("malformed SCRAM message: bad proof", out error);

        var authMessage = $"{_clientFirstBare},{_serverFirst},{withoutProof}";
        var clientKey = Scram.Xor(proof, Scram.Hmac(_secret.StoredKey, authMessage));
        if (!CryptographicOperations.FixedTimeEquals(Scram.StoredKey(clientKey), _secret.StoredKey))
            return Fail(WrongPasswordError, out error);

        ClientKey = clientKey;
        _state = State.Succeeded;
        error = null;
        return "v=" + Convert.ToBase64String(Scram.Hmac(_secret.ServerKey, authMessage));
    }

    /// <summary>Any failure ends the exchange; later messages are refused.</summary>
    private string? Fail(string message, out string? error)
    {
        _state = State.Failed;
        error = message;
        return null;
    }
}
