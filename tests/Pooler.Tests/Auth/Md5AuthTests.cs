using System.Security.Cryptography;
using System.Text;
using Pooler.Actors.Auth;
using Xunit;

namespace Pooler.Tests.Auth;

public class Md5AuthTests
{
    private static readonly byte[] Salt = [1, 2, 3, 4];

    [Fact]
    public void Hash_is_md5_of_password_then_user()
    {
        // `echo -n secretuser | md5sum`
        Assert.Equal("md520eb1b22a92b5c573dc1eb4331fc49ee", Md5Auth.Hash("secret", "user"));
        var independent = "md5" + Convert.ToHexStringLower(MD5.HashData("secretuser"u8.ToArray()));
        Assert.Equal(independent, Md5Auth.Hash("secret", "user"));
    }

    [Fact]
    public void Response_matches_independent_value()
    {
        // python3: md5(b"20eb1b22a92b5c573dc1eb4331fc49ee" + bytes([1,2,3,4])).hexdigest()
        const string expected = "md5fccef98e4f1cf6cbe96b743fad4e8bd0";
        Assert.Equal(expected, Md5Auth.Response("secret", "user", Salt));
        var inner = Encoding.ASCII.GetBytes("20eb1b22a92b5c573dc1eb4331fc49ee").Concat(Salt).ToArray();
        Assert.Equal(expected, "md5" + Convert.ToHexStringLower(MD5.HashData(inner)));
    }

    [Fact]
    public void Response_uses_an_md5_secret_directly()
    {
        var secret = Md5Auth.Hash("secret", "user");
        Assert.Equal(Md5Auth.Response("secret", "user", Salt), Md5Auth.Response(secret, "user", Salt));
    }

    [Fact]
    public void Verify_round_trip_with_plain_and_md5_secrets()
    {
        var response = Md5Auth.Response("secret", "user", Salt);
        Assert.True(Md5Auth.Verify("secret", "user", Salt, response));
        Assert.True(Md5Auth.Verify(Md5Auth.Hash("secret", "user"), "user", Salt, response));
    }

    [Fact]
    public void Verify_rejects_wrong_password_salt_user_and_garbage()
    {
        var response = Md5Auth.Response("secret", "user", Salt);
        Assert.False(Md5Auth.Verify("other", "user", Salt, response));
        Assert.False(Md5Auth.Verify("secret", "user", [1, 2, 3, 5], response));
        Assert.False(Md5Auth.Verify("secret", "someone", Salt, response));
        Assert.False(Md5Auth.Verify("secret", "user", Salt, ""));
        Assert.False(Md5Auth.Verify("secret", "user", Salt, response.ToUpperInvariant()));
    }

    [Fact]
    public void Verify_is_false_for_a_scram_secret()
    {
        var scram = ScramServer.MakeSecret("secret");
        Assert.False(Md5Auth.Verify(scram, "user", Salt, Md5Auth.Response("secret", "user", Salt)));
        Assert.False(Md5Auth.Verify(scram, "user", Salt, Md5Auth.Response(scram, "user", Salt)));
    }

    [Theory]
    [InlineData("md520eb1b22a92b5c573dc1eb4331fc49ee", true)]
    [InlineData("md520EB1B22A92B5C573DC1EB4331FC49EE", false)] // PostgreSQL only accepts lowercase
    [InlineData("md520eb1b22a92b5c573dc1eb4331fc49e", false)]
    [InlineData("md520eb1b22a92b5c573dc1eb4331fc49eg", false)]
    [InlineData("xx520eb1b22a92b5c573dc1eb4331fc49ee", false)]
    [InlineData("secret", false)]
    public void IsMd5Secret(string s, bool expected) => Assert.Equal(expected, Md5Auth.IsMd5Secret(s));
}
