using Pooler.Actors.Config;
using Pooler.Host;
using Pooler.Tests.Config;
using Xunit;

namespace Pooler.Tests.Host;

public sealed class HostOptionsTests
{
    [Fact]
    public void No_arguments()
    {
        var o = HostOptions.Parse([]);
        Assert.Null(o.ConfigFile);
        Assert.Empty(o.Sets);
        Assert.False(o.ShowHelp);
    }

    [Fact]
    public void Config_and_sets_in_order()
    {
        var o = HostOptions.Parse(["--set", "pooler.listen.port=1", "--config", "a.hocon", "--set=pooler.listen.port=2", "--set", "pooler.x=a=b"]);
        Assert.Equal("a.hocon", o.ConfigFile);
        Assert.Equal(["pooler.listen.port=1", "pooler.listen.port=2", "pooler.x=a=b"], o.Sets);
    }

    [Fact]
    public void Config_with_equals()
    {
        Assert.Equal("/etc/pooler.hocon", HostOptions.Parse(["--config=/etc/pooler.hocon"]).ConfigFile);
    }

    [Theory]
    [InlineData("--help")]
    [InlineData("-h")]
    public void Help(string arg) => Assert.True(HostOptions.Parse([arg]).ShowHelp);

    [Theory]
    [InlineData("--bogus")]
    [InlineData("pooler.conf")]
    [InlineData("-c")]
    [InlineData("--config")]
    [InlineData("--config=")]
    [InlineData("--set")]
    [InlineData("--set", "novalue")]
    [InlineData("--set", "=x")]
    [InlineData("--config", "a", "--config", "b")]
    public void Bad_arguments_are_usage_errors(params string[] args)
    {
        Assert.Throws<UsageException>(() => HostOptions.Parse(args));
    }

    [Fact]
    public void Usage_mentions_the_options()
    {
        Assert.Contains("--config FILE", HostOptions.Usage);
        Assert.Contains("--set key=value", HostOptions.Usage);
    }

    [Fact]
    public void Base_directory_is_the_config_files_folder()
    {
        Assert.Equal("/etc/pooler", HostOptions.Parse(["--config", "/etc/pooler/pooler.hocon"]).BaseDirectory);
        Assert.Equal(Directory.GetCurrentDirectory(), HostOptions.Parse([]).BaseDirectory);
    }

    [Fact]
    public void Load_layers_file_environment_and_sets()
    {
        using var dir = new TempDir();
        dir.Write("users.txt", "");
        var file = dir.Write("pooler.hocon", "pooler { auth.users-file = \"users.txt\", default-pool-size = 3 }");
        var o = HostOptions.Parse(["--config", file, "--set", "pooler.listen.port=0"]);

        var (config, settings) = o.Load([new("POOLER__MIN_POOL_SIZE", "2")]);

        Assert.Equal(Path.Combine(dir.Path, "users.txt"), settings.Auth.UsersFile);
        Assert.Equal(3, settings.DefaultPoolSize);
        Assert.Equal(2, settings.MinPoolSize);
        Assert.Equal(0, settings.Listen.Port);
        Assert.Equal("INFO", config.GetString("akka.loglevel"));
    }

    [Fact]
    public void Load_reports_invalid_configuration()
    {
        var o = HostOptions.Parse(["--set", "pooler.auth.type=trust", "--set", "pooler.default-pool-size=abc"]);
        var e = Assert.Throws<ConfigException>(() => o.Load([]));
        Assert.Equal("pooler.default-pool-size", e.Key);
    }

    [Fact]
    public void Process_environment_is_read()
    {
        Assert.Contains(HostOptions.ProcessEnvironment(), kv => kv.Key == "PATH");
    }
}
