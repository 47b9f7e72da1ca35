using Pooler.Actors.Auth;
using Xunit;

namespace Pooler.Tests.Auth;

public class UserListTests
{
    private const string Scram =
        "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U=:7YiHMMi2OcXGRogub03Ek06JRZ9bkhTOdCzHa5iPLiQ=";

    private const string Sample =
        "; PgBouncer-style comment\r\n" +
        "# another comment\n" +
        "\n" +
        "   \t\n" +
        "\"alice\" \"plain pw\"\n" +
        "\"bob\"\t\"md520eb1b22a92b5c573dc1eb4331fc49ee\" \"extra\" ignored\n" +
        "  \"car\"\"ol\" \"pa\"\"ss\"\"\"\r\n" +
        "\"dave\" \"" + Scram + "\"\n" +
        "\"empty\" \"\"";

    [Fact]
    public void Parses_all_secret_kinds_comments_and_quotes()
    {
        var list = UserList.Parse(Sample);

        Assert.Equal(5, list.Count);
        Assert.Equal(["alice", "bob", "car\"ol", "dave", "empty"], list.Users);
        Assert.True(list.TryGetSecret("alice", out var alice));
        Assert.Equal("plain pw", alice);
        Assert.True(list.TryGetSecret("bob", out var bob));
        Assert.Equal("md520eb1b22a92b5c573dc1eb4331fc49ee", bob);
        Assert.True(Md5Auth.IsMd5Secret(bob));
        Assert.True(list.TryGetSecret("car\"ol", out var carol));
        Assert.Equal("pa\"ss\"", carol);
        Assert.True(list.TryGetSecret("dave", out var dave));
        Assert.Equal(Scram, dave);
        Assert.True(ScramServer.IsScramSecret(dave));
        Assert.True(list.TryGetSecret("empty", out var empty));
        Assert.Equal("", empty);
    }

    [Fact]
    public void Unknown_and_differently_cased_users_are_absent()
    {
        var list = UserList.Parse(Sample);
        Assert.False(list.TryGetSecret("nobody", out _));
        Assert.False(list.TryGetSecret("Alice", out _));
    }

    [Fact]
    public void Later_line_replaces_earlier_and_keeps_first_position()
    {
        var list = UserList.Parse("\"a\" \"1\"\n\"b\" \"2\"\n\"a\" \"3\"\n");
        Assert.Equal(2, list.Count);
        Assert.Equal(["a", "b"], list.Users);
        Assert.True(list.TryGetSecret("a", out var secret));
        Assert.Equal("3", secret);
    }

    [Fact]
    public void Empty_text_is_an_empty_list()
    {
        var list = UserList.Parse("");
        Assert.Equal(0, list.Count);
        Assert.Empty(list.Users);
    }

    [Theory]
    [InlineData("eve \"secret\"", "expected a quoted user name")]
    [InlineData("\"eve\" secret", "expected a quoted secret")]
    [InlineData("\"eve\"", "expected a quoted secret")]
    [InlineData("\"eve\" \"secret", "unterminated quoted secret")]
    [InlineData("\"eve secret", "unterminated quoted user name")]
    [InlineData("\"\" \"secret\"", "empty user name")]
    [InlineData("\"eve\" \"SCRAM-SHA-256$4096:abc\"", "invalid SCRAM-SHA-256 secret")]
    public void Malformed_line_reports_its_number(string badLine, string reason)
    {
        var text = "# header\n\"ok\" \"pw\"\n" + badLine + "\n\"later\" \"pw\"\n";
        var ex = Assert.Throws<FormatException>(() => UserList.Parse(text));
        Assert.Equal($"userlist line 3: {reason}", ex.Message);
    }

    [Fact]
    public void Load_reads_a_file_and_names_it_in_errors()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, Sample);
            Assert.Equal(5, UserList.Load(path).Count);

            File.WriteAllText(path, "\"ok\" \"pw\"\nbroken\n");
            var ex = Assert.Throws<FormatException>(() => UserList.Load(path));
            Assert.Contains(path, ex.Message);
            Assert.Contains("line 2", ex.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
