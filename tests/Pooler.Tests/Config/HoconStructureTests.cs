using Pooler.Actors.Config;
using Xunit;

namespace Pooler.Tests.Config;

public class HoconStructureTests
{
    [Theory]
    [InlineData("pooler { a = 1 }")]
    [InlineData("pooler { l = [a, \"b]\", c] } # } comment with a stray brace")]
    [InlineData("pooler { s = \"\"\"multi { [ \nline\"\"\" }")]
    [InlineData("// [\npooler { x = \"esc \\\" {\" }")]
    public void Balanced_files_pass(string text) => Assert.Null(SettingsLoader.UnbalancedBracket(text));

    [Theory]
    [InlineData("pooler {\n  a = 1\n", "line 1, column 8: '{' is never closed")]
    [InlineData("pooler {\n  l = [a, b\n}", "line 3, column 1: unexpected '}'")]
    [InlineData("pooler { a = 1 } }", "line 1, column 18: unexpected '}'")]
    [InlineData("pooler { a = \"open\n}", "line 1, column 14: string never closed")]
    public void Truncated_or_mismatched_files_are_named_with_line_and_column(string text, string expected)
        => Assert.Equal(expected, SettingsLoader.UnbalancedBracket(text));
}
