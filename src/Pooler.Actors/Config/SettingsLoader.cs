using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Akka.Configuration;
using Akka.Configuration.Hocon;

namespace Pooler.Actors.Config;

using Config = Akka.Configuration.Config;

/// <summary>
/// Builds the pooler's configuration: reference.conf, then the user's file, then the environment, then
/// <c>--set</c> overrides; and reads it into a validated <see cref="PoolerSettings"/>.
/// </summary>
public static partial class SettingsLoader
{
    /// <summary>Logical name of the embedded reference.conf.</summary>
    public const string ReferenceResourceName = "Pooler.Actors.reference.conf";

    /// <summary>Longest duration accepted (timers take at most int.MaxValue milliseconds, about 24.8 days).</summary>
    public static readonly TimeSpan MaxDuration = TimeSpan.FromMilliseconds(int.MaxValue);

    private static readonly Lazy<string> ReferenceText = new(() =>
    {
        using var stream = typeof(SettingsLoader).Assembly.GetManifestResourceStream(ReferenceResourceName)
            ?? throw new InvalidOperationException($"embedded resource {ReferenceResourceName} is missing");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    });

    /// <summary>The embedded reference.conf, parsed (a fresh copy on each call).</summary>
    public static Config Reference() => ConfigurationFactory.ParseString(ReferenceText.Value);

    /// <summary>
    /// reference.conf, then <paramref name="configFile"/> (HOCON) if given, then environment variables
    /// <c>POOLER__A__B_C=value</c> (meaning <c>pooler.a.b-c</c>) and <c>AKKA__...</c> (meaning <c>akka.…</c>),
    /// then each <c>key=value</c> of <paramref name="sets"/> in order; later layers win. <c>CLUSTER_IP</c>,
    /// <c>CLUSTER_PORT</c> and <c>CLUSTER_SEEDS</c> (see <see cref="Cluster.ClusterConfig"/>) sit just below the
    /// POOLER__/AKKA__ variables.
    /// Values from the environment and from <paramref name="sets"/> are injected as quoted HOCON strings.
    /// </summary>
    /// <exception cref="ConfigException">The file cannot be read or parsed, or an override is malformed.</exception>
    public static Config Layer(string? configFile, IEnumerable<KeyValuePair<string, string>> environment, IEnumerable<string> sets)
    {
        var config = Reference();
        if (configFile is not null)
            config = ParseFile(configFile).WithFallback(config);

        var pairs = environment as IReadOnlyCollection<KeyValuePair<string, string>> ?? environment.ToList();
        var cluster = Cluster.ClusterConfig.FromEnvironment(pairs);
        if (cluster is not null)
            config = cluster.WithFallback(config);

        var fromEnvironment = EnvironmentOverrides(pairs);
        if (fromEnvironment is not null)
            config = fromEnvironment.WithFallback(config);

        foreach (var set in sets)
            config = SetOverride(set).WithFallback(config);
        return config;
    }

    /// <summary>
    /// Reads and validates every <c>pooler.*</c> setting. Missing settings take reference.conf's defaults.
    /// A relative <c>pooler.auth.users-file</c> is resolved against <paramref name="baseDirectory"/>
    /// (the config file's folder; the current directory when null).
    /// </summary>
    /// <exception cref="ConfigException">A setting is missing, unknown or invalid; the exception names its full key.</exception>
    public static PoolerSettings Load(Config config, string? baseDirectory)
    {
        var reference = Reference();
        var merged = config.WithFallback(reference);

        var pooler = RequireObject(merged.Root, "", "pooler");
        var referencePooler = reference.Root.GetObject().Items["pooler"].GetObject();
        RejectUnknown(pooler, "pooler", referencePooler.Items.Keys);

        var listenObj = RequireObject(pooler, "pooler", "listen");
        RejectUnknown(listenObj, "pooler.listen", referencePooler.Items["listen"].GetObject().Items.Keys);
        var listen = new ListenSettings(
            Host: RequireNonEmptyString(listenObj, "pooler.listen", "host"),
            Port: ReadPort(listenObj, "pooler.listen", "port", minimum: 0) ?? throw Missing("pooler.listen.port"));

        var authObj = RequireObject(pooler, "pooler", "auth");
        RejectUnknown(authObj, "pooler.auth", referencePooler.Items["auth"].GetObject().Items.Keys);
        var auth = ReadAuth(authObj, baseDirectory);

        var p = "pooler";
        var settings = new PoolerSettings(
            Listen: listen,
            Auth: auth,
            PoolMode: ReadPoolMode(pooler, p, "pool-mode") ?? throw Missing("pooler.pool-mode"),
            DefaultPoolSize: RequireInt(pooler, p, "default-pool-size", minimum: 1),
            MinPoolSize: RequireInt(pooler, p, "min-pool-size", minimum: 0),
            ReservePoolSize: RequireInt(pooler, p, "reserve-pool-size", minimum: 0),
            ReservePoolTimeout: RequireDuration(pooler, p, "reserve-pool-timeout"),
            MaxClientConn: RequireInt(pooler, p, "max-client-conn", minimum: 1),
            MaxDbConnections: RequireInt(pooler, p, "max-db-connections", minimum: 0),
            MaxUserConnections: RequireInt(pooler, p, "max-user-connections", minimum: 0),
            ServerLifetime: RequireDuration(pooler, p, "server-lifetime"),
            ServerIdleTimeout: RequireDuration(pooler, p, "server-idle-timeout"),
            ServerConnectTimeout: RequireDuration(pooler, p, "server-connect-timeout"),
            ServerLoginRetry: RequireDuration(pooler, p, "server-login-retry"),
            QueryTimeout: RequireDuration(pooler, p, "query-timeout"),
            QueryWaitTimeout: RequireDuration(pooler, p, "query-wait-timeout"),
            ClientIdleTimeout: RequireDuration(pooler, p, "client-idle-timeout"),
            ClientLoginTimeout: RequireDuration(pooler, p, "client-login-timeout"),
            IdleTransactionTimeout: RequireDuration(pooler, p, "idle-transaction-timeout"),
            ServerResetQuery: ReadString(pooler, p, "server-reset-query") ?? "",
            ServerResetQueryAlways: ReadBool(pooler, p, "server-reset-query-always") ?? throw Missing("pooler.server-reset-query-always"),
            ServerCheckQuery: ReadString(pooler, p, "server-check-query") ?? "",
            ServerCheckDelay: RequireDuration(pooler, p, "server-check-delay"),
            IgnoreStartupParameters: ReadStringList(pooler, p, "ignore-startup-parameters"),
            ShutdownTimeout: RequireDuration(pooler, p, "shutdown-timeout"),
            MaxPacketSize: RequireInt(pooler, p, "max-packet-size", minimum: 1),
            Databases: ReadDatabases(pooler))
        {
            Vip = ReadVip(RequireObject(pooler, p, "vip"), referencePooler.Items["vip"].GetObject().Items.Keys),
            AdminUsers = ReadStringList(pooler, p, "admin-users"),
            StatsUsers = ReadStringList(pooler, p, "stats-users"),
            StatsPeriod = RequirePositiveDuration(pooler, p, "stats-period"),
            MaxPreparedStatements = RequireInt(pooler, p, "max-prepared-statements", minimum: 0),
            Pbm = ReadPbm(RequireObject(pooler, p, "pbm"), referencePooler.Items["pbm"].GetObject().Items.Keys),
            Http = ReadHttp(RequireObject(pooler, p, "http"), referencePooler.Items["http"].GetObject().Items.Keys),
            ClientTls = ReadTls(pooler, "client", baseDirectory),
            ServerTls = ReadTls(pooler, "server", baseDirectory),
        };
        if (settings.Auth.Type == AuthType.Cert && (!settings.ClientTls.Enabled || settings.ClientTls.CaFile == null))
            throw new ConfigException("pooler.auth.type", "cert needs client TLS with a CA to check certificates against: set client-tls-sslmode (not disable) and client-tls-ca-file");
        return settings;
    }

    /// <summary>
    /// <c>client-tls-*</c> or <c>server-tls-*</c> (PgBouncer's names). Files must be readable now; their
    /// contents are parsed by <see cref="Tls.TlsContexts.Load"/> at start and on every reload.
    /// </summary>
    private static Tls.TlsSettings ReadTls(HoconObject pooler, string side, string? baseDirectory)
    {
        const string p = "pooler";
        var prefix = side + "-tls-";
        var mode = ReadEnum(pooler, p, prefix + "sslmode", Tls.TlsSettings.ModeNames) ?? throw Missing($"pooler.{prefix}sslmode");
        string? File(string name)
        {
            var raw = ReadString(pooler, p, prefix + name)?.Trim() ?? "";
            if (raw.Length == 0) return null;
            var path = Path.GetFullPath(raw, Path.GetFullPath(baseDirectory ?? Directory.GetCurrentDirectory()));
            CheckReadable($"pooler.{prefix}{name}", path);
            return path;
        }
        var key = File("key-file");
        var cert = File("cert-file");
        var ca = File("ca-file");
        var protocolsText = ReadString(pooler, p, prefix + "protocols") ?? "secure";
        if (!Tls.TlsSettings.TryParseProtocols(protocolsText, out var protocols, out var error))
            throw new ConfigException($"pooler.{prefix}protocols", error!);
        if ((key == null) != (cert == null))
            throw new ConfigException($"pooler.{prefix}{(key == null ? "key-file" : "cert-file")}", $"is required when {prefix}{(key == null ? "cert-file" : "key-file")} is set");
        if (side == "client" && mode != Tls.SslMode.Disable && cert == null)
            throw new ConfigException("pooler.client-tls-cert-file", $"is required when client-tls-sslmode is {Tls.TlsSettings.NameOf(mode)} (with client-tls-key-file: the pooler's certificate)");
        if (mode >= Tls.SslMode.VerifyCa && ca == null)
            throw new ConfigException($"pooler.{prefix}ca-file", $"is required when {prefix}sslmode is {Tls.TlsSettings.NameOf(mode)}");
        return new Tls.TlsSettings(mode, key, cert, ca, protocols);
    }

    private static TimeSpan RequirePositiveDuration(HoconObject obj, string parent, string key)
    {
        var d = RequireDuration(obj, parent, key);
        return d > TimeSpan.Zero ? d : throw new ConfigException($"{parent}.{key}", "must be more than 0");
    }

    /// <summary><c>pooler.pbm</c>, also read by the Lighthouse.</summary>
    public static PbmSettings ReadPbm(HoconObject pbm, IEnumerable<string> known)
    {
        const string p = "pooler.pbm";
        RejectUnknown(pbm, p, known);
        return new PbmSettings(
            Enabled: ReadBool(pbm, p, "enabled") ?? throw Missing("pooler.pbm.enabled"),
            Host: RequireNonEmptyString(pbm, p, "host"),
            Port: ReadPort(pbm, p, "port", minimum: 0) ?? throw Missing("pooler.pbm.port"),
            AllowRemote: ReadBool(pbm, p, "allow-remote") ?? throw Missing("pooler.pbm.allow-remote"));
    }

    /// <summary>Reads <c>pooler.pbm</c> alone from a whole config (the Lighthouse has no other pooler settings).</summary>
    public static PbmSettings LoadPbm(Config config)
    {
        var reference = Reference();
        var merged = config.WithFallback(reference);
        var pooler = RequireObject(merged.Root, "", "pooler");
        return ReadPbm(RequireObject(pooler, "pooler", "pbm"),
            reference.Root.GetObject().Items["pooler"].GetObject().Items["pbm"].GetObject().Items.Keys);
    }

    private static HttpSettings ReadHttp(HoconObject http, IEnumerable<string> known)
    {
        const string p = "pooler.http";
        RejectUnknown(http, p, known);
        return new HttpSettings(
            Enabled: ReadBool(http, p, "enabled") ?? throw Missing("pooler.http.enabled"),
            Host: RequireNonEmptyString(http, p, "host"),
            Port: ReadPort(http, p, "port", minimum: 0) ?? throw Missing("pooler.http.port"));
    }

    private static readonly KeyValuePair<string, VipDriverKind>[] VipDrivers =
        [new("none", VipDriverKind.None), new("linux", VipDriverKind.Linux), new("bind", VipDriverKind.Bind), new("script", VipDriverKind.Script)];

    private static VipSettings ReadVip(HoconObject vip, IEnumerable<string> known)
    {
        const string p = "pooler.vip";
        RejectUnknown(vip, p, known);
        var driver = ReadEnum(vip, p, "driver", VipDrivers) ?? throw Missing("pooler.vip.driver");
        var address = (ReadString(vip, p, "address") ?? "").Trim();
        var settings = new VipSettings(
            Driver: driver,
            Address: address,
            Interface: (ReadString(vip, p, "interface") ?? "").Trim(),
            Port: ReadPort(vip, p, "port", minimum: 1) ?? throw Missing("pooler.vip.port"),
            Lifetime: RequireDuration(vip, p, "lifetime"),
            UpCommand: ReadString(vip, p, "up-command") ?? "",
            DownCommand: ReadString(vip, p, "down-command") ?? "",
            IpCommand: RequireNonEmptyString(vip, p, "ip-command"),
            ArpingCommand: RequireNonEmptyString(vip, p, "arping-command"),
            PreferredNode: (ReadString(vip, p, "preferred-node") ?? "").Trim());
        if (settings.PreferredNode.Length > 0
            && (!Uri.TryCreate(settings.PreferredNode, UriKind.Absolute, out var node) || node.Scheme != "akka.tcp" || node.Port <= 0))
            throw new ConfigException("pooler.vip.preferred-node", $"must be a node's cluster address like akka.tcp://pooler@10.0.0.12:4053, got '{settings.PreferredNode}'");
        if (settings.Lifetime < TimeSpan.FromMilliseconds(300))
            throw new ConfigException("pooler.vip.lifetime", "must be at least 300ms (it is renewed every third of it)");
        switch (driver)
        {
            case VipDriverKind.Linux:
                if (!System.Net.IPNetwork.TryParse(address, out _) || !address.Contains('/'))
                    throw new ConfigException("pooler.vip.address", $"the linux driver needs an address with a prefix length, like \"10.0.0.250/24\", got '{address}'");
                if (settings.Interface.Length == 0) throw new ConfigException("pooler.vip.interface", "is required by the linux driver");
                if (settings.Lifetime.TotalSeconds != Math.Floor(settings.Lifetime.TotalSeconds))
                    throw new ConfigException("pooler.vip.lifetime", "must be whole seconds for the linux driver (the kernel's valid_lft)");
                break;
            case VipDriverKind.Bind:
                if (!System.Net.IPAddress.TryParse(settings.Host, out _))
                    throw new ConfigException("pooler.vip.address", $"the bind driver needs an IP address to listen on, like \"127.0.0.100\", got '{address}'");
                break;
            case VipDriverKind.Script:
                if (string.IsNullOrWhiteSpace(settings.UpCommand)) throw new ConfigException("pooler.vip.up-command", "is required by the script driver");
                if (string.IsNullOrWhiteSpace(settings.DownCommand)) throw new ConfigException("pooler.vip.down-command", "is required by the script driver");
                break;
        }
        return settings;
    }

    // ---------------------------------------------------------------- layering

    private static Config ParseFile(string configFile)
    {
        string text;
        try
        {
            text = File.ReadAllText(configFile);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new ConfigException("--config", $"cannot read '{configFile}': {e.Message}");
        }

        if (UnbalancedBracket(text) is { } problem)
            throw new ConfigException("--config", $"'{configFile}' is not valid HOCON: {problem}");
        try
        {
            return ConfigurationFactory.ParseString(text);
        }
        catch (Exception e)
        {
            throw new ConfigException("--config", $"'{configFile}' is not valid HOCON: {DescribeParseError(e, text)}");
        }
    }

    /// <summary>
    /// Akka's HOCON parser accepts a file that ends inside an object or a list (a truncated file would
    /// load half its settings), so braces and brackets are matched here first, outside strings and comments.
    /// </summary>
    internal static string? UnbalancedBracket(string text)
    {
        var open = new Stack<(char Ch, int Line, int Col)>();
        int line = 1, col = 0;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            col++;
            if (c == '\n') { line++; col = 0; continue; }
            if (c == '#' || (c == '/' && i + 1 < text.Length && text[i + 1] == '/'))
            {
                while (i + 1 < text.Length && text[i + 1] != '\n') i++;
                continue;
            }
            if (c == '"')
            {
                var triple = i + 2 < text.Length && text[i + 1] == '"' && text[i + 2] == '"';
                var end = triple ? text.IndexOf("\"\"\"", i + 3, StringComparison.Ordinal) : FindQuoteEnd(text, i + 1);
                if (end < 0) return $"line {line}, column {col}: string never closed";
                for (var k = i; k < end; k++) if (text[k] == '\n') { line++; col = 0; }
                i = triple ? end + 2 : end;
                continue;
            }
            if (c is '{' or '[') open.Push((c, line, col));
            else if (c is '}' or ']')
            {
                var want = c == '}' ? '{' : '[';
                if (open.Count == 0 || open.Peek().Ch != want) return $"line {line}, column {col}: unexpected '{c}'";
                open.Pop();
            }
        }
        if (open.Count == 0) return null;
        var (ch, l, co) = open.Peek();
        return $"line {l}, column {co}: '{ch}' is never closed";
    }

    private static int FindQuoteEnd(string text, int from)
    {
        for (var k = from; k < text.Length; k++)
        {
            if (text[k] == '\\') { k++; continue; }
            if (text[k] == '"') return k;
            if (text[k] == '\n') return -1;
        }
        return -1;
    }

    /// <summary>Turns Akka's "… at position N" into "line L, column C: …".</summary>
    private static string DescribeParseError(Exception e, string text)
    {
        var first = e.Message.Split('\n')[0].Trim().TrimEnd(':');
        var match = PositionRegex().Match(first);
        if (!match.Success || !int.TryParse(match.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out var position))
            return first;
        position = Math.Clamp(position, 0, text.Length);
        int line = 1, column = 1;
        for (var i = 0; i < position; i++)
        {
            if (text[i] == '\n') { line++; column = 1; }
            else column++;
        }
        var what = first[..match.Index].Trim();
        return $"{(what.Length == 0 ? "syntax error" : what)} at line {line}, column {column}";
    }

    [GeneratedRegex(@"at position (\d+)")]
    private static partial Regex PositionRegex();

    private static Config? EnvironmentOverrides(IEnumerable<KeyValuePair<string, string>> environment)
    {
        var lines = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in environment)
        {
            string root;
            if (name.StartsWith("POOLER__", StringComparison.OrdinalIgnoreCase)) root = "pooler";
            else if (name.StartsWith("AKKA__", StringComparison.OrdinalIgnoreCase)) root = "akka";
            else continue;

            var segments = name[(root.Length + 2)..].Split("__");
            if (segments.Any(s => s.Length == 0))
                throw new ConfigException(name, $"is not a setting name: expected {root.ToUpperInvariant()}__SECTION__KEY_NAME ('__' for a dot, '_' for a dash)");
            var path = new[] { root }.Concat(segments.Select(s => s.ToLowerInvariant().Replace('_', '-')));
            lines[name] = $"{FormatPath(path)} = {Quote(value ?? "")}";
        }
        if (lines.Count == 0) return null;

        try
        {
            return ConfigurationFactory.ParseString(string.Join('\n', lines.Values));
        }
        catch (Exception e)
        {
            throw new ConfigException("environment", $"cannot apply POOLER__/AKKA__ variables: {e.Message.Split('\n')[0]}");
        }
    }

    private static Config SetOverride(string set)
    {
        var equals = IndexOfUnquoted(set, '=');
        if (equals <= 0)
            throw new ConfigException("--set", $"expected key=value, got '{set}'");
        var key = set[..equals].Trim();
        var value = set[(equals + 1)..];
        var segments = SplitPath(key)
            ?? throw new ConfigException("--set", $"'{key}' is not a setting path such as pooler.listen.port");
        try
        {
            return ConfigurationFactory.ParseString($"{FormatPath(segments)} = {Quote(value)}");
        }
        catch (Exception e)
        {
            throw new ConfigException("--set", $"cannot apply '{set}': {e.Message.Split('\n')[0]}");
        }
    }

    private static int IndexOfUnquoted(string s, char wanted)
    {
        var quoted = false;
        for (var i = 0; i < s.Length; i++)
        {
            if (s[i] == '"') quoted = !quoted;
            else if (s[i] == wanted && !quoted) return i;
        }
        return -1;
    }

    /// <summary>Splits <c>a.b."c.d"</c> into segments; null if a segment is empty or a quote is unclosed.</summary>
    internal static IReadOnlyList<string>? SplitPath(string path)
    {
        var segments = new List<string>();
        var i = 0;
        while (true)
        {
            string segment;
            if (i < path.Length && path[i] == '"')
            {
                var close = path.IndexOf('"', i + 1);
                if (close < 0) return null;
                segment = path[(i + 1)..close];
                i = close + 1;
            }
            else
            {
                var dot = path.IndexOf('.', i);
                var end = dot < 0 ? path.Length : dot;
                segment = path[i..end].Trim();
                if (segment.Contains('"')) return null;
                i = end;
            }
            if (segment.Length == 0) return null;
            segments.Add(segment);
            if (i == path.Length) return segments;
            if (path[i] != '.') return null;
            i++;
        }
    }

    private static string FormatPath(IEnumerable<string> segments) => string.Join('.', segments.Select(Quote));

    /// <summary>A HOCON quoted string holding exactly <paramref name="value"/>.</summary>
    public static string Quote(string value)
    {
        var sb = new StringBuilder(value.Length + 2).Append('"');
        foreach (var c in value)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < ' ' || c == '\u007f') sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    // ---------------------------------------------------------------- reading

    private static AuthSettings ReadAuth(HoconObject authObj, string? baseDirectory)
    {
        const string p = "pooler.auth";
        var type = ReadEnum(authObj, p, "type", AuthTypes) ?? throw Missing("pooler.auth.type");
        var raw = ReadString(authObj, p, "users-file")?.Trim() ?? "";
        if (raw.Length == 0)
        {
            if (type is not AuthType.Trust and not AuthType.Cert)
                throw new ConfigException("pooler.auth.users-file", $"is required when pooler.auth.type is {AuthTypes.First(t => t.Value == type).Key}");
            return new AuthSettings(type, null);
        }

        var baseDir = Path.GetFullPath(baseDirectory ?? Directory.GetCurrentDirectory());
        var path = Path.GetFullPath(raw, baseDir);
        CheckReadable("pooler.auth.users-file", path);
        // The contents are parsed by Pooler.Actors.Auth.UserList.Load(path) (wired where the user list is loaded).
        return new AuthSettings(type, path);
    }

    private static void CheckReadable(string key, string path)
    {
        if (Directory.Exists(path))
            throw new ConfigException(key, $"'{path}' is a directory, not a file");
        try
        {
            using var _ = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ConfigException(key, $"file '{path}' does not exist");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException(key, $"cannot read '{path}': {e.Message}");
        }
    }

    private static readonly string[] DatabaseKeys =
    [
        "host", "port", "dbname", "user", "password", "pool-size", "pool-mode",
        "max-db-connections", "min-pool-size", "reserve-pool-size",
    ];

    private static Dictionary<string, DatabaseSettings> ReadDatabases(HoconObject pooler)
    {
        var databases = new Dictionary<string, DatabaseSettings>(StringComparer.Ordinal);
        var node = Child(pooler, "databases");
        if (node is null || IsNull(node)) return databases;
        if (!node.IsObject())
            throw new ConfigException("pooler.databases", $"must be an object of database entries, got {Describe(node)}");

        foreach (var (name, value) in node.GetObject().Items)
        {
            var p = JoinPath("pooler.databases", name);
            if (!value.IsObject())
                throw new ConfigException(p, $"must be an object such as {{ host = \"127.0.0.1\", port = 5432 }}, got {Describe(value)}");
            var db = value.GetObject();
            RejectUnknown(db, p, DatabaseKeys);

            var dbName = ReadString(db, p, "dbname");
            if (dbName is not null && dbName.Trim().Length == 0)
                throw new ConfigException(JoinPath(p, "dbname"), "must not be empty");

            databases[name] = new DatabaseSettings(
                Name: name,
                Host: ReadString(db, p, "host") is { } host
                    ? (host.Trim().Length > 0 ? host.Trim() : throw new ConfigException(JoinPath(p, "host"), "must not be empty"))
                    : "127.0.0.1",
                Port: ReadPort(db, p, "port", minimum: 1) ?? 5432,
                DbName: dbName?.Trim() ?? name,
                User: NullIfEmpty(ReadString(db, p, "user")),
                Password: NullIfEmpty(ReadString(db, p, "password")),
                PoolSize: ReadInt(db, p, "pool-size", minimum: 1),
                PoolMode: ReadPoolMode(db, p, "pool-mode"),
                MaxDbConnections: ReadInt(db, p, "max-db-connections", minimum: 0),
                MinPoolSize: ReadInt(db, p, "min-pool-size", minimum: 0),
                ReservePoolSize: ReadInt(db, p, "reserve-pool-size", minimum: 0));
        }
        return databases;
    }

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    private static readonly KeyValuePair<string, PoolMode>[] PoolModes =
    [
        new("session", PoolMode.Session), new("transaction", PoolMode.Transaction), new("statement", PoolMode.Statement),
    ];

    private static readonly KeyValuePair<string, AuthType>[] AuthTypes =
    [
        new("trust", AuthType.Trust), new("plain", AuthType.Plain), new("md5", AuthType.Md5), new("scram-sha-256", AuthType.ScramSha256),
        new("cert", AuthType.Cert),
    ];

    private static PoolMode? ReadPoolMode(HoconObject obj, string parent, string key) => ReadEnum(obj, parent, key, PoolModes);

    private static T? ReadEnum<T>(HoconObject obj, string parent, string key, KeyValuePair<string, T>[] names) where T : struct
    {
        var raw = ReadString(obj, parent, key);
        if (raw is null) return null;
        foreach (var (name, value) in names)
            if (string.Equals(raw.Trim(), name, StringComparison.OrdinalIgnoreCase))
                return value;
        throw new ConfigException(JoinPath(parent, key), $"must be one of {string.Join(", ", names.Select(n => n.Key))}, got '{raw}'");
    }

    private static int RequireInt(HoconObject obj, string parent, string key, int minimum)
        => ReadInt(obj, parent, key, minimum) ?? throw Missing(JoinPath(parent, key));

    private static int? ReadInt(HoconObject obj, string parent, string key, int minimum)
    {
        var raw = ReadString(obj, parent, key);
        if (raw is null) return null;
        if (int.TryParse(raw.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) && n >= minimum)
            return n;
        var what = minimum switch { 0 => "a non-negative integer", 1 => "a positive integer", _ => $"an integer of at least {minimum}" };
        throw new ConfigException(JoinPath(parent, key), $"must be {what}, got '{raw}'");
    }

    private static int? ReadPort(HoconObject obj, string parent, string key, int minimum)
    {
        var raw = ReadString(obj, parent, key);
        if (raw is null) return null;
        if (int.TryParse(raw.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) && n >= minimum && n <= 65535)
            return n;
        throw new ConfigException(JoinPath(parent, key), $"must be a port number from {minimum} to 65535, got '{raw}'");
    }

    private static bool? ReadBool(HoconObject obj, string parent, string key)
    {
        var raw = ReadString(obj, parent, key);
        if (raw is null) return null;
        switch (raw.Trim().ToLowerInvariant())
        {
            case "on" or "true" or "yes" or "1": return true;
            case "off" or "false" or "no" or "0": return false;
            default: throw new ConfigException(JoinPath(parent, key), $"must be on or off, got '{raw}'");
        }
    }

    private static TimeSpan RequireDuration(HoconObject obj, string parent, string key)
    {
        var raw = ReadString(obj, parent, key) ?? throw Missing(JoinPath(parent, key));
        return TryParseDuration(raw, out var duration)
            ? duration
            : throw new ConfigException(JoinPath(parent, key),
                $"must be a duration from 0 to 24 days, such as 15s, 500ms or a number of seconds, got '{raw}'");
    }

    /// <summary>
    /// A HOCON duration ("15s", "500 ms", "2 minutes", "1.5h") or a plain number of seconds ("15", "0.5").
    /// False when malformed, negative or longer than <see cref="MaxDuration"/>.
    /// </summary>
    public static bool TryParseDuration(string text, out TimeSpan duration)
    {
        duration = TimeSpan.Zero;
        var match = DurationRegex().Match(text);
        if (!match.Success) return false;
        if (!double.TryParse(match.Groups[1].Value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var amount))
            return false;
        double? milliseconds = match.Groups[2].Value.ToLowerInvariant() switch
        {
            "" or "s" or "second" or "seconds" => amount * 1000,
            "ms" or "milli" or "millis" or "millisecond" or "milliseconds" => amount,
            "us" or "micro" or "micros" or "microsecond" or "microseconds" => amount / 1000,
            "ns" or "nano" or "nanos" or "nanosecond" or "nanoseconds" => amount / 1_000_000,
            "m" or "minute" or "minutes" => amount * 60_000,
            "h" or "hour" or "hours" => amount * 3_600_000,
            "d" or "day" or "days" => amount * 86_400_000,
            _ => null,
        };
        if (milliseconds is not { } ms || double.IsNaN(ms) || ms > int.MaxValue) return false;
        duration = TimeSpan.FromTicks((long)Math.Round(ms * TimeSpan.TicksPerMillisecond));
        return true;
    }

    [GeneratedRegex(@"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*$")]
    private static partial Regex DurationRegex();

    private static IReadOnlyList<string> ReadStringList(HoconObject obj, string parent, string key)
    {
        var path = JoinPath(parent, key);
        var node = Child(obj, key);
        if (node is null || IsNull(node)) return [];
        IEnumerable<string> items;
        // Akka's HOCON keeps a trailing whitespace literal next to the array, and IsArray() is false for "[]"
        var arrays = node.Values.Where(v => v.IsArray()).ToList();
        if (node.IsArray() || (arrays.Count > 0 && node.Values.All(v => v.IsArray() || (v.IsString() && string.IsNullOrWhiteSpace(v.GetString())))))
        {
            items = arrays.SelectMany(a => a.GetArray()).Select((item, i) =>
                item.IsString() ? item.GetString() ?? "" : throw new ConfigException($"{path}[{i}]", $"must be a string, got {Describe(item)}"));
        }
        else if (node.IsString())
        {
            items = (node.GetString() ?? "").Split(',');   // PgBouncer style: "a,b"
        }
        else
        {
            throw new ConfigException(path, $"must be a list of strings, got {Describe(node)}");
        }
        return items.Select(s => s.Trim()).Where(s => s.Length > 0).ToArray();
    }

    private static string RequireNonEmptyString(HoconObject obj, string parent, string key)
    {
        var value = ReadString(obj, parent, key) ?? throw Missing(JoinPath(parent, key));
        return value.Trim().Length > 0 ? value.Trim() : throw new ConfigException(JoinPath(parent, key), "must not be empty");
    }

    /// <summary>The scalar at <paramref name="key"/> as text; null when absent or HOCON null.</summary>
    private static string? ReadString(HoconObject obj, string parent, string key)
    {
        var node = Child(obj, key);
        if (node is null || IsNull(node)) return null;
        if (!node.IsString())
            throw new ConfigException(JoinPath(parent, key), $"must be a single value, got {Describe(node)}");
        return node.GetString();
    }

    private static HoconObject RequireObject(HoconValue? parentNode, string parent, string key)
    {
        if (parentNode is null || !parentNode.IsObject()) throw Missing(JoinPath(parent, key));
        return RequireObject(parentNode.GetObject(), parent, key);
    }

    private static HoconObject RequireObject(HoconObject parentObj, string parent, string key)
    {
        var node = Child(parentObj, key);
        if (node is null || IsNull(node)) throw Missing(JoinPath(parent, key));
        if (!node.IsObject())
            throw new ConfigException(JoinPath(parent, key), $"must be an object {{ ... }}, got {Describe(node)}");
        return node.GetObject();
    }

    private static void RejectUnknown(HoconObject obj, string parent, IEnumerable<string> known)
    {
        var knownSet = known.ToHashSet(StringComparer.Ordinal);
        foreach (var key in obj.Items.Keys)
        {
            if (knownSet.Contains(key)) continue;
            var hint = knownSet.FirstOrDefault(k => string.Equals(Normalize(k), Normalize(key), StringComparison.OrdinalIgnoreCase));
            throw new ConfigException(JoinPath(parent, key), hint is null ? "unknown setting" : $"unknown setting (did you mean '{hint}'?)");
        }

        static string Normalize(string s) => s.Replace('_', '-');
    }

    private static HoconValue? Child(HoconObject obj, string key) => obj.Items.TryGetValue(key, out var v) ? v : null;

    private static bool IsNull(HoconValue node)
        => node.Values.Count == 0 || (node.IsString() && node.GetString() is null);

    private static string Describe(HoconValue node)
        => node.IsObject() ? "an object" : node.IsArray() ? "a list" : $"'{node.GetString()}'";

    private static ConfigException Missing(string key) => new(key, "is required");

    /// <summary>parent + "." + key, quoting the key when it is not a plain name (e.g. <c>pooler.databases."*"</c>).</summary>
    private static string JoinPath(string parent, string key)
    {
        var segment = key.Length > 0 && key.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_') ? key : Quote(key);
        return parent.Length == 0 ? segment : parent + "." + segment;
    }
}
