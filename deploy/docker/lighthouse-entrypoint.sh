#!/bin/sh
# Entry point of the Lighthouse image (the cluster's seed node, no pools), and what the network-namespace test runs
# in place of a container. Configuration from the environment:
#
#   CLUSTER_IP        this node's address; default: the first IPv4 address of CLUSTER_INTERFACE (default eth0)
#   CLUSTER_PORT      Akka.Remote port (default 4053)
#   CLUSTER_SEEDS     comma list of akka.tcp://pooler@host:port; default: this node itself
#   POOLER__PBM__..., AKKA__...  as for the pooler (e.g. POOLER__PBM__HOST=0.0.0.0)
#   LIGHTHOUSE_HOME   folder of Lighthouse.dll (default /app/lighthouse); DOTNET (default dotnet)
# Arguments are passed to the Lighthouse (a HOCON file). SIGTERM reaches it itself (exec): it leaves the cluster.
set -eu

: "${LIGHTHOUSE_HOME:=/app/lighthouse}" "${DOTNET:=dotnet}" "${CLUSTER_INTERFACE:=eth0}" "${CLUSTER_PORT:=4053}"

if [ -z "${CLUSTER_IP:-}" ]; then
  CLUSTER_IP=$(ip -4 -o addr show dev "$CLUSTER_INTERFACE" 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }' || true)
  [ -n "$CLUSTER_IP" ] || CLUSTER_IP=$(hostname -i 2>/dev/null | awk '{ print $1 }')
  [ -n "$CLUSTER_IP" ] || { echo "lighthouse-entrypoint: set CLUSTER_IP (no IPv4 address on $CLUSTER_INTERFACE)" >&2; exit 2; }
fi
export CLUSTER_IP CLUSTER_PORT

echo "lighthouse-entrypoint: node $CLUSTER_IP:$CLUSTER_PORT seeds ${CLUSTER_SEEDS:-itself}"
exec "$DOTNET" "$LIGHTHOUSE_HOME/Lighthouse.dll" "$@"
