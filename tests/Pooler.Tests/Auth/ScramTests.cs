using System.Security.Cryptography;
using System.Text;
using Pooler.Actors.Auth;
using Xunit;

namespace Pooler.Tests.Auth;

public class ScramTests
{
    // RFC 7677 section 3.
    private const string RfcClientNonce = "rOprNGfwEbeRWgbNEkqO";
    private const string RfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    private const string RfcSalt = "W22ZaJ0SNY7soEsUEjb6gQ==";
    private const string RfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    private const string RfcServerFirst =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    private const string RfcClientFinal =
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    private const string RfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    // Computed independently with python3 hashlib.pbkdf2_hmac("sha256", ...) and hmac, see each test.
    private const string PencilSecret =
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    private const string PencilClientKeyHex = "a60fc923d67e8644a92d16b96eda5ef4656b0c725c484374be25535576996e8b";
    private const string PencilServerKeyHex = "c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5";

    private static byte[] RfcSaltBytes => Convert.FromBase64String(RfcSalt);

    // ---- RFC 7677 vector ----

    [Fact]
    public void Client_reproduces_rfc7677_vector()
    {
        var client = new ScramClient("pencil", RfcClientNonce, "user");
        Assert.Equal(RfcClientFirst, client.ClientFirstMessage());
        Assert.Equal(RfcClientFinal, client.ClientFinalMessage(RfcServerFirst));
        Assert.True(client.VerifyServerFinal(RfcServerFinal));
    }

    [Theory]
    [InlineData(PencilSecret)]
    [InlineData("pencil")]
    public void Server_reproduces_rfc7677_vector(string storedSecret)
    {
        var server = new ScramServer(storedSecret, RfcServerNonce, RfcSaltBytes);

        Assert.Equal(RfcServerFirst, server.HandleClientFirst(RfcClientFirst, out var error1));
        Assert.Null(error1);
        Assert.Equal(RfcServerFinal, server.HandleClientFinal(RfcClientFinal, out var error2));
        Assert.Null(error2);
        Assert.Equal(PencilClientKeyHex, Convert.ToHexStringLower(server.ClientKey!));
        Assert.Equal(PencilServerKeyHex, Convert.ToHexStringLower(server.ServerKey));
        Assert.Equal(SHA256.HashData(Convert.FromHexString(PencilClientKeyHex)), server.StoredKey);
        Assert.Equal(4096, server.Iterations);
        Assert.Equal(RfcSaltBytes, server.Salt);
    }

    // ---- secrets ----

    [Fact]
    public void MakeSecret_matches_independent_computation()
    {
        // python3: sp = pbkdf2_hmac("sha256", b"pencil", salt, 4096); ck = hmac(sp, b"Client Key");
        // sk = hmac(sp, b"Server Key"); "SCRAM-SHA-256$4096:" + b64(salt) + "$" + b64(sha256(ck)) + ":" + b64(sk)
        Assert.Equal(PencilSecret, ScramServer.MakeSecret("pencil", RfcSaltBytes, 4096));
        Assert.Equal(
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U=:7YiHMMi2OcXGRogub03Ek06JRZ9bkhTOdCzHa5iPLiQ=",
            ScramServer.MakeSecret("secret", Enumerable.Range(0, 16).Select(i => (byte)i).ToArray()));
    }

    [Fact]
    public void MakeSecret_uses_utf8_bytes_for_non_ascii()
    {
        // "p\u00e4ss" is already NFC with nothing to map, so PostgreSQL's SASLprep leaves it as these bytes too.
        Assert.Equal(
            "SCRAM-SHA-256$1000:MDEyMzQ1Njc4OWFiY2RlZg==$CsOa8ngphKWy22A1XLDCiR+N2VNuLn7inn2f/8cKty4=:r3seff/iitT0KdfhucWiKpqS1+ICXM+XaRvTKFLTzkw=",
            ScramServer.MakeSecret("p\u00e4ss", "0123456789abcdef"u8.ToArray(), 1000));
    }

    [Fact]
    public void MakeSecret_defaults_to_random_16_byte_salt_and_4096_iterations()
    {
        var a = ScramServer.MakeSecret("pw");
        var b = ScramServer.MakeSecret("pw");
        Assert.NotEqual(a, b);
        Assert.StartsWith("SCRAM-SHA-256$4096:", a);
        var server = new ScramServer(a);
        Assert.Equal(16, server.Salt.Length);
        Assert.Equal(4096, server.Iterations);
    }

    [Theory]
    [InlineData(PencilSecret, true)]
    [InlineData("pencil", false)]
    [InlineData("md520eb1b22a92b5c573dc1eb4331fc49ee", false)]
    [InlineData("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=", false)]
    [InlineData("SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", false)]
    [InlineData("SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", false)]
    [InlineData("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", false)]
    [InlineData("SCRAM-SHA-256$4096:!!!$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", false)]
    public void IsScramSecret(string s, bool expected) => Assert.Equal(expected, ScramServer.IsScramSecret(s));

    [Fact]
    public void Server_refuses_an_md5_secret()
    {
        Assert.Throws<ArgumentException>(() => new ScramServer(Md5Auth.Hash("pw", "user")));
    }

    // ---- client against server ----

    private static (bool Ok, string? Error) Run(ScramClient client, ScramServer server)
    {
        var serverFirst = server.HandleClientFirst(client.ClientFirstMessage(), out var error);
        Assert.NotNull(serverFirst);
        Assert.Null(error);
        var serverFinal = server.HandleClientFinal(client.ClientFinalMessage(serverFirst), out error);
        if (serverFinal is null)
            return (false, error);
        Assert.True(client.VerifyServerFinal(serverFinal));
        return (true, null);
    }

    [Theory]
    [InlineData("plain")]
    [InlineData("secret")]
    public void Round_trip_succeeds(string kind)
    {
        const string password = "correct horse";
        var stored = kind == "plain" ? password : ScramServer.MakeSecret(password);
        var server = new ScramServer(stored);
        Assert.Equal((true, null), Run(new ScramClient(password), server));
        Assert.NotNull(server.ClientKey);
    }

    [Theory]
    [InlineData("plain")]
    [InlineData("secret")]
    public void Wrong_password_fails_with_password_error(string kind)
    {
        var stored = kind == "plain" ? "right" : ScramServer.MakeSecret("right");
        var server = new ScramServer(stored);
        Assert.Equal((false, ScramServer.WrongPasswordError), Run(new ScramClient("wrong"), server));
        Assert.Equal("password", ScramServer.WrongPasswordError);
        Assert.Null(server.ClientKey);
    }

    [Fact]
    public void Recovered_client_key_is_the_real_one_and_logs_in_elsewhere()
    {
        const string password = "s3cret";
        var secret = ScramServer.MakeSecret(password);
        var front = new ScramServer(secret);
        Assert.True(Run(new ScramClient(password), front).Ok);

        // Independent derivation of the real ClientKey from the password.
        var salted = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), front.Salt, front.Iterations,
            HashAlgorithmName.SHA256, 32);
        Assert.Equal(HMACSHA256.HashData(salted, "Client Key"u8), front.ClientKey);
        Assert.Equal(HMACSHA256.HashData(salted, "Server Key"u8), front.ServerKey);

        // A "backend" with the same verifier accepts the recovered keys, server signature included.
        var backend = new ScramServer(secret);
        Assert.Equal((true, null), Run(ScramClient.FromKeys(front.ClientKey!, front.ServerKey), backend));

        // A verifier for the same password but another salt has other keys.
        var otherSalt = new ScramServer(ScramServer.MakeSecret(password));
        Assert.Equal((false, ScramServer.WrongPasswordError), Run(ScramClient.FromKeys(front.ClientKey!, front.ServerKey), otherSalt));
    }

    [Fact]
    public void FromKeys_reproduces_rfc7677_vector()
    {
        var client = ScramClient.FromKeys(Convert.FromHexString(PencilClientKeyHex), Convert.FromHexString(PencilServerKeyHex),
            RfcClientNonce);
        var final = client.ClientFinalMessage(RfcServerFirst.Replace("n=user,", ""));
        Assert.StartsWith("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=", final);
        Assert.Equal("n,,n=,r=" + RfcClientNonce, client.ClientFirstMessage());
    }

    [Fact]
    public void FromKeys_rejects_wrong_key_length()
    {
        Assert.Throws<ArgumentException>(() => ScramClient.FromKeys(new byte[31], new byte[32]));
    }

    // ---- client details ----

    [Fact]
    public void Client_first_message_has_empty_user_like_libpq()
    {
        var first = new ScramClient("pw").ClientFirstMessage();
        Assert.StartsWith("n,,n=,r=", first);
        Assert.Equal(24, first.Length - "n,,n=,r=".Length);
    }

    [Theory]
    [InlineData("r=someoneElse123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce")]
    [InlineData("r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce")]
    [InlineData("r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==", "r=, s= and i=")]
    [InlineData("s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOxyz,i=4096", "r=, s= and i=")]
    [InlineData("r=rOprNGfwEbeRWgbNEkqOxyz,s=***,i=4096", "salt")]
    [InlineData("r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0", "iteration")]
    [InlineData("r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1", "iteration")]
    [InlineData("m=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "extension")]
    [InlineData("", "r=, s= and i=")]
    public void Client_rejects_malformed_server_first(string serverFirst, string reason)
    {
        var client = new ScramClient("pencil", RfcClientNonce, "user");
        var ex = Assert.Throws<InvalidOperationException>(() => client.ClientFinalMessage(serverFirst));
        Assert.Contains("server-first-message", ex.Message);
        Assert.Contains(reason, ex.Message);
    }

    [Theory]
    [InlineData("e=invalid-proof")]
    [InlineData("v=AAAA")]
    [InlineData("v=not base64")]
    [InlineData("")]
    [InlineData("x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")]
    public void Client_rejects_bad_server_final(string serverFinal)
    {
        var client = new ScramClient("pencil", RfcClientNonce, "user");
        client.ClientFinalMessage(RfcServerFirst);
        Assert.False(client.VerifyServerFinal(serverFinal));
    }

    [Fact]
    public void Client_accepts_server_final_with_extensions()
    {
        var client = new ScramClient("pencil", RfcClientNonce, "user");
        client.ClientFinalMessage(RfcServerFirst);
        Assert.True(client.VerifyServerFinal(RfcServerFinal + ",x=ext"));
    }

    [Fact]
    public void Client_escapes_user_name()
    {
        Assert.Equal("n,,n=a=3Db=2Cc,r=abc", new ScramClient("pw", "abc", "a=b,c").ClientFirstMessage());
    }

    // ---- server details ----

    private static ScramServer RfcServer() => new(PencilSecret, RfcServerNonce, null);

    [Fact]
    public void Server_ignores_the_user_name()
    {
        var server = RfcServer();
        var first = server.HandleClientFirst("n,,n=somebody-else,r=" + RfcClientNonce, out _);
        Assert.NotNull(first);
        var client = new ScramClient("pencil", RfcClientNonce, "somebody-else");
        Assert.NotNull(server.HandleClientFinal(client.ClientFinalMessage(first), out var error));
        Assert.Null(error);
    }

    [Fact]
    public void Server_accepts_y_header_with_matching_binding()
    {
        // With "y,," the channel binding attribute is base64("y,,") = "eSws"; compute the proof by hand.
        var server = RfcServer();
        var first = server.HandleClientFirst("y,,n=,r=abc", out _)!;
        var withoutProof = "c=eSws,r=abc" + RfcServerNonce;
        var authMessage = Encoding.UTF8.GetBytes($"n=,r=abc,{first},{withoutProof}");
        var clientKey = Convert.FromHexString(PencilClientKeyHex);
        var signature = HMACSHA256.HashData(SHA256.HashData(clientKey), authMessage);
        var proof = clientKey.Zip(signature, (a, b) => (byte)(a ^ b)).ToArray();

        var final = server.HandleClientFinal($"{withoutProof},p={Convert.ToBase64String(proof)}", out var error);
        Assert.Null(error);
        var expected = HMACSHA256.HashData(Convert.FromHexString(PencilServerKeyHex), authMessage);
        Assert.Equal("v=" + Convert.ToBase64String(expected), final);
    }

    [Theory]
    [InlineData("p=tls-server-end-point,,n=,r=abc", "channel binding is not supported")]
    [InlineData("n,a=admin,n=,r=abc", "authorization identity")]
    [InlineData("x,,n=,r=abc", "GS2 header")]
    [InlineData("n,", "GS2 header")]
    [InlineData("", "GS2 header")]
    [InlineData("n,,m=ext,n=,r=abc", "extensions")]
    [InlineData("n,,r=abc", "user name")]
    [InlineData("n,,n=", "user name")]
    [InlineData("n,,n=,x=abc", "nonce")]
    [InlineData("n,,n=,r=", "nonce")]
    [InlineData("n,,n=,r=a b", "nonce")]
    public void Server_rejects_bad_client_first(string clientFirst, string reason)
    {
        var server = RfcServer();
        Assert.Null(server.HandleClientFirst(clientFirst, out var error));
        Assert.NotNull(error);
        Assert.Contains(reason, error);
        Assert.NotEqual(ScramServer.WrongPasswordError, error);
    }

    [Fact]
    public void Server_accepts_client_first_extensions()
    {
        Assert.NotNull(RfcServer().HandleClientFirst(RfcClientFirst + ",x=whatever", out var error));
        Assert.Null(error);
    }

    [Theory]
    [InlineData("c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "channel binding")]
    [InlineData("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "channel binding")]
    [InlineData("c=biws,r=rOprNGfwEbeRWgbNEkqOXXXX,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "nonce mismatch")]
    [InlineData("c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "nonce")]
    [InlineData("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "proof")]
    [InlineData("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA", "proof")]
    [InlineData("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1", "proof")]
    [InlineData("", "proof")]
    public void Server_rejects_bad_client_final(string clientFinal, string reason)
    {
        var server = RfcServer();
        Assert.NotNull(server.HandleClientFirst(RfcClientFirst, out _));
        Assert.Null(server.HandleClientFinal(clientFinal, out var error));
        Assert.NotNull(error);
        Assert.Contains(reason, error);
        Assert.Null(server.ClientKey);
    }

    [Fact]
    public void Server_detects_a_tampered_proof_as_wrong_password()
    {
        var server = RfcServer();
        server.HandleClientFirst(RfcClientFirst, out _);
        var tampered = RfcClientFinal.Replace("p=dHzb", "p=dHzc");
        Assert.Null(server.HandleClientFinal(tampered, out var error));
        Assert.Equal(ScramServer.WrongPasswordError, error);
    }

    [Fact]
    public void Server_accepts_client_final_extensions_before_the_proof()
    {
        // Extensions are signed, so the proof changes; the vector's proof must then fail on the password.
        var server = RfcServer();
        server.HandleClientFirst(RfcClientFirst, out _);
        var withExt = RfcClientFinal.Replace(",p=", ",x=1,p=");
        Assert.Null(server.HandleClientFinal(withExt, out var error));
        Assert.Equal(ScramServer.WrongPasswordError, error);
    }

    [Fact]
    public void Server_enforces_message_order()
    {
        var server = RfcServer();
        Assert.Null(server.HandleClientFinal(RfcClientFinal, out var error));
        Assert.Contains("unexpected", error);
        // Once failed, the exchange stays failed.
        Assert.Null(server.HandleClientFirst(RfcClientFirst, out error));
        Assert.Contains("unexpected", error);

        var done = RfcServer();
        done.HandleClientFirst(RfcClientFirst, out _);
        Assert.NotNull(done.HandleClientFinal(RfcClientFinal, out _));
        Assert.Null(done.HandleClientFinal(RfcClientFinal, out error));
        Assert.Contains("unexpected", error);
        Assert.NotNull(done.ClientKey); // a stray message afterwards does not undo the success
    }
}
