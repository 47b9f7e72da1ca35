using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Akka.Actor;
using Akka.Event;
using Akka.IO;
using Pooler.Actors.Config;

namespace Pooler.Actors.Ops;

/// <summary>
/// pbm's command endpoint (<c>pooler.pbm</c>): binds with Akka.IO and starts a <see cref="PbmSession"/> per
/// connection. Connections from other hosts are refused unless allow-remote is on.
/// </summary>
public sealed class PbmEndpoint : ReceiveActor
{
    public const string Name = "pbm";

    public static Props Props(PbmSettings settings, IPEndPoint endpoint, IActorRef ops, TaskCompletionSource<EndPoint> bound)
        => Akka.Actor.Props.Create(() => new PbmEndpoint(settings, endpoint, ops, bound));

    /// <summary>Starts the endpoint at <c>/user/pbm</c>; completes with the bound address (throws if it cannot bind).</summary>
    public static async Task<EndPoint> StartAsync(ActorSystem system, PbmSettings settings, IActorRef ops)
    {
        var bound = new TaskCompletionSource<EndPoint>(TaskCreationOptions.RunContinuationsAsynchronously);
#pragma warning disable AK1008 // a static starter called by the host, not from inside the actor
        system.ActorOf(Props(settings, new IPEndPoint(await BindAddress.ResolveAsync(settings.Host), settings.Port), ops, bound), Name);
#pragma warning restore AK1008
        return await bound.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }

    private readonly ILoggingAdapter _log = Context.GetLogger();
    private long _seq;

    public PbmEndpoint(PbmSettings settings, IPEndPoint endpoint, IActorRef ops, TaskCompletionSource<EndPoint> bound)
    {
        Context.System.Tcp().Tell(new Tcp.Bind(Self, endpoint, options: [new Inet.SO.ReuseAddress(true)], pullMode: false));
        Receive<Tcp.Bound>(b =>
        {
            _log.Info("pbm endpoint: accepting commands on {0}", b.LocalAddress);
            bound.TrySetResult(b.LocalAddress);
        });
        Receive<Tcp.CommandFailed>(f =>
        {
            bound.TrySetException(new InvalidOperationException($"pbm endpoint cannot listen on {endpoint}: {(f.Cause.HasValue ? f.Cause.Value.Message : "bind failed")}"));
            Context.Stop(Self);
        });
        Receive<Tcp.Connected>(c =>
        {
            var remote = c.RemoteAddress as IPEndPoint;
            if (!settings.AllowRemote && (remote == null || !IPAddress.IsLoopback(remote.Address)))
            {
                _log.Warning("pbm endpoint: refused {0} (only local connections; set pooler.pbm.allow-remote)", c.RemoteAddress);
                Sender.Tell(new Tcp.Register(Self));
                Sender.Tell(Tcp.Close.Instance);
                return;
            }
            Context.ActorOf(PbmSession.Props(Sender, ops, c.RemoteAddress.ToString() ?? "?"), $"session-{++_seq}");
        });
        Receive<Tcp.ConnectionClosed>(_ => { });
    }
}

/// <summary>
/// One pbm connection: newline-delimited JSON requests <c>{"args":[...],"json":bool}</c>, answered with
/// <c>{"line":...}</c> lines, an optional <c>{"json":...}</c>, and <c>{"exit":N[,"error":...]}</c>, one
/// request at a time. <c>cluster tail</c> streams lines until the client hangs up.
/// </summary>
public sealed class PbmSession : ReceiveActor
{
    private sealed record Done(PbmResult Result);
    private const int MaxLine = 64 * 1024;

    public static Props Props(IActorRef conn, IActorRef ops, string remote) => Akka.Actor.Props.Create(() => new PbmSession(conn, ops, remote));

    private readonly IActorRef _conn;
    private readonly PbmCommands _commands;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly List<byte> _pending = new();
    private bool _busy, _tailing, _json;

    public PbmSession(IActorRef conn, IActorRef ops, string remote)
    {
        _conn = conn;
        _commands = new PbmCommands(Context.System, ops);
        conn.Tell(new Tcp.Register(Self));
        Context.Watch(conn);
        Receive<Tcp.Received>(r =>
        {
            if (_tailing) return; // a tail ends when the client hangs up
            _pending.AddRange(r.Data.ToArray());
            if (_pending.Count > MaxLine && !_pending.Contains((byte)'\n'))
            {
                Write(new JsonObject { ["exit"] = 1, ["error"] = "request too long" });
                _conn.Tell(Tcp.Close.Instance);
                return;
            }
            Next();
        });
        Receive<Done>(d =>
        {
            _busy = false;
            // --json: the value alone, so `pbm ... --json | jq` reads clean JSON
            if (!_json || d.Result.Json == null) foreach (var line in d.Result.Lines) Write(new JsonObject { ["line"] = line });
            if (_json && d.Result.Json != null) Write(new JsonObject { ["json"] = d.Result.Json });
            var end = new JsonObject { ["exit"] = d.Result.Exit };
            if (d.Result.Error != null) end["error"] = d.Result.Error;
            Write(end);
            Next();
        });
        Receive<string>(line => Write(new JsonObject { ["line"] = line })); // tail events
        Receive<Tcp.ConnectionClosed>(_ => Context.Stop(Self));
        Receive<Terminated>(_ => Context.Stop(Self));
        Receive<Tcp.Event>(_ => { });
        _log.Debug("pbm session {0}: connected", remote);
    }

    private void Next()
    {
        if (_busy || _tailing) return;
        var nl = _pending.IndexOf((byte)'\n');
        if (nl < 0) return;
        var text = Encoding.UTF8.GetString(_pending.GetRange(0, nl).ToArray()).Trim();
        _pending.RemoveRange(0, nl + 1);
        if (text.Length == 0) { Next(); return; }
        string[] args;
        bool json;
        try
        {
            var req = JsonNode.Parse(text) as JsonObject ?? throw new JsonException("not an object");
            args = (req["args"] as JsonArray ?? throw new JsonException("no args")).Select(a => a?.GetValue<string>() ?? "").ToArray();
            json = req["json"]?.GetValue<bool>() ?? false;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            Self.Tell(new Done(PbmResult.Fail($"bad request: {e.Message}")));
            _busy = true;
            return;
        }
        if (args is ["cluster", "tail"])
        {
            _tailing = true;
            Context.ActorOf(ClusterTail.Props(Self), "tail");
            return;
        }
        _busy = true;
        _json = json;
        var self = Self;
        _commands.RunAsync(args, json).ContinueWith(t => new Done(t.IsCompletedSuccessfully ? t.Result : PbmResult.Fail(t.Exception?.GetBaseException().Message ?? "failed")))
            .PipeTo(self);
    }

    private void Write(JsonObject o) => _conn.Tell(Tcp.Write.Create(ByteString.FromBytes(Encoding.UTF8.GetBytes(o.ToJsonString() + "\n"))));

    protected override void PostStop() => _conn.Tell(Tcp.Close.Instance);
}

/// <summary>Streams membership and reachability events as text lines to its parent (pbm cluster tail).</summary>
public sealed class ClusterTail : ReceiveActor
{
    public static Props Props(IActorRef target) => Akka.Actor.Props.Create(() => new ClusterTail(target));

    public ClusterTail(IActorRef target)
    {
        var clustered = Cluster.ClusterConfig.IsClustered(Context.System);
        if (!clustered) target.Tell("this node is not in a cluster: no events");
        else
            Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, Akka.Cluster.ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
                typeof(Akka.Cluster.ClusterEvent.IMemberEvent), typeof(Akka.Cluster.ClusterEvent.IReachabilityEvent), typeof(Akka.Cluster.ClusterEvent.LeaderChanged));
        Receive<Akka.Cluster.ClusterEvent.IClusterDomainEvent>(e => target.Tell($"{DateTime.UtcNow:HH:mm:ss.fff} {Describe(e)}"));
    }

    private static string Describe(Akka.Cluster.ClusterEvent.IClusterDomainEvent e) => e switch
    {
        Akka.Cluster.ClusterEvent.IMemberEvent m => $"{m.GetType().Name.Replace("Member", "member ")} {m.Member.Address} status={m.Member.Status} roles={string.Join(",", m.Member.Roles)}",
        Akka.Cluster.ClusterEvent.UnreachableMember u => $"unreachable {u.Member.Address}",
        Akka.Cluster.ClusterEvent.ReachableMember r => $"reachable again {r.Member.Address}",
        Akka.Cluster.ClusterEvent.LeaderChanged l => $"leader {l.Leader?.ToString() ?? "(none)"}",
        _ => e.ToString() ?? "",
    };

    protected override void PostStop()
    {
        if (Cluster.ClusterConfig.IsClustered(Context.System)) Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
    }
}
