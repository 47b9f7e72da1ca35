#!/usr/bin/env bash
# Quickstart: builds Pooler, starts a throwaway PostgreSQL and a Pooler cluster in front of it (a Lighthouse and
# NODES pooler nodes sharing a VIP on a 127.x address; transaction mode, pool 20), runs a short pgbench and the
# seed's flight-schedule workload (src/Pooler.Workload) through the VIP and directly, prints both results side by
# side, what pbm and the admin console show, and how to connect.
#
#   ./quickstart.sh          # run the demo, then stop everything
#   ./quickstart.sh --keep   # leave PostgreSQL and Pooler running until Ctrl-C
#
# Env: NODES (2), CLIENTS (50), DURATION (10 s), SCALE (5), POOL_SIZE (20), POOLER_CMD (instead of building: a command taking
# "--config FILE"), WORKLOAD_CONNECTIONS (256), WORKLOAD_ITERATIONS (100 cycles per worker, 4 workers; 0 skips the
# workload). Needs the .NET SDK; installs PostgreSQL via apt if missing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/pg-helpers.sh
source "$repo/scripts/pg-helpers.sh"

keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $arg (try --help)" >&2; exit 2 ;;
  esac
done

CLIENTS=${CLIENTS:-50}
DURATION=${DURATION:-10}
SCALE=${SCALE:-5}
POOL_SIZE=${POOL_SIZE:-20}
NODES=${NODES:-2}

[ -n "${POOLER_CMD:-}" ] || command -v dotnet >/dev/null 2>&1 || pgh_die "the .NET SDK (dotnet) is needed: https://dotnet.microsoft.com/download"
pgh_install_missing
PGBIN=$(pgh_find_bin) || pgh_die "PostgreSQL binaries not found (set PG_BIN)"
pgh_raise_nofile 65536

work=$(mktemp -d /tmp/pooler-quickstart.XXXXXX)
chmod 755 "$work"
pg_dir="$work/pg"
pids=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  echo >&2
  pgh_log "stopping the Pooler cluster and PostgreSQL, removing $work"
  local pid
  for pid in "${pids[@]}"; do pgh_kill_pid "$pid"; done
  pgh_pg_stop "$pg_dir"
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build ----------------------------------------------------------------------------------------
if [ -z "${POOLER_CMD:-}" ]; then
  pgh_log "building Pooler (dotnet build -c Release)"
  timeout -k 10 900 dotnet build "$repo/src/Pooler.Host/Pooler.Host.csproj" -c Release -nologo -v q >"$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log" >&2; pgh_die "build failed (full log above)"; }
  dll="$repo/src/Pooler.Host/bin/Release/net10.0/Pooler.Host.dll"
  [ -f "$dll" ] || pgh_die "build produced no $dll"
  POOLER_CMD="dotnet $dll"
fi
pgh_log "building the Lighthouse and pbm"
for proj in Lighthouse Pbm; do
  timeout -k 10 900 dotnet build "$repo/src/$proj/$proj.csproj" -c Release -nologo -v q >"$work/build-$proj.log" 2>&1 \
    || { tail -n 40 "$work/build-$proj.log" >&2; pgh_die "$proj build failed (full log above)"; }
done
lighthouse_dll="$repo/src/Lighthouse/bin/Release/net10.0/Lighthouse.dll"
pbm() { dotnet "$repo/src/Pbm/bin/Release/net10.0/pbm.dll" "$@"; }
WORKLOAD_CONNECTIONS=${WORKLOAD_CONNECTIONS:-256}
WORKLOAD_ITERATIONS=${WORKLOAD_ITERATIONS:-100}
workload_dll="$repo/src/Pooler.Workload/bin/Release/net10.0/Pooler.Workload.dll"
if [ "$WORKLOAD_ITERATIONS" -gt 0 ]; then
  pgh_log "building the workload driver (src/Pooler.Workload)"
  timeout -k 10 900 dotnet build "$repo/src/Pooler.Workload/Pooler.Workload.csproj" -c Release -nologo -v q >"$work/build-workload.log" 2>&1 \
    || { tail -n 40 "$work/build-workload.log" >&2; pgh_die "workload build failed (full log above)"; }
fi

# --- PostgreSQL -----------------------------------------------------------------------------------
pg_port=$(pgh_free_port)
pgh_log "starting PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port"
pgh_pg_init "$pg_dir" "$pg_port" $(( WORKLOAD_CONNECTIONS + CLIENTS + 100 > 200 ? WORKLOAD_CONNECTIONS + CLIENTS + 100 : 200 )) scram-sha-256
pgh_pg_start "$pg_dir" || pgh_die "PostgreSQL did not start"

password="demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
pgh_psql_super "$pg_dir" "$pg_port" postgres <<SQL
SET password_encryption = 'scram-sha-256';
CREATE ROLE demo LOGIN PASSWORD '$password';
CREATE DATABASE demo OWNER demo;
SQL
scram_secret=$(pgh_psql_super "$pg_dir" "$pg_port" postgres -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'demo'")

pgh_log "pgbench -i -s $SCALE (directly)"
PGPASSWORD=$password timeout -k 10 600 "$PGBIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "$pg_port" -U demo demo >"$work/init.log" 2>&1 \
  || { cat "$work/init.log" >&2; pgh_die "pgbench -i failed"; }

# --- the Pooler cluster ---------------------------------------------------------------------------
# A Lighthouse (seed node) and NODES pooler nodes on this machine; the VIP is a 127.x address the node that
# holds it listens on (the "bind" driver; on real machines the "linux" driver moves an address between hosts).
vip_host="127.0.$(( RANDOM % 200 + 20 )).$(( RANDOM % 200 + 20 ))"
vip_port=$(pgh_free_port)
seed_port=$(pgh_free_port)
admin_password="admin-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
# PgBouncer userlist format; demo's secret is the SCRAM verifier PostgreSQL stored, not the password.
printf '"demo" "%s"\n"admin" "%s"\n' "$scram_secret" "$admin_password" >"$work/userlist.txt"
lh_pbm=$(pgh_free_port)
pgh_log "starting the Lighthouse on 127.0.0.1:$seed_port (pbm 127.0.0.1:$lh_pbm)"
CLUSTER_IP=127.0.0.1 CLUSTER_PORT=$seed_port POOLER__PBM__PORT=$lh_pbm \
  dotnet "$lighthouse_dll" >"$work/lighthouse.log" 2>&1 </dev/null &
pids+=($!)
node_ports=() node_pbm=() node_http=()
for i in $(seq 1 "$NODES"); do
  port=$(pgh_free_port); pbm_port=$(pgh_free_port); http_port=$(pgh_free_port); remote_port=$(pgh_free_port)
  node_ports+=("$port"); node_pbm+=("$pbm_port"); node_http+=("$http_port")
  cat >"$work/node$i.conf" <<HOCON
pooler {
  listen { host = "127.0.0.1", port = $port }
  auth { type = scram-sha-256, users-file = "$work/userlist.txt" }
  pool-mode = transaction
  default-pool-size = $POOL_SIZE
  max-client-conn = 1000
  admin-users = [admin]
  pbm { port = $pbm_port }
  http { port = $http_port }
  vip { driver = bind, address = "$vip_host", port = $vip_port }
  databases {
    demo { host = "127.0.0.1", port = $pg_port, dbname = "demo", user = "demo", password = "$password" }
  }
}
akka.remote.dot-netty.tcp { hostname = "127.0.0.1", port = $remote_port }
akka.cluster.seed-nodes = ["akka.tcp://pooler@127.0.0.1:$seed_port"]
HOCON
  pgh_log "starting pooler node $i on 127.0.0.1:$port (cluster port $remote_port, pbm $pbm_port, http $http_port)"
  # shellcheck disable=SC2086
  $POOLER_CMD --config "$work/node$i.conf" >"$work/node$i.log" 2>&1 </dev/null &
  pids+=($!)
  if ! pgh_wait_port "$port" 60 "${pids[-1]}"; then
    tail -n 40 "$work/node$i.log" >&2 || true
    pgh_die "pooler node $i did not start listening on port $port (its output is above)"
  fi
done
pgh_log "waiting for a node to hold the VIP $vip_host:$vip_port"
end=$((SECONDS + 60))
until (exec 3<>"/dev/tcp/$vip_host/$vip_port") 2>/dev/null; do
  [ "$SECONDS" -lt "$end" ] || { tail -n 20 "$work"/node*.log >&2; pgh_die "nobody holds the VIP after 60 s"; }
  sleep 0.2
done
pooler_host=$vip_host
pooler_port=$vip_port

# --- pgbench --------------------------------------------------------------------------------------
# bench HOST PORT NAME: runs pgbench -S and leaves its output in $work/bench-NAME.log
bench() {
  local host=$1 port=$2 name=$3 threads=2
  [ "$CLIENTS" -lt 2 ] && threads=1
  pgh_log "pgbench -S -c $CLIENTS -j $threads -T $DURATION via $name"
  PGPASSWORD=$password timeout -k 10 $(( DURATION + 90 )) \
    "$PGBIN/pgbench" -h "$host" -p "$port" -U demo -S -n -c "$CLIENTS" -j "$threads" -T "$DURATION" demo \
    >"$work/bench-$name.log" 2>&1 || { pgh_log "pgbench via $name failed:"; grep -v '^progress' "$work/bench-$name.log" | tail -n 5 >&2; }
}
field() { sed -n "s/^$1\$/\\1/p" "$2" | head -n1; }
# .NET recompiles Pooler's hot path (tiered JIT, dynamic PGO) during its first ~20 s of load: warm up first (not shown)
pgh_log "warm-up: pgbench -S -T 10 via pooler (not shown)"
PGPASSWORD=$password timeout -k 10 60 "$PGBIN/pgbench" -h "$pooler_host" -p "$pooler_port" -U demo -S -n -c "$CLIENTS" -j 2 -T 10 demo \
  >"$work/warmup.log" 2>&1 || true
bench "$pooler_host" "$pooler_port" pooler
bench 127.0.0.1 "$pg_port" direct

echo
printf '%-34s %16s %16s\n' "pgbench -S, $CLIENTS clients, ${DURATION} s" "via the VIP" "direct"
for row in "tps|tps = \([0-9.]*\) (without initial connection time).*" \
           "avg latency (ms)|latency average = \([0-9.]*\) ms.*" \
           "transactions|number of transactions actually processed: \([0-9]*\).*" \
           "failed transactions|number of failed transactions: \([0-9]*\).*" \
           "initial connection time (ms)|initial connection time = \([0-9.]*\) ms.*"; do
  label=${row%%|*}; pattern=${row#*|}
  p=$(field "$pattern" "$work/bench-pooler.log"); d=$(field "$pattern" "$work/bench-direct.log")
  printf '%-34s %16s %16s\n' "$label" "${p:--}" "${d:--}"
done
server_conns=$(pgh_psql_super "$pg_dir" "$pg_port" postgres -At -c \
  "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = 'demo'" 2>/dev/null || echo '?')
echo "server connections the cluster holds now: $server_conns (pool size $POOL_SIZE per node, $NODES nodes)"

# --- the seed's workload ------------------------------------------------------------------------------
# workload HOST PORT NAME: fresh flight data (directly), then the cycles through PORT; the table is in $work/workload-NAME.log
workload() {
  local host=$1 port=$2 name=$3
  pgh_log "workload: init --flights 20000, then $WORKLOAD_CONNECTIONS connections x $WORKLOAD_ITERATIONS cycles per worker via $name"
  timeout -k 10 300 dotnet "$workload_dll" init --uri "postgresql://demo:$password@127.0.0.1:$pg_port/demo" --flights 20000 \
    >"$work/workload-init-$name.log" 2>&1 || { tail -n 5 "$work/workload-init-$name.log" >&2; return 0; }
  timeout -k 10 600 dotnet "$workload_dll" run --uri "postgresql://demo:$password@$host:$port/demo" \
    --connections "$WORKLOAD_CONNECTIONS" --workers 4 --iterations "$WORKLOAD_ITERATIONS" --delay 100 --batch-size 64 \
    --no-prepare --name "$name" --progress 0 >"$work/workload-$name.log" 2>&1 \
    || { pgh_log "workload via $name failed:"; tail -n 5 "$work/workload-$name.log" >&2; }
}
if [ "$WORKLOAD_ITERATIONS" -gt 0 ]; then
  workload "$pooler_host" "$pooler_port" pooler
  workload 127.0.0.1 "$pg_port" direct
  for name in pooler direct; do
    echo
    echo "flight-schedule workload ($WORKLOAD_CONNECTIONS connections, delay 100 ms, batch 64) via $name:"
    cat "$work/workload-$name.log"
  done
fi

# --- what an operator sees ---------------------------------------------------------------------------
echo
echo "\$ pbm 127.0.0.1:${node_pbm[0]} cluster show"
pbm "127.0.0.1:${node_pbm[0]}" cluster show || true
echo
echo "\$ pbm 127.0.0.1:${node_pbm[0]} pool show"
pbm "127.0.0.1:${node_pbm[0]}" pool show || true
echo
echo "\$ psql -h 127.0.0.1 -p ${node_ports[0]} -U admin pgbouncer -c 'SHOW POOLS'"
PGPASSWORD=$admin_password "$PGBIN/psql" -h 127.0.0.1 -p "${node_ports[0]}" -U admin pgbouncer -c 'SHOW POOLS' || true

cat <<INFO

Connect through the VIP:
  psql "host=$pooler_host port=$pooler_port user=demo dbname=demo"
  password: $password
Steer the cluster:
  dotnet $repo/src/Pbm/bin/Release/net10.0/pbm.dll 127.0.0.1:${node_pbm[0]}      (interactive; help lists the commands)
  psql "host=127.0.0.1 port=${node_ports[0]} user=admin dbname=pgbouncer"   password: $admin_password
  http://127.0.0.1:${node_http[0]}/stats   /metrics   /health
PostgreSQL itself: port $pg_port (same user); configs and logs: $work
INFO

if [ "$keep" = 1 ]; then
  echo
  pgh_log "everything keeps running; press Ctrl-C to stop and clean up"
  while kill -0 "${pids[1]}" 2>/dev/null; do
    wait "${pids[1]}" 2>/dev/null || true
  done
  pgh_log "pooler node 1 exited; its last output:"
  tail -n 20 "$work/node1.log" >&2 || true
fi
