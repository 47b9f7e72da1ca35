using Akka.Actor;
using Akka.IO;

namespace Pooler.Actors.Pooling;

/// <summary>
/// Backpressure for one direction of a relay: bytes read from <c>source</c> (a socket actor in push
/// mode) are written to a target socket actor. Akka.IO queues writes without bound, so one write in
/// every 64 KiB asks for an ack, and reading pauses while two such acks are outstanding: at most a
/// few hundred KiB are ever queued for a slow reader. Small queries never ask for an ack at all.
/// </summary>
public sealed class RelayFlow(IActorRef source, IActorRef self)
{
    private const int AckEveryBytes = 64 * 1024;
    private const int MaxAcksInFlight = 2;

    private bool _suspended;
    private int _unackedBytes, _acksInFlight;

    /// <summary>Once set (the session is closing), reading is never resumed.</summary>
    public bool Closed { get; set; }

    public void Resume()
    {
        if (!_suspended || Closed) return;
        _suspended = false;
        source.Tell(Tcp.ResumeReading.Instance, self);
    }

    public void Suspend()
    {
        if (_suspended) return;
        _suspended = true;
        source.Tell(Tcp.SuspendReading.Instance, self);
    }

    /// <summary>A new target (link): acks still due from the previous one no longer count.</summary>
    public void NewTarget()
    {
        _unackedBytes = 0;
        _acksInFlight = 0;
    }

    public void Write(IActorRef target, ByteString data, Tcp.Event ack)
    {
        _unackedBytes += data.Count;
        if (_unackedBytes < AckEveryBytes)
        {
            target.Tell(Tcp.Write.Create(data), self);
            return;
        }
        _unackedBytes = 0;
        if (++_acksInFlight >= MaxAcksInFlight) Suspend();
        target.Tell(Tcp.Write.Create(data, ack), self);
    }

    public void Acked()
    {
        _acksInFlight--;
        if (_acksInFlight < MaxAcksInFlight) Resume();
    }
}
