#!/usr/bin/env bash
# Quickstart: builds Pooler, starts a throwaway PostgreSQL and Pooler in front of it (transaction mode, pool 20),
# runs a short pgbench and the seed's flight-schedule workload (src/Pooler.Workload) through Pooler and directly,
# prints both results side by side and how to connect.
#
#   ./quickstart.sh          # run the demo, then stop everything
#   ./quickstart.sh --keep   # leave PostgreSQL and Pooler running until Ctrl-C
#
# Env: CLIENTS (50), DURATION (10 s), SCALE (5), POOL_SIZE (20), POOLER_CMD (instead of building: a command taking
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
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $arg (try --help)" >&2; exit 2 ;;
  esac
done

CLIENTS=${CLIENTS:-50}
DURATION=${DURATION:-10}
SCALE=${SCALE:-5}
POOL_SIZE=${POOL_SIZE:-20}

[ -n "${POOLER_CMD:-}" ] || command -v dotnet >/dev/null 2>&1 || pgh_die "the .NET SDK (dotnet) is needed: https://dotnet.microsoft.com/download"
pgh_install_missing
PGBIN=$(pgh_find_bin) || pgh_die "PostgreSQL binaries not found (set PG_BIN)"
pgh_raise_nofile 65536

work=$(mktemp -d /tmp/pooler-quickstart.XXXXXX)
chmod 755 "$work"
pg_dir="$work/pg"
pooler_pid=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  echo >&2
  pgh_log "stopping Pooler and PostgreSQL, removing $work"
  if [ -n "$pooler_pid" ]; then pgh_kill_pid "$pooler_pid"; fi
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

# --- Pooler ---------------------------------------------------------------------------------------
pooler_port=$(pgh_free_port)
# PgBouncer userlist format; the secret is the SCRAM verifier PostgreSQL stored, not the password.
printf '"demo" "%s"\n' "$scram_secret" >"$work/userlist.txt"
cat >"$work/pooler.conf" <<HOCON
pooler {
  listen { host = "127.0.0.1", port = $pooler_port }
  auth { type = scram-sha-256, users-file = "$work/userlist.txt" }
  pool-mode = transaction
  default-pool-size = $POOL_SIZE
  max-client-conn = 1000
  databases {
    demo { host = "127.0.0.1", port = $pg_port, dbname = "demo", user = "demo", password = "$password" }
  }
}
HOCON
pgh_log "starting Pooler on 127.0.0.1:$pooler_port (config $work/pooler.conf)"
# shellcheck disable=SC2086
$POOLER_CMD --config "$work/pooler.conf" >"$work/pooler.log" 2>&1 </dev/null &
pooler_pid=$!
if ! pgh_wait_port "$pooler_port" 60 "$pooler_pid"; then
  tail -n 40 "$work/pooler.log" >&2 || true
  if kill -0 "$pooler_pid" 2>/dev/null; then
    pgh_die "Pooler did not start listening on port $pooler_port within 60 s (its output is above)"
  fi
  pgh_die "Pooler exited before listening on port $pooler_port (its output is above)"
fi

# --- pgbench --------------------------------------------------------------------------------------
# bench PORT NAME: runs pgbench -S and leaves its output in $work/bench-NAME.log
bench() {
  local port=$1 name=$2 threads=2
  [ "$CLIENTS" -lt 2 ] && threads=1
  pgh_log "pgbench -S -c $CLIENTS -j $threads -T $DURATION via $name"
  PGPASSWORD=$password timeout -k 10 $(( DURATION + 90 )) \
    "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U demo -S -n -c "$CLIENTS" -j "$threads" -T "$DURATION" demo \
    >"$work/bench-$name.log" 2>&1 || { pgh_log "pgbench via $name failed:"; grep -v '^progress' "$work/bench-$name.log" | tail -n 5 >&2; }
}
field() { sed -n "s/^$1\$/\\1/p" "$2" | head -n1; }
# .NET recompiles Pooler's hot path (tiered JIT, dynamic PGO) during its first ~20 s of load: warm up first (not shown)
pgh_log "warm-up: pgbench -S -T 10 via pooler (not shown)"
PGPASSWORD=$password timeout -k 10 60 "$PGBIN/pgbench" -h 127.0.0.1 -p "$pooler_port" -U demo -S -n -c "$CLIENTS" -j 2 -T 10 demo \
  >"$work/warmup.log" 2>&1 || true
bench "$pooler_port" pooler
bench "$pg_port" direct

echo
printf '%-34s %16s %16s\n' "pgbench -S, $CLIENTS clients, ${DURATION} s" "via Pooler" "direct"
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
echo "server connections Pooler holds now: $server_conns (pool size $POOL_SIZE)"

# --- the seed's workload ------------------------------------------------------------------------------
# workload PORT NAME: fresh flight data (directly), then the cycles through PORT; the table is in $work/workload-NAME.log
workload() {
  local port=$1 name=$2
  pgh_log "workload: init --flights 20000, then $WORKLOAD_CONNECTIONS connections x $WORKLOAD_ITERATIONS cycles per worker via $name"
  timeout -k 10 300 dotnet "$workload_dll" init --uri "postgresql://demo:$password@127.0.0.1:$pg_port/demo" --flights 20000 \
    >"$work/workload-init-$name.log" 2>&1 || { tail -n 5 "$work/workload-init-$name.log" >&2; return 0; }
  timeout -k 10 600 dotnet "$workload_dll" run --uri "postgresql://demo:$password@127.0.0.1:$port/demo" \
    --connections "$WORKLOAD_CONNECTIONS" --workers 4 --iterations "$WORKLOAD_ITERATIONS" --delay 100 --batch-size 64 \
    --no-prepare --name "$name" --progress 0 >"$work/workload-$name.log" 2>&1 \
    || { pgh_log "workload via $name failed:"; tail -n 5 "$work/workload-$name.log" >&2; }
}
if [ "$WORKLOAD_ITERATIONS" -gt 0 ]; then
  workload "$pooler_port" pooler
  workload "$pg_port" direct
  for name in pooler direct; do
    echo
    echo "flight-schedule workload ($WORKLOAD_CONNECTIONS connections, delay 100 ms, batch 64) via $name:"
    cat "$work/workload-$name.log"
  done
fi

cat <<INFO

Connect through Pooler:
  psql "host=127.0.0.1 port=$pooler_port user=demo dbname=demo"
  password: $password
PostgreSQL itself: port $pg_port (same user); Pooler config: $work/pooler.conf, log: $work/pooler.log
INFO

if [ "$keep" = 1 ]; then
  echo
  pgh_log "everything keeps running; press Ctrl-C to stop and clean up"
  while kill -0 "$pooler_pid" 2>/dev/null; do
    wait "$pooler_pid" 2>/dev/null || true
  done
  pgh_log "Pooler exited; its last output:"
  tail -n 20 "$work/pooler.log" >&2 || true
fi
