using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Pbm;
using Pooler.Tests.Infrastructure;
using Xunit;

namespace Pooler.Tests.Ops;

/// <summary>
/// The pbm client: its pure parts, then the whole program (in-process through <see cref="PbmProgram.RunAsync"/>,
/// and the built pbm.dll) against <see cref="ProtocolDouble"/>, a listener speaking the command protocol.
/// </summary>
public sealed class PbmCliTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    // --- endpoint ---

    [Theory]
    [InlineData("127.0.0.1:9110", "127.0.0.1", 9110, "127.0.0.1:9110")]
    [InlineData("node-2.example_x:6000", "node-2.example_x", 6000, "node-2.example_x:6000")]
    [InlineData("[::1]:9110", "::1", 9110, "[::1]:9110")]
    [InlineData("[fe80::1%2]:1", "fe80::1%2", 1, "[fe80::1%2]:1")]
    [InlineData("9111", "127.0.0.1", 9111, "127.0.0.1:9111")]
    [InlineData("65535", "127.0.0.1", 65535, "127.0.0.1:65535")]
    public void Endpoint_parses_host_port_bracketed_ipv6_and_a_bare_port(string text, string host, int port, string shown)
    {
        Assert.True(Endpoint.TryParse(text, out var endpoint));
        Assert.Equal(new Endpoint(host, port), endpoint);
        Assert.Equal(shown, endpoint.ToString());
    }

    [Theory]
    [InlineData("cluster")]
    [InlineData("localhost")]
    [InlineData("host:port")]
    [InlineData("host:0")]
    [InlineData("host:65536")]
    [InlineData(":9110")]
    [InlineData("host:")]
    [InlineData("::1:9110")]
    [InlineData("[::1]")]
    [InlineData("[127.0.0.1]:9110")]
    [InlineData("a b:9110")]
    [InlineData("0")]
    [InlineData("--json")]
    [InlineData("")]
    public void Endpoint_rejects_what_is_no_endpoint(string text) => Assert.False(Endpoint.TryParse(text, out _));

    [Fact]
    public void Endpoint_comes_from_the_first_argument_else_PBM_ENDPOINT_else_the_default()
    {
        Assert.Equal((new Endpoint("10.0.0.5", 9110), true), Endpoint.Choose(["10.0.0.5:9110", "cluster", "show"], "10.9.9.9:1"));
        Assert.Equal((new Endpoint("10.9.9.9", 1), false), Endpoint.Choose(["cluster", "show"], " 10.9.9.9:1 "));
        Assert.Equal((Endpoint.Default, false), Endpoint.Choose(["cluster", "show"], null));
        Assert.Equal((Endpoint.Default, false), Endpoint.Choose([], ""));
        Assert.Equal("127.0.0.1:9110", Endpoint.Default.ToString());
        Assert.Null(Endpoint.Choose(["cluster"], "nonsense").Endpoint);
    }

    // --- word splitting ---

    [Theory]
    [InlineData("cluster show", new[] { "cluster", "show" })]
    [InlineData("  cluster \t show  ", new[] { "cluster", "show" })]
    [InlineData("", new string[0])]
    [InlineData("   ", new string[0])]
    [InlineData("pool set \"my db\" 5", new[] { "pool", "set", "my db", "5" })]
    [InlineData("a\"b c\"d e", new[] { "ab cd", "e" })]
    [InlineData("say \"\" x", new[] { "say", "", "x" })]
    [InlineData("say \"he said \\\"hi\\\"\"", new[] { "say", "he said \"hi\"" })]
    [InlineData("path \"C:\\dir\\\\\"", new[] { "path", "C:\\dir\\" })]
    [InlineData("path C:\\dir", new[] { "path", "C:\\dir" })]
    public void CommandLine_splits_words_and_honours_double_quotes(string line, string[] words) =>
        Assert.Equal(words, CommandLine.Split(line));

    [Theory]
    [InlineData("pool set \"my db")]
    [InlineData("\"")]
    [InlineData("say \"a\\\"")]
    public void CommandLine_refuses_an_open_quote(string line) =>
        Assert.Throws<FormatException>(() => CommandLine.Split(line));

    // --- completion ---

    private static readonly Completion Commands = new(["cluster show", "cluster shutdown", "cluster tail", "pool show", "pools", "node drain"]);

    [Fact]
    public void Completion_of_a_unique_word_adds_a_space()
    {
        Assert.Equal(new Completions(0, "cluster ", []), Commands.Complete("cl"));
        Assert.Equal(new Completions(0, "node ", []), Commands.Complete("node"));
        Assert.Equal(new Completions(0, "exit ", []), Commands.Complete("ex"));
    }

    [Fact]
    public void Completion_of_second_level_words_follows_the_first()
    {
        Assert.Equal(new Completions(8, "tail ", []), Commands.Complete("cluster t"));
        Assert.Equal(new Completions(5, "show ", []), Commands.Complete("pool sh"));
        Assert.Equal(new Completions(9, "drain ", []), Commands.Complete("  node   d"));
    }

    [Fact]
    public void Completion_of_several_matches_goes_to_their_common_prefix_and_lists_them()
    {
        Assert.Equal(("cluster sh", "show shutdown"), Applied("cluster sh"));
        Assert.Equal(("cluster sh", "show shutdown"), Applied("cluster s"));
        Assert.Equal(("pool", "pool pools"), Applied("po"));
        var first = Commands.Complete("")!;
        Assert.Equal(["cluster", "exit", "help", "node", "pool", "pools", "quit"], first.Choices);
        Assert.Equal("", first.Replacement);
        Assert.Equal(["show", "shutdown", "tail"], Commands.Complete("cluster ")!.Choices);
    }

    [Fact]
    public void Completion_offers_nothing_past_the_command_words_or_for_unknown_ones()
    {
        Assert.Null(Commands.Complete("cluster show "));
        Assert.Null(Commands.Complete("cluster x"));
        Assert.Null(Commands.Complete("zz"));
        Assert.Null(Commands.Complete("node drain \"my"));
        Assert.Null(new Completion([]).Complete("cl"));
        Assert.Equal(new Completions(15, "show ", []), Commands.Complete("cluster --json sho"));
    }

    /// <summary>The line after Tab, and the choices listed.</summary>
    private static (string Line, string Choices) Applied(string line)
    {
        var c = Commands.Complete(line)!;
        return (line[..c.Start] + c.Replacement, string.Join(' ', c.Choices));
    }

    // --- the program against a node ---

    [Fact]
    public async Task Help_and_version_print_without_connecting()
    {
        var (code, stdout, stderr) = await PbmAsync("--help");
        Assert.Equal(0, code);
        Assert.StartsWith("usage: pbm [HOST:PORT]", stdout);
        Assert.Equal("", stderr);
        Assert.Equal(0, (await PbmAsync("-h")).Code);
        Assert.StartsWith("usage: pbm", (await PbmAsync($"127.0.0.1:{FreePort.Next()}", "--help")).Out);
        (code, stdout, _) = await PbmAsync("--version");
        Assert.Equal(0, code);
        Assert.Matches(@"^pbm \d+\.\d+", stdout);
    }

    [Fact]
    public async Task A_node_that_does_not_listen_exits_2()
    {
        var port = FreePort.Next();
        var (code, stdout, stderr) = await PbmAsync($"127.0.0.1:{port}", "cluster", "show");
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.StartsWith($"pbm: cannot reach 127.0.0.1:{port}: ", stderr);

        // The interactive session checks the node before its banner.
        (code, stdout, stderr) = await InteractiveAsync($"{port}", "cluster show\n");
        Assert.Equal(2, code);
        Assert.DoesNotContain("Connected", stdout);
        Assert.StartsWith($"pbm: cannot reach 127.0.0.1:{port}: ", stderr);
    }

    [Fact]
    public void The_built_pbm_exits_2_when_the_node_does_not_listen()
    {
        var port = FreePort.Next();
        var result = ProcessRunner.Run("dotnet", [PbmDll, "cluster", "show"],
            new Dictionary<string, string?> { [Endpoint.EnvironmentVariable] = $"127.0.0.1:{port}" }, Limit);
        Assert.Equal(2, result.ExitCode);
        Assert.StartsWith($"pbm: cannot reach 127.0.0.1:{port}: Connection refused", result.StdErr);
    }

    [Fact]
    public async Task A_command_prints_the_nodes_lines()
    {
        await using var node = new ProtocolDouble();
        var (code, stdout, stderr) = await PbmAsync(node.Endpoint, "cluster", "show");
        Assert.Equal((0, "node a up\nnode b up\n", ""), (code, stdout, stderr));
        Assert.Equal(["{\"args\":[\"cluster\",\"show\"],\"json\":false}"], node.Requests.Select(r => r.Text));
    }

    [Fact]
    public async Task Json_asks_the_node_for_json_and_prints_the_value()
    {
        await using var node = new ProtocolDouble();
        var (code, stdout, stderr) = await PbmAsync(node.Endpoint, "cluster", "--json", "show");
        Assert.Equal((0, ""), (code, stderr));
        using var printed = JsonDocument.Parse(stdout);
        Assert.Equal(["a", "b"], printed.RootElement.GetProperty("nodes").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("é", printed.RootElement.GetProperty("name").GetString());
        Assert.Contains("\"é\"", stdout);
        Assert.Equal(["{\"args\":[\"cluster\",\"show\"],\"json\":true}"], node.Requests.Select(r => r.Text));
    }

    [Fact]
    public async Task A_json_value_not_asked_for_is_not_printed()
    {
        await using var node = new ProtocolDouble();
        Assert.Equal((0, "text\n", ""), await PbmAsync(node.Endpoint, "both"));
    }

    [Fact]
    public async Task A_failed_command_exits_1_with_the_nodes_message_on_stderr()
    {
        await using var node = new ProtocolDouble();
        var (code, stdout, stderr) = await PbmAsync(node.Endpoint, "fail", "no such pool: x");
        Assert.Equal((1, "partial\n", "pbm: no such pool: x\n"), (code, stdout, stderr));
    }

    [Fact]
    public async Task A_connection_lost_before_the_exit_line_exits_2()
    {
        await using var node = new ProtocolDouble();
        var (code, stdout, stderr) = await PbmAsync(node.Endpoint, "drop");
        Assert.Equal(2, code);
        Assert.Equal("dropping\n", stdout);
        Assert.Equal($"pbm: cannot reach {node.Endpoint}: connection closed before the command ended\n", stderr);
    }

    [Fact]
    public async Task Ctrl_C_ends_a_tail_with_exit_0_and_closes_the_connection()
    {
        await using var node = new ProtocolDouble();
        var stdout = new LockedWriter();
        var stderr = new LockedWriter();
        var interrupts = new Interrupts();
        var terminal = new Terminal(stdout, stderr, new RedirectedLines(new StringReader(""), stdout), interrupts);
        var run = PbmProgram.RunAsync([node.Endpoint, "cluster", "tail"], terminal, null);
        await Eventually(() => stdout.Text.Contains("event 3\n"));
        interrupts.Interrupt();
        Assert.Equal(0, await run.WaitAsync(Limit));
        Assert.Equal("", stderr.Text);
        await node.Closed.Task.WaitAsync(Limit);
    }

    [Fact]
    public async Task Interactive_runs_commands_from_redirected_stdin_on_one_connection()
    {
        await using var node = new ProtocolDouble();
        var (code, stdout, stderr) = await InteractiveAsync(node.Endpoint,
            "cluster show\n\necho \"my db\" 5\nfail oops\ncluster show --json\nexit\ncluster show\n");
        var prompt = $"pbm {node.Endpoint}> ";
        Assert.Equal(
            $"Connected to {node.Endpoint} (type help, exit to quit)\n" +
            $"{prompt}cluster show\nnode a up\nnode b up\n" +
            $"{prompt}\n" +
            $"{prompt}echo \"my db\" 5\nmy db\n5\n" +
            $"{prompt}fail oops\npartial\n" +
            $"{prompt}cluster show --json\n{{\n  \"nodes\": [\n    \"a\",\n    \"b\"\n  ],\n  \"name\": \"é\"\n}}\n" +
            $"{prompt}exit\n",
            stdout);
        Assert.Equal("pbm: oops\n", stderr);
        Assert.Equal(0, code);
        // The command list for completion first, then each command; all on one connection.
        Assert.Equal([
            "{\"args\":[\"help\"],\"json\":true}",
            "{\"args\":[\"cluster\",\"show\"],\"json\":false}",
            "{\"args\":[\"echo\",\"my db\",\"5\"],\"json\":false}",
            "{\"args\":[\"fail\",\"oops\"],\"json\":false}",
            "{\"args\":[\"cluster\",\"show\"],\"json\":true}",
        ], node.Requests.Select(r => r.Text));
        Assert.All(node.Requests, r => Assert.Equal(1, r.Connection));
    }

    [Fact]
    public async Task Interactive_reconnects_after_a_lost_connection_and_reports_an_open_quote()
    {
        await using var node = new ProtocolDouble();
        var (code, stdout, stderr) = await InteractiveAsync(node.Endpoint, "drop\necho \"x\ncluster show");
        Assert.Contains("dropping\n", stdout);
        Assert.EndsWith("cluster show\nnode a up\nnode b up\n" + $"pbm {node.Endpoint}> \n", stdout);
        Assert.Equal($"pbm: cannot reach {node.Endpoint}: connection closed before the command ended\npbm: unterminated quote\n", stderr);
        Assert.Equal(0, code);
        Assert.Equal([(1, "help"), (1, "drop"), (2, "cluster")],
            node.Requests.Select(r => (r.Connection, JsonDocument.Parse(r.Text).RootElement.GetProperty("args")[0].GetString())));
    }

    [Fact]
    public async Task The_built_pbm_runs_an_interactive_session_from_a_pipe()
    {
        await using var node = new ProtocolDouble();
        var psi = new ProcessStartInfo("dotnet", [PbmDll, node.Endpoint])
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
            StandardInputEncoding = new UTF8Encoding(false),
        };
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardInput.WriteAsync("cluster show\nfail broken\n");
        process.StandardInput.Close();
        using var cts = new CancellationTokenSource(Limit);
        await process.WaitForExitAsync(cts.Token);
        var prompt = $"pbm {node.Endpoint}> ";
        Assert.Equal($"Connected to {node.Endpoint} (type help, exit to quit)\n{prompt}cluster show\nnode a up\nnode b up\n{prompt}fail broken\npartial\n{prompt}\n",
            await stdout);
        Assert.Equal("pbm: broken\n", await stderr);
        // The session ends with its last command's status.
        Assert.Equal(1, process.ExitCode);
        Assert.All(node.Requests, r => Assert.Equal(1, r.Connection));
    }

    private static string PbmDll => Path.Combine(AppContext.BaseDirectory, "pbm.dll");

    private static Task<(int Code, string Out, string Err)> PbmAsync(params string[] args) => RunAsync("", args);

    /// <summary>An interactive session on <paramref name="endpoint"/> reading <paramref name="stdin"/>.</summary>
    private static Task<(int Code, string Out, string Err)> InteractiveAsync(string endpoint, string stdin) => RunAsync(stdin, [endpoint]);

    private static async Task<(int Code, string Out, string Err)> RunAsync(string stdin, string[] args)
    {
        var stdout = new LockedWriter();
        var stderr = new LockedWriter();
        var terminal = new Terminal(stdout, stderr, new RedirectedLines(new StringReader(stdin), stdout), new Interrupts());
        var code = await PbmProgram.RunAsync(args, terminal, null).WaitAsync(Limit);
        return (code, stdout.Text, stderr.Text);
    }

    private static async Task Eventually(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Limit;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out");
            await Task.Delay(20);
        }
    }

    /// <summary>
    /// A stand-in for a node's command endpoint on 127.0.0.1, speaking the protocol for a few made-up commands,
    /// to test the client alone. It records each request with the number of the connection it came on.
    /// </summary>
    private sealed class ProtocolDouble : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();
        private readonly ConcurrentQueue<(int Connection, string Text)> _requests = new();
        private readonly Task _accepting;
        private int _connections;

        public ProtocolDouble()
        {
            _listener.Start();
            _accepting = AcceptAsync();
        }

        public string Endpoint => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";
        public IReadOnlyList<(int Connection, string Text)> Requests => _requests.ToList();

        /// <summary>Completed when a client closes the connection during <c>cluster tail</c>.</summary>
        public TaskCompletionSource Closed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    var socket = await _listener.AcceptSocketAsync(_stop.Token);
                    _ = ServeAsync(socket, Interlocked.Increment(ref _connections));
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        private async Task ServeAsync(Socket socket, int connection)
        {
            using var _ = socket;
            await using var stream = new NetworkStream(socket);
            using var reader = new StreamReader(stream, new UTF8Encoding(false));
            await using var writer = new StreamWriter(stream, new UTF8Encoding(false)) { NewLine = "\n", AutoFlush = true };
            try
            {
                while (await reader.ReadLineAsync(_stop.Token) is { } text)
                {
                    _requests.Enqueue((connection, text));
                    using var request = JsonDocument.Parse(text);
                    var args = request.RootElement.GetProperty("args").EnumerateArray().Select(a => a.GetString()!).ToArray();
                    var json = request.RootElement.GetProperty("json").GetBoolean();
                    if (!await AnswerAsync(args, json, writer))
                        return;
                }
            }
            catch (Exception e) when (e is IOException or OperationCanceledException)
            {
            }
        }

        /// <returns>False when the connection is to be closed.</returns>
        private async Task<bool> AnswerAsync(string[] args, bool json, StreamWriter writer)
        {
            async Task Send(object reply) => await writer.WriteLineAsync(JsonSerializer.Serialize(reply));
            switch (args)
            {
                case ["help"] when json:
                    await Send(new { json = new[] { new { command = "cluster show", args = "", help = "the cluster" } } });
                    break;
                case ["cluster", "show"] when json:
                    await Send(new { json = new { nodes = new[] { "a", "b" }, name = "é" } });
                    break;
                case ["cluster", "show"]:
                    await Send(new { line = "node a up" });
                    await Send(new { line = "node b up" });
                    break;
                case ["both"]:
                    await Send(new { line = "text" });
                    await Send(new { json = new { text = true } });
                    break;
                case ["echo", ..]:
                    foreach (var word in args[1..])
                        await Send(new { line = word });
                    break;
                case ["fail", var message]:
                    await Send(new { line = "partial" });
                    await Send(new { exit = 1, error = message });
                    return true;
                case ["drop"]:
                    await Send(new { line = "dropping" });
                    return false;
                case ["cluster", "tail"]:
                    try
                    {
                        for (var i = 1; ; i++)
                        {
                            await Send(new { line = $"event {i}" });
                            await Task.Delay(10, _stop.Token);
                        }
                    }
                    catch (IOException)
                    {
                        Closed.TrySetResult();
                        return false;
                    }
                default:
                    await Send(new { exit = 1, error = $"unknown command: {string.Join(' ', args)}" });
                    return true;
            }
            await Send(new { exit = 0 });
            return true;
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            await _accepting;
            _stop.Dispose();
        }
    }

    /// <summary>A TextWriter that the program writes to while the test reads it.</summary>
    private sealed class LockedWriter : TextWriter
    {
        private readonly StringBuilder _sb = new();
        public LockedWriter() => NewLine = "\n";
        public override Encoding Encoding => Encoding.UTF8;
        public override void Write(char value) { lock (_sb) _sb.Append(value); }
        public override void Write(string? value) { lock (_sb) _sb.Append(value); }
        public override void Write(char[] buffer, int index, int count) { lock (_sb) _sb.Append(buffer, index, count); }
        public string Text { get { lock (_sb) return _sb.ToString(); } }
    }
}
