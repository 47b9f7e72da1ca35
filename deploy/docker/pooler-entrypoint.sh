#!/bin/sh
# Entry point of the Pooler image, and what the network-namespace test runs in place of a container: configuration
# comes from the environment only (no file needed).
#
#   CLUSTER_IP        this node's address for the other nodes; default: the first IPv4 address of CLUSTER_INTERFACE
#   CLUSTER_INTERFACE interface CLUSTER_IP is read from (default eth0)
#   CLUSTER_PORT      Akka.Remote port (default 4053)
#   CLUSTER_SEEDS     comma list of akka.tcp://pooler@host:port (the Lighthouse); unset: a single node, no cluster
#   POOLER__A__B_C    sets pooler.a.b-c ('__' is a dot, '_' a dash), e.g. POOLER__DATABASES__DEFAULTDB__HOST=cockroach
#   AKKA__...         sets akka.*
#   POOLER_USERS      optional "name:secret name2:secret2" (secrets as in a users file: plain, md5..., SCRAM-SHA-256$...):
#                     written to a users file that pooler.auth.users-file points to (unless POOLER__AUTH__USERS_FILE is set)
#   POOLER_HOME       folder of Pooler.Host.dll (default /app/pooler); POOLER_RUN_DIR for the users file (default /tmp/pooler)
#   DOTNET            the dotnet host (default dotnet)
# Arguments are passed to Pooler.Host (--config FILE, --set key=value). SIGTERM reaches the pooler itself (exec):
# it drains, hands the VIP over and leaves the cluster.
set -eu

: "${POOLER_HOME:=/app/pooler}" "${POOLER_RUN_DIR:=/tmp/pooler}" "${DOTNET:=dotnet}" "${CLUSTER_INTERFACE:=eth0}"

first_ipv4() {
  ip -4 -o addr show dev "$1" 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }'
}

if [ -n "${CLUSTER_SEEDS:-}" ]; then
  if [ -z "${CLUSTER_IP:-}" ]; then
    CLUSTER_IP=$(first_ipv4 "$CLUSTER_INTERFACE" || true)
    [ -n "$CLUSTER_IP" ] || CLUSTER_IP=$(hostname -i 2>/dev/null | awk '{ print $1 }')
    [ -n "$CLUSTER_IP" ] || { echo "pooler-entrypoint: set CLUSTER_IP (no IPv4 address on $CLUSTER_INTERFACE)" >&2; exit 2; }
  fi
  : "${CLUSTER_PORT:=4053}"
  export CLUSTER_IP CLUSTER_PORT
fi

if [ -n "${POOLER_USERS:-}" ] && [ -z "${POOLER__AUTH__USERS_FILE:-}" ]; then
  mkdir -p "$POOLER_RUN_DIR"
  umask 077
  : >"$POOLER_RUN_DIR/userlist.txt"
  for entry in $POOLER_USERS; do
    name=${entry%%:*}
    secret=${entry#*:}
    [ "$name" != "$entry" ] || { echo "pooler-entrypoint: POOLER_USERS entry '$entry' is not name:secret" >&2; exit 2; }
    printf '"%s" "%s"\n' "$name" "$secret" >>"$POOLER_RUN_DIR/userlist.txt"
  done
  POOLER__AUTH__USERS_FILE="$POOLER_RUN_DIR/userlist.txt"
  export POOLER__AUTH__USERS_FILE
fi

echo "pooler-entrypoint: node ${CLUSTER_IP:-standalone}:${CLUSTER_PORT:-} seeds ${CLUSTER_SEEDS:-none}"
exec "$DOTNET" "$POOLER_HOME/Pooler.Host.dll" "$@"
