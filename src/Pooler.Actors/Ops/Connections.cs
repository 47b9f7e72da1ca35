using System.Collections.Concurrent;
using Akka.Actor;

namespace Pooler.Actors.Ops;

/// <summary>One row of SHOW CLIENTS / SHOW SERVERS (PgBouncer's columns; times in UTC).</summary>
public sealed record ConnRow(
    string Type, string User, string Database, string State, string Addr, int Port, string LocalAddr, int LocalPort,
    DateTime ConnectTime, DateTime RequestTime, long WaitUs, string Ptr, string Link, int RemotePid, string ApplicationName, string Node = "", string Tls = "");

/// <summary>A session that can describe itself for SHOW CLIENTS/SERVERS. Read from another thread: display only.</summary>
public interface IConnView
{
    ConnRow Row();
}

/// <summary>
/// The node's logged-in clients and its servers, for SHOW CLIENTS/SERVERS, KILL and the pool counts.
/// Sessions add themselves when they log in and remove themselves when they stop, nothing per query.
/// </summary>
public sealed class ConnectionRegistry
{
    private readonly ConcurrentDictionary<IActorRef, IConnView> _clients = new();
    private readonly ConcurrentDictionary<IActorRef, IConnView> _servers = new();

    public void AddClient(IActorRef session, IConnView view) => _clients[session] = view;
    public void RemoveClient(IActorRef session) => _clients.TryRemove(session, out _);
    public void AddServer(IActorRef session, IConnView view) => _servers[session] = view;
    public void RemoveServer(IActorRef session) => _servers.TryRemove(session, out _);

    public IReadOnlyList<(IActorRef Session, ConnRow Row)> Clients() => _clients.Select(kv => (kv.Key, kv.Value.Row())).ToList();
    public IReadOnlyList<(IActorRef Session, ConnRow Row)> Servers() => _servers.Select(kv => (kv.Key, kv.Value.Row())).ToList();

    public int ClientCount => _clients.Count;
    public int ServerCount => _servers.Count;
}
