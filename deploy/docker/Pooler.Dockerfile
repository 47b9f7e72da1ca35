# Pooler image: the pooler host, pbm and the workload driver, framework-dependent on the ASP.NET runtime
# (the host serves /metrics, /health and /stats with Kestrel). Build context: the repository root.
#
#   docker build -f deploy/docker/Pooler.Dockerfile -t pooler:local .
#
# Configuration is by environment only (see deploy/docker/pooler-entrypoint.sh and deploy/compose.yml).
# The linux VIP driver runs as the non-root user: give the container NET_ADMIN and NET_RAW
# (docker run --cap-add NET_ADMIN --cap-add NET_RAW), nothing more.

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
# Restore first, from the project files alone, so that a source change does not download the packages again.
COPY Directory.Build.props Directory.Packages.props ./
COPY src/Pooler.Actors/Pooler.Actors.csproj src/Pooler.Actors/
COPY src/Pooler.Host/Pooler.Host.csproj src/Pooler.Host/
COPY src/Pbm/Pbm.csproj src/Pbm/
COPY src/Pooler.Workload/Pooler.Workload.csproj src/Pooler.Workload/
RUN dotnet restore src/Pooler.Host/Pooler.Host.csproj \
 && dotnet restore src/Pbm/Pbm.csproj \
 && dotnet restore src/Pooler.Workload/Pooler.Workload.csproj
COPY . .
# One line per project (a test runs the same dotnet publish with the same flags and starts the result).
RUN dotnet publish src/Pooler.Host/Pooler.Host.csproj -c Release -o /out/pooler -p:UseAppHost=false
RUN dotnet publish src/Pbm/Pbm.csproj -c Release -o /out/pbm -p:UseAppHost=false
RUN dotnet publish src/Pooler.Workload/Pooler.Workload.csproj -c Release -o /out/workload -p:UseAppHost=false

FROM mcr.microsoft.com/dotnet/aspnet:10.0
# iproute2, iputils-arping: the linux VIP driver (ip addr replace/change/del, arping -U); the entrypoint reads
# the node's address with ip. curl: the HEALTHCHECK. libcap2-bin: setcap below. util-linux: setpriv.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 iputils-arping curl libcap2-bin util-linux \
 && rm -rf /var/lib/apt/lists/*

# The VIP as a non-root user. `ip` drops every capability when run by a non-root user unless CAP_NET_ADMIN is
# in the caller's inheritable set (iproute2's drop_cap), so file capabilities on ip itself do nothing. Instead a
# private copy of setpriv, executable by the pooler group only, holds cap_net_admin and cap_net_raw as permitted
# file capabilities and hands them to ip and arping as ambient capabilities; the pooler runs those through the
# two wrappers (pooler.vip.ip-command and arping-command, set below). They work only in a container that was
# given NET_ADMIN and NET_RAW; elsewhere they fail with "apply capabilities: Operation not permitted".
RUN groupadd --system --gid 10001 pooler \
 && useradd --system --uid 10001 --gid pooler --create-home --home-dir /home/pooler --shell /usr/sbin/nologin pooler \
 && install -d -m 0755 /usr/local/libexec/pooler \
 && cp "$(command -v setpriv)" /usr/local/libexec/pooler/setpriv-net \
 && chown root:pooler /usr/local/libexec/pooler/setpriv-net \
 && chmod 0750 /usr/local/libexec/pooler/setpriv-net \
 && setcap cap_net_admin,cap_net_raw+p /usr/local/libexec/pooler/setpriv-net \
 && getcap /usr/local/libexec/pooler/setpriv-net | grep -q cap_net_admin \
 && printf '#!/bin/sh\n# ip with CAP_NET_ADMIN for the pooler user (see Pooler.Dockerfile)\nexec /usr/local/libexec/pooler/setpriv-net --inh-caps=+net_admin --ambient-caps=+net_admin -- %s "$@"\n' \
      "$(command -v ip)" >/usr/local/libexec/pooler/vip-ip \
 && printf '#!/bin/sh\n# arping with CAP_NET_RAW for the pooler user (see Pooler.Dockerfile)\nexec /usr/local/libexec/pooler/setpriv-net --inh-caps=+net_raw --ambient-caps=+net_raw -- %s "$@"\n' \
      "$(command -v arping)" >/usr/local/libexec/pooler/vip-arping \
 && chmod 0755 /usr/local/libexec/pooler/vip-ip /usr/local/libexec/pooler/vip-arping \
 && printf '#!/bin/sh\nexec dotnet /app/pbm/pbm.dll "$@"\n' >/usr/local/bin/pbm \
 && chmod 0755 /usr/local/bin/pbm

COPY --from=build /out/pooler /app/pooler
COPY --from=build /out/pbm /app/pbm
COPY --from=build /out/workload /app/workload
COPY deploy/docker/pooler-entrypoint.sh /usr/local/bin/pooler-entrypoint.sh
RUN chmod 0755 /usr/local/bin/pooler-entrypoint.sh

ENV POOLER_HOME=/app/pooler \
    POOLER__VIP__IP_COMMAND=/usr/local/libexec/pooler/vip-ip \
    POOLER__VIP__ARPING_COMMAND=/usr/local/libexec/pooler/vip-arping

# 6432 clients (and the VIP), 9110 pbm (127.0.0.1 unless pooler.pbm.host says otherwise), 8404 HTTP, 4053 Akka.Remote
EXPOSE 6432 9110 8404 4053

USER pooler
WORKDIR /home/pooler

# /health: 200 while the node is an Up member, not draining, with a backend that accepts connections.
# Needs pooler.http.host to include 127.0.0.1 (the default, or 0.0.0.0). Twelve tries cover the start
# (no --start-period: dockerfilelint 1.8 rejects it).
HEALTHCHECK --interval=5s --timeout=3s --retries=12 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8404/health || exit 1

ENTRYPOINT ["pooler-entrypoint.sh"]
