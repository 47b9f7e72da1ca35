using Akka.Actor;
using Akka.Event;

namespace Pooler.Actors.Client;

/// <summary>
/// Works around a race in Akka.IO 1.5.74's TcpListener: it starts accepting inside its bind step, so
/// connections that arrive as the port opens complete their accepts before the listener has switched
/// to its bound behaviour; those completions are unhandled and dropped, and each dropped one is an
/// accept slot that never re-arms (with all slots lost the port stays open but nobody is answered).
/// Unhandled messages are published on the event stream, so this actor hands such completions back
/// to their listener a moment later, when it is bound and handles them.
/// </summary>
public sealed class AcceptRaceGuard : ReceiveActor
{
    public static Props Props() => Akka.Actor.Props.Create(() => new AcceptRaceGuard());

    private const string AcceptCompleted = "AcceptCompleted";

    public AcceptRaceGuard()
    {
        Context.System.EventStream.Subscribe(Self, typeof(UnhandledMessage));
        Receive<UnhandledMessage>(u =>
        {
            if (u.Message.GetType().Name != AcceptCompleted || u.Recipient is not { } listener) return;
            Context.System.Scheduler.ScheduleTellOnce(TimeSpan.FromMilliseconds(5), listener, u.Message, u.Sender);
        });
    }

    protected override void PostStop() => Context.System.EventStream.Unsubscribe(Self);
}
