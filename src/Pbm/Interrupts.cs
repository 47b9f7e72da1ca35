namespace Pbm;

/// <summary>
/// Ctrl-C: it stops the running command (a <c>cluster tail</c>, usually) and, with none running, ends the session.
/// </summary>
internal sealed class Interrupts
{
    private readonly CancellationTokenSource _session = new();
    private readonly Lock _gate = new();
    private CancellationTokenSource? _command;

    public CancellationToken Session => _session.Token;

    /// <summary>A token for one command, cancelled by the next Ctrl-C; dispose it when the command ends.</summary>
    public Command BeginCommand()
    {
        lock (_gate)
        {
            _command = CancellationTokenSource.CreateLinkedTokenSource(_session.Token);
            return new Command(this, _command);
        }
    }

    public void Interrupt()
    {
        lock (_gate)
        {
            if (_command is { } command)
                command.Cancel();
            else
                _session.Cancel();
        }
    }

    public sealed class Command(Interrupts owner, CancellationTokenSource source) : IDisposable
    {
        public CancellationToken Token => source.Token;

        /// <summary>True when Ctrl-C (not a failure) ended the command.</summary>
        public bool Interrupted => source.IsCancellationRequested;

        public void Dispose()
        {
            lock (owner._gate)
            {
                if (owner._command == source)
                    owner._command = null;
            }
            source.Dispose();
        }
    }
}
