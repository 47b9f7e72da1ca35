using System.Net;
using Akka.Actor;
using Akka.Event;
using Akka.IO;
using Pooler.Actors.Cluster;
using Pooler.Actors.Protocol;

namespace Pooler.Actors.Client;

/// <summary>
/// Binds the listen address (Akka.IO) and
/// starts one ClientSession per connection; past max-client-conn the session only says 53300.
/// As the VIP's listener (<c>route</c>) it spreads new clients leastconn over the cluster's pooler nodes,
/// relaying those it sends elsewhere (<see cref="TcpRelay"/>).
/// </summary>
public sealed class Listener : ReceiveActor
{
    public sealed record Unbind;
    /// <summary>Refuse new clients and ask every client to leave at its next transaction boundary.</summary>
    public sealed record DrainAll;

    public static Props Props(PoolerRuntime rt, EndPoint endpoint, TaskCompletionSource<EndPoint> bound, bool route = false)
        => Akka.Actor.Props.Create(() => new Listener(rt, endpoint, bound, route));

    private readonly ILoggingAdapter _log = Context.GetLogger();
    private IActorRef _socket = ActorRefs.Nobody;
    private long _seq;
    private bool _draining;
    private readonly LeastConn? _router;

    public Listener(PoolerRuntime rt, EndPoint endpoint, TaskCompletionSource<EndPoint> bound, bool route)
    {
        if (route)
        {
            _router = new LeastConn(Akka.Cluster.Cluster.Get(Context.System).SelfAddress);
            Context.ActorOf(VipTargets.Props(), "targets");
        }
        // SO_REUSEADDR, as PgBouncer and PostgreSQL do: a restart must not fail on a connection of the
        // previous process still in TIME_WAIT on the listen port
        Context.System.Tcp().Tell(new Tcp.Bind(Self, endpoint, backlog: 4096,
            options: [new Inet.SO.ReuseAddress(true)], pullMode: false));
        Receive<Tcp.Bound>(b =>
        {
            _socket = Sender;
            _log.Info("listener node {0}: accepting on {1}", rt.NodeName, b.LocalAddress);
            bound.TrySetResult(b.LocalAddress);
        });
        Receive<Tcp.CommandFailed>(f =>
        {
            bound.TrySetException(new InvalidOperationException($"cannot listen on {endpoint}: {(f.Cause.HasValue ? f.Cause.Value.Message : "bind failed")}"));
            Context.Stop(Self);
        });
        Receive<Tcp.Connected>(c =>
        {
            var remote = c.RemoteAddress.ToString() ?? "?";
            if (_router is not null && !_draining && _router.Choose(DateTime.UtcNow) is { Endpoint: { } target } choice)
            {
                var relay = Context.ActorOf(TcpRelay.Props(Sender, remote, target, choice.Node), $"relay-{++_seq}");
                Context.Watch(relay);
                _router.Started(relay, choice.Node);
                return;
            }
            Serve(rt, Sender, remote);
        });
        Receive<TcpRelay.Failed>(f =>
        {
            // the node did not answer: this client is served here, and the node is left out for a while
            _log.Warning("listener node {0}: cannot relay client {1} to {2} ({3}); serving it here", rt.NodeName, f.Remote, f.Node, f.Reason);
            _router?.Suspect(f.Node, DateTime.UtcNow);
            Serve(rt, f.Client, f.Remote);
        });
        Receive<VipTargets.Changed>(t => _router?.SetRemotes(t.Remotes));
        Receive<Terminated>(t => _router?.Ended(t.ActorRef));
        Receive<Unbind>(_ => _socket.Tell(Tcp.Unbind.Instance));
        Receive<Tcp.Unbound>(_ => _log.Info("listener node {0}: stopped accepting", rt.NodeName));
        Receive<DrainAll>(_ =>
        {
            // Akka.IO's accepted connections are children of its listener: unbinding now would cut every
            // open client. Stay bound, refuse newcomers, and unbind when the node stops.
            _draining = true;
            _log.Info("listener node {0}: draining, new clients are refused", rt.NodeName);
            foreach (var child in Context.GetChildren()) child.Tell(new ClientSession.Drain());
        });
    }

    private void Serve(PoolerRuntime rt, IActorRef connection, string remote)
    {
        ClientSession.Refusal? refusal = _draining
            ? new(SqlState.CannotConnectNow, "the pooler is shutting down")
            : rt.ClientCount >= rt.Settings.MaxClientConn
                ? new(SqlState.TooManyConnections, "no more connections allowed (max_client_conn)")
                : null;
        var session = Context.ActorOf(ClientSession.Props(rt, connection, remote, refusal), $"client-{++_seq}");
        if (_router is null) return;
        Context.Watch(session);
        _router.Started(session, _router.Self);
    }
}
