# Lighthouse image: the cluster's seed node (role lighthouse, no pools; it votes in the split-brain resolver's
# and the VIP lease's majority) and pbm. Framework-dependent on the ASP.NET runtime: the Lighthouse links
# Pooler.Actors, whose runtimeconfig asks for Microsoft.AspNetCore.App. Build context: the repository root.
#
#   docker build -f deploy/docker/Lighthouse.Dockerfile -t pooler-lighthouse:local .
#
# Configuration: CLUSTER_IP (the name or address the other nodes use as its seed address), CLUSTER_PORT,
# CLUSTER_SEEDS; see deploy/docker/lighthouse-entrypoint.sh. lighthouse.hocon ships beside Lighthouse.dll.

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY Directory.Build.props Directory.Packages.props ./
COPY src/Pooler.Actors/Pooler.Actors.csproj src/Pooler.Actors/
COPY src/Lighthouse/Lighthouse.csproj src/Lighthouse/
COPY src/Pbm/Pbm.csproj src/Pbm/
RUN dotnet restore src/Lighthouse/Lighthouse.csproj \
 && dotnet restore src/Pbm/Pbm.csproj
COPY . .
# One line per project (a test runs the same dotnet publish with the same flags and starts the result).
RUN dotnet publish src/Lighthouse/Lighthouse.csproj -c Release -o /out/lighthouse -p:UseAppHost=false
RUN dotnet publish src/Pbm/Pbm.csproj -c Release -o /out/pbm -p:UseAppHost=false
RUN test -f /out/lighthouse/lighthouse.hocon

FROM mcr.microsoft.com/dotnet/aspnet:10.0
# iproute2: the entrypoint reads the node's address with ip when CLUSTER_IP is not set.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 pooler \
 && useradd --system --uid 10001 --gid pooler --create-home --home-dir /home/pooler --shell /usr/sbin/nologin pooler \
 && printf '#!/bin/sh\nexec dotnet /app/pbm/pbm.dll "$@"\n' >/usr/local/bin/pbm \
 && chmod 0755 /usr/local/bin/pbm

COPY --from=build /out/lighthouse /app/lighthouse
COPY --from=build /out/pbm /app/pbm
COPY deploy/docker/lighthouse-entrypoint.sh /usr/local/bin/lighthouse-entrypoint.sh
RUN chmod 0755 /usr/local/bin/lighthouse-entrypoint.sh

# lighthouse.hocon puts pbm's endpoint on 127.0.0.1:9111 (9110 stays free for a pooler node on the same host):
# `docker exec lighthouse pbm cluster show` finds it through PBM_ENDPOINT.
ENV LIGHTHOUSE_HOME=/app/lighthouse \
    PBM_ENDPOINT=127.0.0.1:9111

# 4053 Akka.Remote, 9111 pbm (127.0.0.1 unless POOLER__PBM__HOST says otherwise)
EXPOSE 4053 9111

USER pooler
WORKDIR /home/pooler

# Healthy while its pbm endpoint answers (the process is up and its actor system runs).
HEALTHCHECK --interval=5s --timeout=5s --retries=12 \
  CMD pbm node status >/dev/null || exit 1

ENTRYPOINT ["lighthouse-entrypoint.sh"]
