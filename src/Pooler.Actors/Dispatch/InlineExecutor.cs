using Akka.Configuration;
using Akka.Dispatch;

namespace Pooler.Actors.Dispatch;

/// <summary>
/// Executor for <c>akka.actor.default-dispatcher</c> (where Akka.IO's connection actors and the
/// sessions run): a mailbox scheduled from a thread-pool thread runs right there, nested in the
/// sender's turn, instead of being queued for another thread. A query then travels socket callback →
/// connection actor → session → other socket's send on one thread, as in an event loop, where the
/// stock executor hands it between threads about nine times (each a queue operation and often a
/// thread wake-up: most of the pooler's CPU on a 2-core machine). Actor semantics hold: a mailbox
/// still runs on one thread at a time (Akka's mailbox status guards that), and an actor already
/// running only gets the message queued. Nesting is capped by <c>inline-max-depth</c>; beyond it,
/// and from non-pool threads (the scheduler, the main thread), mailboxes go to the thread pool.
/// Nothing may block inside an actor on this dispatcher (loggers therefore run on the internal one).
/// </summary>
public sealed class InlineExecutorConfigurator(Akka.Configuration.Config config, IDispatcherPrerequisites prerequisites)
    : ExecutorServiceConfigurator(config, prerequisites)
{
    public override ExecutorService Produce(string id)
        => new InlineExecutor(id, Math.Max(0, Config.GetInt("inline-max-depth", 4)));
}

public sealed class InlineExecutor(string id, int maxDepth) : ExecutorService(id)
{
    [ThreadStatic] private static int _depth;
    [ThreadStatic] private static int _kind; // 0 unknown, 1 may run mailboxes, 2 may not

    /// <summary>
    /// Pool threads, and .NET's socket event thread when completions are inlined
    /// (DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1, set by the host): then a read is handled
    /// on the thread that saw it, end to end, with no thread hand-off at all.
    /// </summary>
    private static bool MayInline()
    {
        if (_kind == 0)
        {
            var t = Thread.CurrentThread;
            _kind = t.IsThreadPoolThread || t.Name is ".NET Sockets" or ".NET SocketEngine" ? 1 : 2;
        }
        return _kind == 1;
    }

    public override void Execute(IRunnable run)
    {
        if (_depth < maxDepth && MayInline())
        {
            _depth++;
            try { run.Run(); }
            finally { _depth--; }
            return;
        }
        ThreadPool.UnsafeQueueUserWorkItem(run, preferLocal: true);
    }

    public override void Shutdown() { }
}
