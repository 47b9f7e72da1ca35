using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Pbm;

internal static class Program
{
    private static async Task<int> Main(string[] args)
    {
        var stdout = new StreamWriter(StandardOutput(), new UTF8Encoding(false)) { AutoFlush = true };
        var stderr = new StreamWriter(Console.OpenStandardError(), new UTF8Encoding(false)) { AutoFlush = true };
        var interrupts = new Interrupts();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            interrupts.Interrupt();
        };
        // The editor draws with terminal escapes: only when both ends are a terminal.
        ILineReader input = Console.IsInputRedirected || Console.IsOutputRedirected
            ? new RedirectedLines(new StreamReader(Console.OpenStandardInput(), new UTF8Encoding(false)), stdout)
            : new LineEditor(stdout);
        try
        {
            return await PbmProgram.RunAsync(args, new Terminal(stdout, stderr, input, interrupts),
                Environment.GetEnvironmentVariable(Endpoint.EnvironmentVariable));
        }
        catch (IOException)
        {
            // stdout went away (`pbm ... cluster tail | head`): nothing left to print to. Network errors never get
            // here; the client reports them as an unreachable node.
            return PbmProgram.Ok;
        }
    }

    // Console's own stream swallows a closed pipe, which would leave `pbm ... cluster tail | head` running
    // forever; a plain stream on descriptor 1 reports it.
    // A regular file (`pbm ... >> log`) keeps Console's stream: a FileStream would write at its own offset, not append.
    private static Stream StandardOutput()
    {
        if (OperatingSystem.IsWindows()) return Console.OpenStandardOutput();
        var fd = new FileStream(new SafeFileHandle(1, ownsHandle: false), FileAccess.Write, bufferSize: 0);
        if (!fd.CanSeek) return fd;
        fd.Dispose();
        return Console.OpenStandardOutput();
    }
}
