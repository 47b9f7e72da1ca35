using System.Collections;
using Akka.Configuration;
using Pooler.Actors.Config;

namespace Pooler.Host;

/// <summary>A command line that cannot be understood; the host prints the message and the usage, and exits 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>The host's command line: <c>[--config FILE] [--set key=value]... [--help]</c>.</summary>
public sealed record HostOptions(string? ConfigFile, IReadOnlyList<string> Sets, bool ShowHelp = false)
{
    public const string Usage =
        """
        usage: Pooler.Host [--config FILE] [--set key=value]...
          --config FILE      HOCON file layered over the built-in defaults (reference.conf)
          --set key=value    override one setting, e.g. --set pooler.listen.port=6433 (repeatable; last wins)
          --help             print this help
        Environment: POOLER__A__B_C=value sets pooler.a.b-c ('__' is a dot, '_' a dash); AKKA__... sets akka.*
        Signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the configuration.
        """;

    /// <summary>Parses the arguments. Accepts <c>--config FILE</c>, <c>--config=FILE</c>, <c>--set k=v</c>, <c>--set=k=v</c>.</summary>
    /// <exception cref="UsageException">An unknown argument, a missing value, or a malformed --set.</exception>
    public static HostOptions Parse(IReadOnlyList<string> args)
    {
        string? configFile = null;
        var sets = new List<string>();
        var help = false;
        for (var i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (arg is "--help" or "-h")
            {
                help = true;
            }
            else if (TryOption(arg, "--config", args, ref i, out var file))
            {
                if (configFile is not null) throw new UsageException("--config given more than once");
                if (file.Length == 0) throw new UsageException("--config needs a file name");
                configFile = file;
            }
            else if (TryOption(arg, "--set", args, ref i, out var set))
            {
                var equals = set.IndexOf('=');
                if (equals <= 0) throw new UsageException($"--set needs key=value, got '{set}'");
                sets.Add(set);
            }
            else
            {
                throw new UsageException($"unknown argument '{arg}'");
            }
        }
        return new HostOptions(configFile, sets, help);
    }

    /// <summary>"--name value" or "--name=value"; throws when the value is missing.</summary>
    private static bool TryOption(string arg, string name, IReadOnlyList<string> args, ref int i, out string value)
    {
        if (arg == name)
        {
            if (i + 1 >= args.Count) throw new UsageException($"{name} needs a value");
            value = args[++i];
            return true;
        }
        if (arg.StartsWith(name + "=", StringComparison.Ordinal))
        {
            value = arg[(name.Length + 1)..];
            return true;
        }
        value = "";
        return false;
    }

    /// <summary>The folder relative paths in the configuration resolve against: the config file's, else the current one.</summary>
    public string BaseDirectory
        => ConfigFile is null
            ? Directory.GetCurrentDirectory()
            : Path.GetDirectoryName(Path.GetFullPath(ConfigFile)) ?? Directory.GetCurrentDirectory();

    /// <summary>The layered configuration (reference.conf, file, environment, --set) and the settings read from it.</summary>
    /// <exception cref="ConfigException">The configuration cannot be read or is invalid.</exception>
    public (Config Config, PoolerSettings Settings) Load(IEnumerable<KeyValuePair<string, string>> environment)
    {
        var config = SettingsLoader.Layer(ConfigFile, environment, Sets);
        return (config, SettingsLoader.Load(config, BaseDirectory));
    }

    /// <summary>The process environment as pairs.</summary>
    public static IEnumerable<KeyValuePair<string, string>> ProcessEnvironment()
        => Environment.GetEnvironmentVariables().Cast<DictionaryEntry>()
            .Select(e => KeyValuePair.Create((string)e.Key, e.Value as string ?? ""));
}
