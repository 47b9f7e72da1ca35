#!/usr/bin/env bash
# Compares pgbench -S throughput: directly against PostgreSQL, through PgBouncer and through Pooler.
#
#   bench/pgbench-compare.sh                  # clients 1 50 1000, 15 s each
#   CLIENTS="50" DURATION=5 bench/pgbench-compare.sh
#
# Env: CLIENTS ("1 50 1000"), DURATION (15), THREADS (2), SCALE (10), POOL_SIZE (20), MAX_CLIENT_CONN (2000),
#      AUTH (trust | md5 | scram-sha-256; default trust; same method for PostgreSQL, PgBouncer and Pooler),
#      POOLER_CMD (command that takes "--config FILE"; default: dotnet on the Release Pooler.Host.dll),
#      SKIP_BUILD=1 (do not build the pooler), TARGETS ("direct pgbouncer pooler"), KEEP_WORK=1 (keep the temp folder).
# Everything runs on 127.0.0.1 in a temp folder and is stopped on exit. Results also go to bench/results/<timestamp>.txt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/pg-helpers.sh
source "$repo/scripts/pg-helpers.sh"

CLIENTS=${CLIENTS:-"1 50 1000"}
DURATION=${DURATION:-15}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-20}
MAX_CLIENT_CONN=${MAX_CLIENT_CONN:-2000}
AUTH=${AUTH:-trust}
TARGETS=${TARGETS:-"direct pgbouncer pooler"}
PASSWORD=bench-pass

case "$AUTH" in trust|md5|scram-sha-256) ;; *) pgh_die "AUTH must be trust, md5 or scram-sha-256" ;; esac

max_clients=1
for c in $CLIENTS; do [ "$c" -gt "$max_clients" ] && max_clients=$c; done
pgh_raise_nofile $(( max_clients * 2 + 4096 > 65536 ? max_clients * 2 + 4096 : 65536 ))
pg_max_conn=$(( max_clients + 100 > 1100 ? max_clients + 100 : 1100 ))

pgh_install_missing with-pgbouncer
PGBIN=$(pgh_find_bin) || pgh_die "PostgreSQL binaries not found"
PGBENCH="$PGBIN/pgbench"
PSQL="$PGBIN/psql"

work=$(mktemp -d /tmp/pooler-bench.XXXXXX)
chmod 755 "$work"
pg_dir="$work/pg"
bouncer_dir="$work/pgbouncer"
pooler_dir="$work/pooler"
mkdir -p "$bouncer_dir" "$pooler_dir"
pooler_pid=""
sampler_pid=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null || true; fi
  if [ -n "$pooler_pid" ]; then pgh_kill_pid "$pooler_pid"; fi
  pgh_pgbouncer_stop "$bouncer_dir/pgbouncer.pid"
  pgh_pg_stop "$pg_dir"
  if [ "${KEEP_WORK:-0}" = 1 ]; then pgh_log "kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- PostgreSQL ---------------------------------------------------------------------------------
pg_port=$(pgh_free_port)
pgh_log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on port $pg_port (max_connections $pg_max_conn, auth $AUTH)"
pgh_pg_init "$pg_dir" "$pg_port" "$pg_max_conn" "$AUTH"
pgh_pg_start "$pg_dir" || pgh_die "PostgreSQL did not start"

pwenc=scram-sha-256
[ "$AUTH" = md5 ] && pwenc=md5
pgh_psql_super "$pg_dir" "$pg_port" postgres <<SQL
SET password_encryption = '$pwenc';
CREATE ROLE bench LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_direct LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_pgbouncer LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_pooler LOGIN PASSWORD '$PASSWORD';
CREATE DATABASE bench OWNER bench;
SQL

pgh_log "pgbench -i -s $SCALE"
PGPASSWORD=$PASSWORD timeout -k 10 900 "$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$pg_port" -U bench bench >"$work/init.log" 2>&1 \
  || { cat "$work/init.log" >&2; pgh_die "pgbench -i failed"; }
# One role per target, so pg_stat_activity tells whose backends they are.
pgh_psql_super "$pg_dir" "$pg_port" bench \
  -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_direct, bench_pgbouncer, bench_pooler" \
  -c "VACUUM ANALYZE"

# --- PgBouncer ----------------------------------------------------------------------------------
bouncer_ok=0
bouncer_port=""
if [[ " $TARGETS " == *" pgbouncer "* ]]; then
  bouncer_port=$(pgh_free_port)
  printf '"bench_pgbouncer" "%s"\n' "$PASSWORD" >"$bouncer_dir/userlist.txt"
  cat >"$bouncer_dir/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir = $bouncer_dir
auth_type = $AUTH
auth_file = $bouncer_dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
logfile = $bouncer_dir/pgbouncer.log
pidfile = $bouncer_dir/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
INI
  if pgh_pgbouncer_start "$bouncer_dir" "$bouncer_port" "$bouncer_dir/pgbouncer.ini"; then
    bouncer_ok=1
    pgh_log "$("$(pgh_find_pgbouncer)" --version | head -n1) on port $bouncer_port"
  else
    pgh_log "PgBouncer did not start; its rows will show FAILED"
  fi
fi

# --- Pooler -------------------------------------------------------------------------------------
pooler_ok=0
pooler_port=""
pooler_note=""
if [[ " $TARGETS " == *" pooler "* ]]; then
  pooler_port=$(pgh_free_port)
  if [ -z "${POOLER_CMD:-}" ]; then
    dll="$repo/src/Pooler.Host/bin/Release/net10.0/Pooler.Host.dll"
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
      pgh_log "building Pooler (Release)"
      timeout -k 10 900 dotnet build "$repo/src/Pooler.Host" -c Release -nologo -v q >"$work/build.log" 2>&1 \
        || { tail -n 30 "$work/build.log" >&2; pooler_note="build failed"; }
    fi
    POOLER_CMD="dotnet $dll"
    [ -f "$dll" ] || pooler_note=${pooler_note:-"no $dll"}
  fi
  printf '"bench_pooler" "%s"\n' "$PASSWORD" >"$pooler_dir/userlist.txt"
  cat >"$pooler_dir/pooler.conf" <<HOCON
pooler {
  listen { host = "127.0.0.1", port = $pooler_port }
  auth { type = $AUTH, users-file = "$pooler_dir/userlist.txt" }
  pool-mode = transaction
  default-pool-size = $POOL_SIZE
  max-client-conn = $MAX_CLIENT_CONN
  databases {
    bench { host = "127.0.0.1", port = $pg_port, dbname = "bench", user = "bench_pooler", password = "$PASSWORD" }
  }
}
HOCON
  if [ -z "$pooler_note" ]; then
    pgh_log "starting Pooler on port $pooler_port: $POOLER_CMD --config $pooler_dir/pooler.conf"
    # shellcheck disable=SC2086
    $POOLER_CMD --config "$pooler_dir/pooler.conf" >"$pooler_dir/pooler.log" 2>&1 </dev/null &
    pooler_pid=$!
    if pgh_wait_port "$pooler_port" "${POOLER_START_TIMEOUT:-60}" "$pooler_pid"; then
      pooler_ok=1
    else
      if kill -0 "$pooler_pid" 2>/dev/null; then pooler_note="not accepting on port $pooler_port"; else pooler_note="exited at start"; fi
      pgh_log "Pooler did not start ($pooler_note); last output:"
      tail -n 20 "$pooler_dir/pooler.log" >&2 || true
      pgh_kill_pid "$pooler_pid"
      pooler_pid=""
    fi
  fi
  if [ -n "$pooler_note" ]; then pgh_log "Pooler rows will show FAILED ($pooler_note)"; fi
fi

# --- runs ---------------------------------------------------------------------------------------
# sample_backends USER OUTFILE: keeps the max number of client backends of USER seen (polled every 0.5 s) in OUTFILE.
sample_backends() {
  local user=$1 out=$2 max=0 n
  echo 0 >"$out"
  while :; do
    n=$("$PSQL" -X -At -h "$pg_dir" -p "$pg_port" -U postgres -d postgres -c \
      "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = '$user'" 2>/dev/null || echo 0)
    if [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt "$max" ]; then max=$n; echo "$max" >"$out"; fi
    sleep 0.5
  done
}

# run_one TARGET CLIENTS: prints "target clients tps latency failed maxbackends connms status"
run_one() {
  local target=$1 c=$2 port user out rc=0 tps lat failed backends conn processed status=ok
  case "$target" in
    direct)    port=$pg_port;      user=bench_direct ;;
    pgbouncer) port=$bouncer_port; user=bench_pgbouncer; [ "$bouncer_ok" = 1 ] || { echo "$target $c - - - - - FAILED(not-started)"; return 0; } ;;
    pooler)    port=$pooler_port;  user=bench_pooler;    [ "$pooler_ok" = 1 ] || { echo "$target $c - - - - - FAILED(${pooler_note// /-})"; return 0; } ;;
    *) pgh_die "unknown target $target" ;;
  esac
  out="$work/run-$target-$c.log"
  sample_backends "$user" "$work/max-$target-$c" &
  sampler_pid=$!
  local threads=$THREADS
  [ "$c" -lt "$threads" ] && threads=$c
  PGPASSWORD=$PASSWORD timeout -k 10 $(( DURATION + 60 + c / 10 )) \
    "$PGBENCH" -h 127.0.0.1 -p "$port" -U "$user" -S -T "$DURATION" -c "$c" -j "$threads" -n bench >"$out" 2>&1 || rc=$?
  kill "$sampler_pid" 2>/dev/null || true
  wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=""
  backends=$(cat "$work/max-$target-$c" 2>/dev/null || echo "?")
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out" | head -n1)
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out" | head -n1)
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -n1)
  conn=$(sed -n 's/^initial connection time = \([0-9.]*\) ms.*/\1/p' "$out" | head -n1)
  processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -n1)
  # pgbench prints no tps when the whole duration went into connecting.
  if [ -z "$tps" ] && [ "$processed" = 0 ]; then tps=0; fi
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="FAILED(timeout)"
  elif [ "$rc" -ne 0 ]; then status="FAILED(exit-$rc)"; fi
  if [ "$status" != ok ]; then
    pgh_log "$target with $c clients: $status; pgbench said:"
    grep -v '^progress' "$out" | tail -n 8 >&2 || true
  fi
  echo "$target $c ${tps:--} ${lat:--} ${failed:--} $backends ${conn:--} $status"
}

results="$work/results.raw"
: >"$results"
for c in $CLIENTS; do
  for target in $TARGETS; do
    pgh_log "pgbench -S -T $DURATION -c $c -j $THREADS -> $target"
    run_one "$target" "$c" >>"$results"
    tail -n 1 "$results" >&2
  done
done

# --- report -------------------------------------------------------------------------------------
ratio() {
  if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
  else echo "-"; fi
}
tps_of() { awk -v t="$1" -v c="$2" '$1 == t && $2 == c && $8 == "ok" { print $3 }' "$results"; }

mkdir -p "$here/results"
report="$here/results/$(date +%Y%m%d-%H%M%S).txt"
{
  echo "pgbench -S -T $DURATION -j $THREADS -n, scale $SCALE, auth $AUTH; poolers: transaction mode, pool size $POOL_SIZE, max_client_conn $MAX_CLIENT_CONN"
  echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $("$(pgh_find_pgbouncer)" --version 2>/dev/null | head -n1), Pooler $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  printf '%-8s %-10s %12s %12s %8s %13s %12s  %s\n' clients target tps "avg lat ms" failed "max backends" "conn ms" status
  while read -r target c tps lat failed backends conn status; do
    printf '%-8s %-10s %12s %12s %8s %13s %12s  %s\n' "$c" "$target" "$tps" "$lat" "$failed" "$backends" "$conn" "$status"
  done <"$results"
  echo "(tps excludes pgbench's initial connection time, conn ms; max backends = most server connections seen in pg_stat_activity)"
  echo
  printf '%-8s %18s %18s\n' clients "pooler/pgbouncer" "pooler/direct"
  for c in $CLIENTS; do
    d=$(tps_of direct "$c"); b=$(tps_of pgbouncer "$c"); p=$(tps_of pooler "$c")
    printf '%-8s %18s %18s\n' "$c" "$(ratio "$p" "$b")" "$(ratio "$p" "$d")"
  done
} | tee "$report"
pgh_log "results written to $report"
