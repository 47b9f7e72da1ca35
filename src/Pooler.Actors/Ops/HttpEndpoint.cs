using System.Net;
using System.Text.Json;
using Akka.Actor;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Pooler.Actors.Cluster;
using Pooler.Actors.Config;
using Prometheus;

namespace Pooler.Actors.Ops;

/// <summary>
/// <c>pooler.http</c> on Kestrel: <c>/metrics</c> (Prometheus text), <c>/health</c> (200 when the node is
/// Up, not draining and a backend answers; 503 otherwise, for load balancers and Kubernetes probes),
/// <c>/stats</c> (a self-refreshing page like HAProxy's) and <c>/stats.json</c> (what the page shows).
/// The data comes from the node's OpsAgent; nothing here is on the query path.
/// </summary>
public sealed class HttpEndpoint : IAsyncDisposable
{
    private readonly WebApplication _app;

    private HttpEndpoint(WebApplication app, int port)
    {
        _app = app;
        Port = port;
    }

    public int Port { get; }

    public static async Task<HttpEndpoint> StartAsync(ActorSystem system, IActorRef ops, HttpSettings settings)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        var listen = await BindAddress.ResolveAsync(settings.Host);
        builder.WebHost.ConfigureKestrel(k => k.Listen(listen, settings.Port));
        var app = builder.Build();
        var clustered = Pooler.Actors.Cluster.ClusterConfig.IsClustered(system);
        var timeout = TimeSpan.FromSeconds(5);

        async Task<OpsAgent.ClusterReport?> Cluster() => clustered ? await ops.Ask<OpsAgent.ClusterReport>(new OpsAgent.GetCluster(), timeout) : null;

        app.MapGet("/metrics", async (HttpContext ctx) =>
        {
            PoolerMetrics.Update(await ops.Ask<NodeReport>(new OpsAgent.GetReport(false), timeout), await Cluster());
            ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await Metrics.DefaultRegistry.CollectAndExportAsTextAsync(ctx.Response.Body, ctx.RequestAborted);
        });
        app.MapGet("/health", async (HttpContext ctx) =>
        {
            var status = clustered ? Akka.Cluster.Cluster.Get(system).SelfMember.Status.ToString() : "Up";
            NodeReport node;
            try { node = await ops.Ask<NodeReport>(new OpsAgent.GetReport(false), timeout); }
            catch (Exception e) when (e is AskTimeoutException or TaskCanceledException)
            {
                // a node too busy or too far into its shutdown to answer should not get traffic either
                ctx.Response.StatusCode = 503;
                await ctx.Response.WriteAsJsonAsync(new { status = "unavailable", reason = "the node did not answer", member = status });
                return;
            }
            var reason = node.Draining ? "draining" : status != "Up" ? $"cluster member status {status}" : !node.BackendReachable ? "no backend reachable" : null;
            ctx.Response.StatusCode = reason == null ? 200 : 503;
            await ctx.Response.WriteAsJsonAsync(new { status = reason == null ? "ok" : "unavailable", reason, member = status, node.Draining, backend_reachable = node.BackendReachable });
        });
        app.MapGet("/stats.json", async (HttpContext ctx) =>
        {
            var cluster = await Cluster();
            // pooler nodes (the Lighthouse has no pools; it is among the members); one that did not answer is named, not left out
            var (reports, missing) = await OpsAgent.GatherAsync(system, ops, false, timeout);
            ctx.Response.ContentType = "application/json";
            await JsonSerializer.SerializeAsync(ctx.Response.Body, new
            {
                generated = DateTime.UtcNow,
                members = cluster?.Members ?? [],
                vip = cluster?.Vip,
                missing,
                nodes = reports.Select(r => new
                {
                    r.Node, r.Address, r.Roles, r.Draining, r.BackendReachable, r.Clients, r.Servers, r.StartedAt,
                    pools = r.Pools.Select(p => new
                    {
                        p.Info.Database, p.Info.User, p.Info.Mode, p.Info.PoolSize, p.Info.Paused, maxwait_ms = p.Info.MaxWaitUs / 1000,
                        p.ClActive, p.ClWaiting, p.SvActive, p.SvIdle, p.SvUsed, p.SvTested, p.SvLogin, p.Info.Totals,
                        xacts_per_second = p.PeriodSeconds > 0 ? p.LastPeriod.Xacts / p.PeriodSeconds : 0,
                    }),
                }),
            }, PbmCommands.JsonOptions, ctx.RequestAborted);
        });
        app.MapGet("/stats", () => Results.Content(StatsPage.Html, "text/html; charset=utf-8"));
        app.MapGet("/", () => Results.Redirect("/stats"));
        await app.StartAsync();
        var address = app.Services.GetService(typeof(IServer)) is IServer server
            ? server.Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault() : null;
        var port = address != null ? new Uri(address.Replace("0.0.0.0", "127.0.0.1")).Port : settings.Port;
        return new HttpEndpoint(app, port);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
