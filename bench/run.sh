#!/usr/bin/env bash
# One command, one run, one machine: PostgreSQL direct vs PgBouncer vs Pooler.
#
#   bench/run.sh            # full run (about 37 minutes on 2 cores; the plan is printed first)
#   bench/run.sh --quick    # about 7 minutes: clients 1 and 50, 5 s per pgbench run, 1 seed run per target
#   bench/run.sh --plan     # print what would run and how long it should take
#   bench/run.sh --help
#
# Parts (PARTS="matrix seed idle tls prepared"):
#   matrix  pgbench -S (simple), -S -M extended and the TPC-B-like script at each client count, per target:
#           tps, average/p50/p99/max latency (p99 from per-transaction logs), failed transactions, most backends,
#           CPU seconds per 1,000 transactions and peak RSS of the pooler under test
#   seed    src/Pooler.Workload's flights workload, each target SEED_RUNS times on fresh data: per-step and per-cycle
#           latency, cycles/s, errors by SQLSTATE, most backends, UPDATE statement time from pg_stat_statements
#   idle    IDLE_CONNECTIONS idle clients held open through each pooler: RSS per client and time to open them
#   tls     TLS on both sides (client -> pooler and pooler -> PostgreSQL, PGSSLMODE=require on pgbench's side):
#           pgbench -S at TLS_CLIENTS through a PgBouncer and a Pooler configured for TLS (own ports, own roles) and
#           directly to PostgreSQL with TLS, then the handshake rate (pgbench -S -C, a new TLS connection per
#           transaction) at TLS_HANDSHAKE_CLIENTS. Runs last: it turns PostgreSQL's ssl on (a reload), and libpq's
#           default sslmode=prefer would then put TLS under the other parts' direct rows.
#   prepared  protocol-level named prepared statements in transaction pooling, at each of PREPARED_CLIENTS, interleaved:
#           Pooler pgbench -S -M prepared and -S -M extended, PgBouncer -S -M extended (Debian's 1.18 cannot keep named
#           statements across servers in transaction mode: one short -M prepared attempt, PREPARED_PGBOUNCER_ATTEMPT s,
#           records its failure), PostgreSQL direct -S -M prepared; both poolers are instances of their own (own ports,
#           own roles, Pooler with max-prepared-statements = PREPARED_MAX_STATEMENTS). Reports tps, failed transactions,
#           the exact command of each row and the ratios Pooler prepared / Pooler extended (target >= 1.15), / PgBouncer
#           extended (>= 1.0) and / direct prepared. Select-only on purpose: pgbench's TPC-B script with -M prepared
#           deadlocks through any transaction pooler once clients > pool size (its PQprepare blocks inside an open
#           transaction). Runs before tls (PostgreSQL still without ssl).
# Results: bench/results/<YYYY-MM-DD-HHMM>.md plus PNG charts, copied to bench/results/latest.md and latest-*.png;
# raw outputs (TSV, JSON, pgbench logs, commands) under bench/results/raw/<stamp>/ (not committed).
# Env knobs: see usage() below. Everything listens on 127.0.0.1, lives in a temp folder and is stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/pg-helpers.sh
source "$repo/scripts/pg-helpers.sh"
# shellcheck source=lib.sh
source "$here/lib.sh"

usage() {
  cat <<'USAGE'
usage: bench/run.sh [--quick] [--plan] [--help]

--plan    print the plan and its time estimate, run nothing

--quick   smaller defaults (each still overridable by its variable): CLIENTS="1 50", DURATION=5, SEED_RUNS=1,
          SEED_CONNECTIONS=256, SEED_ITERATIONS=200, IDLE_CONNECTIONS=2000, TLS_CLIENTS=50, PREPARED_CLIENTS=50,
          BUDGET_SECONDS=450

Environment (full-run default first):
  PARTS            "matrix seed idle tls prepared"  which parts to run
  TARGETS          "direct pgbouncer pooler" (idle always skips direct)
  SCRIPTS          "select-simple select-extended tpcb-like"
  CLIENTS          "1 50 500 1000"           pgbench client counts
  DURATION         20                        seconds per pgbench run
  WARMUP           20                        seconds of pgbench -S -c 50 per target before the matrix (0: none)
  THREADS          2                         pgbench -j
  SCALE            10                        pgbench -i -s
  POOL_SIZE        20                        pool size of both poolers for the matrix
  SEED_POOL_SIZE   64                        pool size of both poolers for the seed experiment
  SEED_RUNS        3                         runs per target, each after a fresh init
  SEED_CONNECTIONS 1024   SEED_WORKERS 4     workload connections (split over workers)
  SEED_ITERATIONS  1500                      cycles per worker
  SEED_FLIGHTS     50000  SEED_DELAY 100  SEED_BATCH 64
  SEED_FREQS       "10 90 75 25"             --schedule-freq --status-freq --inventory-freq --price-freq
  SEED_RATE_GUESS  150                       cycles/s assumed for the time plan only
  IDLE_CONNECTIONS 10000                     idle clients per pooler
  MAX_CLIENT_CONN  max(2000, IDLE_CONNECTIONS + 1000), for both poolers
  BUDGET_MINUTES   44   (or BUDGET_SECONDS)  runs that would not end by then are skipped (SKIPPED), seed runs cut
  TLS_CLIENTS      "50 1000"                 pgbench -S client counts of the tls part (DURATION s each, + allowance)
  TLS_HANDSHAKE_CLIENTS  8                   pgbench -S -C clients (handshake rate), TLS_HANDSHAKE_DURATION (DURATION) s
  TLS_CONNECT_ALLOWANCE  20                  seconds per 1,000 clients added to a tls run's -T: pgbench's clock runs while
                                             it opens its connections one by one (each a TLS handshake) before any transaction
  TLS_SERVER_SSLMODE     verify-full         both poolers' server-side sslmode: verify-full | verify-ca | require
  TLS_KEY          rsa:2048                  key of the throw-away CA and server certificate: rsa:BITS | ec (P-256)
  PREPARED_CLIENTS "50 1000"                 client counts of the prepared part (DURATION s per run, pool POOL_SIZE)
  PREPARED_MAX_STATEMENTS  200               the prepared part's Pooler max-prepared-statements (0: names relayed unchanged)
  PREPARED_PGBOUNCER_ATTEMPT  3              -T of the one pgbench -S -M prepared attempt through PgBouncer, at the first of
                                             PREPARED_CLIENTS, after the measured runs (its failure recorded; 0: no attempt)
  AUTH             trust                     trust | md5 | scram-sha-256
  POOLER_CMD       command taking --config FILE (default: dotnet on the Release Pooler.Host.dll)
  WORKLOAD_CMD     Pooler.Workload command (default: dotnet on the Release Pooler.Workload.dll)
  SKIP_BUILD=1     do not build; KEEP_WORK=1 keep the temp folder; RESULTS_DIR (bench/results)
USAGE
}

quick=0
plan_only=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --plan) plan_only=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

if [ "$quick" = 1 ]; then
  : "${CLIENTS:=1 50}" "${DURATION:=5}" "${SEED_RUNS:=1}" "${SEED_CONNECTIONS:=256}" "${SEED_ITERATIONS:=200}"
  : "${IDLE_CONNECTIONS:=2000}" "${BUDGET_SECONDS:=450}" "${WARMUP:=5}" "${TLS_CLIENTS:=50}" "${PREPARED_CLIENTS:=50}"
fi
PARTS=${PARTS:-"matrix seed idle tls prepared"}
TARGETS=${TARGETS:-"direct pgbouncer pooler"}
SCRIPTS=${SCRIPTS:-"select-simple select-extended tpcb-like"}
CLIENTS=${CLIENTS:-"1 50 500 1000"}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-20}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-20}
SEED_POOL_SIZE=${SEED_POOL_SIZE:-64}
SEED_RUNS=${SEED_RUNS:-3}
SEED_CONNECTIONS=${SEED_CONNECTIONS:-1024}
SEED_WORKERS=${SEED_WORKERS:-4}
SEED_ITERATIONS=${SEED_ITERATIONS:-1500}
SEED_FLIGHTS=${SEED_FLIGHTS:-50000}
SEED_DELAY=${SEED_DELAY:-100}
SEED_BATCH=${SEED_BATCH:-64}
SEED_FREQS=${SEED_FREQS:-"10 90 75 25"}
SEED_RATE_GUESS=${SEED_RATE_GUESS:-150}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
MAX_CLIENT_CONN=${MAX_CLIENT_CONN:-$(( IDLE_CONNECTIONS + 1000 > 2000 ? IDLE_CONNECTIONS + 1000 : 2000 ))}
BUDGET_MINUTES=${BUDGET_MINUTES:-44}
BUDGET_SECONDS=${BUDGET_SECONDS:-$(( BUDGET_MINUTES * 60 ))}
TLS_CLIENTS=${TLS_CLIENTS:-"50 1000"}
TLS_HANDSHAKE_CLIENTS=${TLS_HANDSHAKE_CLIENTS:-8}
TLS_HANDSHAKE_DURATION=${TLS_HANDSHAKE_DURATION:-$DURATION}
TLS_CONNECT_ALLOWANCE=${TLS_CONNECT_ALLOWANCE:-20}
TLS_SERVER_SSLMODE=${TLS_SERVER_SSLMODE:-verify-full}
TLS_KEY=${TLS_KEY:-rsa:2048}
PREPARED_CLIENTS=${PREPARED_CLIENTS:-"50 1000"}
PREPARED_MAX_STATEMENTS=${PREPARED_MAX_STATEMENTS:-200}
PREPARED_PGBOUNCER_ATTEMPT=${PREPARED_PGBOUNCER_ATTEMPT:-3}
AUTH=${AUTH:-trust}
RESULTS_DIR=${RESULTS_DIR:-$here/results}
PASSWORD=bench-pass

case "$AUTH" in trust|md5|scram-sha-256) ;; *) pgh_die "AUTH must be trust, md5 or scram-sha-256" ;; esac
for v in DURATION THREADS SCALE POOL_SIZE SEED_POOL_SIZE SEED_RUNS SEED_CONNECTIONS SEED_WORKERS SEED_ITERATIONS \
         SEED_FLIGHTS SEED_DELAY SEED_BATCH SEED_RATE_GUESS IDLE_CONNECTIONS MAX_CLIENT_CONN BUDGET_SECONDS \
         TLS_HANDSHAKE_CLIENTS TLS_HANDSHAKE_DURATION; do
  if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 ]; then pgh_die "$v must be a positive integer (is '${!v}')"; fi
done
[[ "$TLS_CONNECT_ALLOWANCE" =~ ^[0-9]+$ ]] || pgh_die "TLS_CONNECT_ALLOWANCE must be a whole number of seconds"
[[ "$PREPARED_MAX_STATEMENTS" =~ ^[0-9]+$ ]] || pgh_die "PREPARED_MAX_STATEMENTS must be a whole number"
[[ "$PREPARED_PGBOUNCER_ATTEMPT" =~ ^[0-9]+$ ]] || pgh_die "PREPARED_PGBOUNCER_ATTEMPT must be a whole number of seconds"
# tls_duration CLIENTS: -T of a tls throughput run, DURATION plus the connect allowance.
tls_duration() { echo $(( DURATION + ($1 * TLS_CONNECT_ALLOWANCE + 999) / 1000 )); }
for c in $CLIENTS; do if ! [[ "$c" =~ ^[0-9]+$ ]] || [ "$c" -eq 0 ]; then pgh_die "CLIENTS must be positive integers"; fi; done
for c in $TLS_CLIENTS; do if ! [[ "$c" =~ ^[0-9]+$ ]] || [ "$c" -eq 0 ]; then pgh_die "TLS_CLIENTS must be positive integers"; fi; done
for c in $PREPARED_CLIENTS; do if ! [[ "$c" =~ ^[0-9]+$ ]] || [ "$c" -eq 0 ]; then pgh_die "PREPARED_CLIENTS must be positive integers"; fi; done
for p in $PARTS; do case "$p" in matrix|seed|idle|tls|prepared) ;; *) pgh_die "unknown part '$p' in PARTS" ;; esac; done
case "$TLS_SERVER_SSLMODE" in verify-full|verify-ca|require) ;; *) pgh_die "TLS_SERVER_SSLMODE must be verify-full, verify-ca or require" ;; esac
[[ "$TLS_KEY" =~ ^(rsa:[0-9]+|ec)$ ]] || pgh_die "TLS_KEY must be rsa:BITS or ec"
for s in $SCRIPTS; do
  case "$s" in select-simple|select-extended|tpcb-like) ;; *) pgh_die "unknown script '$s' in SCRIPTS" ;; esac
done
for t in $TARGETS; do case "$t" in direct|pgbouncer|pooler) ;; *) pgh_die "unknown target '$t' in TARGETS" ;; esac; done
read -r freq_schedule freq_status freq_inventory freq_price <<<"$SEED_FREQS"
has() { [[ " $1 " == *" $2 "* ]]; }

script_args() {
  case "$1" in
    select-simple)   echo "-S -M simple" ;;
    select-extended) echo "-S -M extended" ;;
    select-prepared) echo "-S -M prepared" ;;
    tpcb-like)       echo "-M simple" ;;
    select-connect)  echo "-S -M simple -C" ;;
  esac
}

# --- plan -----------------------------------------------------------------------------------------
n_scripts=$(wc -w <<<"$SCRIPTS"); n_targets=$(wc -w <<<"$TARGETS")
poolers=""
for t in pgbouncer pooler; do if has "$TARGETS" "$t"; then poolers="$poolers $t"; fi; done
poolers=${poolers# }
n_poolers=$(wc -w <<<"$poolers")
max_clients=1
est_matrix=0
for c in $CLIENTS; do
  [ "$c" -gt "$max_clients" ] && max_clients=$c
  est_matrix=$(( est_matrix + n_scripts * n_targets * (DURATION + 2 + c / 150) ))
done
# The tls part: each target at each TLS client count, one handshake run each, a warm-up each, certificates and starts.
est_tls=$(( 15 + n_targets * (WARMUP + (WARMUP / 4 > 2 ? WARMUP / 4 : 2) + 4 + TLS_HANDSHAKE_DURATION + 2) ))
for c in $TLS_CLIENTS; do
  if has "$PARTS" tls && has "$TARGETS" direct && [ "$c" -gt "$max_clients" ]; then max_clients=$c; fi
  est_tls=$(( est_tls + n_targets * ($(tls_duration "$c") + 2 + c / 150) ))
done
# The prepared part: per client count direct prepared, PgBouncer extended, Pooler prepared and extended; a warm-up per
# target (Pooler's two), starts, and the short PgBouncer -M prepared attempt.
n_prep_runs=0
has "$TARGETS" direct && n_prep_runs=$(( n_prep_runs + 1 ))
has "$TARGETS" pgbouncer && n_prep_runs=$(( n_prep_runs + 1 ))
has "$TARGETS" pooler && n_prep_runs=$(( n_prep_runs + 2 ))
prep_ext_warm=$(( WARMUP / 4 > 2 ? WARMUP / 4 : 2 ))
est_prepared=$(( 10 + n_targets * (WARMUP + 2) ))
has "$TARGETS" pooler && est_prepared=$(( est_prepared + prep_ext_warm + 2 ))
has "$TARGETS" pgbouncer && [ "$PREPARED_PGBOUNCER_ATTEMPT" -gt 0 ] && est_prepared=$(( est_prepared + PREPARED_PGBOUNCER_ATTEMPT + 5 ))
for c in $PREPARED_CLIENTS; do
  if has "$PARTS" prepared && has "$TARGETS" direct && [ "$c" -gt "$max_clients" ]; then max_clients=$c; fi
  est_prepared=$(( est_prepared + n_prep_runs * (DURATION + 2 + c / 150) ))
done
seed_cycles=$(( SEED_ITERATIONS * SEED_WORKERS ))
est_seed_run=$(( 5 + SEED_FLIGHTS / 10000 + SEED_CONNECTIONS / 150 + seed_cycles / SEED_RATE_GUESS ))
est_seed=$(( n_targets * SEED_RUNS * est_seed_run ))
est_idle=$(( n_poolers * (10 + IDLE_CONNECTIONS / 400) ))
has "$PARTS" matrix || est_matrix=0
has "$PARTS" seed || est_seed=0
has "$PARTS" idle || est_idle=0
has "$PARTS" tls || est_tls=0
has "$PARTS" prepared || est_prepared=0
# Build (incremental) and setup before, report and charts after: about a minute together.
est_total=$(( 60 + est_matrix + est_seed + est_idle + est_tls + est_prepared ))
# A seed run may take several times the guess before it is called hung.
SEED_RUN_TIMEOUT=${SEED_RUN_TIMEOUT:-$(( 120 + 4 * est_seed_run ))}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-$(( 60 + IDLE_CONNECTIONS / 50 ))}

mmss() { printf '%d min %02d s' $(( $1 / 60 )) $(( $1 % 60 )); }
pgh_log "plan ($([ "$quick" = 1 ] && echo quick || echo full)): parts [$PARTS], targets [$TARGETS]"
pgh_log "  matrix: scripts [$SCRIPTS] x clients [$CLIENTS] x ${n_targets} targets, ${DURATION} s each, -j $THREADS, pool $POOL_SIZE: ~$(mmss "$est_matrix")"
pgh_log "  seed:   ${n_targets} targets x $SEED_RUNS runs, $SEED_CONNECTIONS connections, $SEED_ITERATIONS cycles/worker x $SEED_WORKERS, pool $SEED_POOL_SIZE: ~$(mmss "$est_seed") (guessing $SEED_RATE_GUESS cycles/s)"
pgh_log "  idle:   $IDLE_CONNECTIONS clients through [${poolers}]: ~$(mmss "$est_idle")"
pgh_log "  tls:    pgbench -S at clients [$TLS_CLIENTS] x ${n_targets} targets, ${DURATION} s each (+ $TLS_CONNECT_ALLOWANCE s per 1,000 clients to connect), and pgbench -S -C at $TLS_HANDSHAKE_CLIENTS clients, ${TLS_HANDSHAKE_DURATION} s, all with TLS (server side $TLS_SERVER_SSLMODE): ~$(mmss "$est_tls")"
pgh_log "  prepared: pgbench -S at clients [$PREPARED_CLIENTS]: Pooler -M prepared and -M extended, PgBouncer -M extended, direct -M prepared, ${DURATION} s each, pool $POOL_SIZE, Pooler max-prepared-statements $PREPARED_MAX_STATEMENTS$([ "$PREPARED_PGBOUNCER_ATTEMPT" -gt 0 ] && echo ", plus a ${PREPARED_PGBOUNCER_ATTEMPT} s PgBouncer -M prepared attempt"): ~$(mmss "$est_prepared")"
pgh_log "  total:  ~$(mmss "$est_total") with build, setup and report; runs that would not end within $(mmss "$BUDGET_SECONDS") are skipped"
[ "$plan_only" = 0 ] || exit 0
budget_end=$(( SECONDS + BUDGET_SECONDS ))
# fits SECONDS_NEEDED: is there time left in the budget for a step of that length?
fits() { [ $(( SECONDS + $1 )) -le "$budget_end" ]; }

# --- tools and folders ------------------------------------------------------------------------------
fd_need=$(( (max_clients > SEED_CONNECTIONS ? max_clients : SEED_CONNECTIONS) * 2 + IDLE_CONNECTIONS * 2 + 4096 ))
pgh_raise_nofile $(( fd_need > 65536 ? fd_need : 65536 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $(( IDLE_CONNECTIONS + 2000 )) ]; then
  pgh_log "warning: open files limit $(ulimit -n) is low for $IDLE_CONNECTIONS idle clients"
fi
pgh_install_missing with-pgbouncer
PGBIN=$(pgh_find_bin) || pgh_die "PostgreSQL binaries not found"
PGBENCH="$PGBIN/pgbench"
PSQL="$PGBIN/psql"
apt_install() {
  local sudo=""
  pgh_is_root || sudo=sudo
  pgh_log "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" >/dev/null
}
if [ ! -f "$("$PGBIN/pg_config" --sharedir 2>/dev/null || echo /nonexistent)/extension/pg_stat_statements.control" ]; then
  apt_install postgresql-contrib || pgh_die "pg_stat_statements missing and postgresql-contrib could not be installed"
fi
command -v jq >/dev/null 2>&1 || apt_install jq || pgh_die "jq is needed to read the workload's JSON"
# ScottPlot renders with SkiaSharp's built-in font handling; DejaVu is the font it finds on Debian.
[ -d /usr/share/fonts/truetype/dejavu ] || apt_install fonts-dejavu-core || pgh_log "fonts-dejavu-core not installed; chart text may be missing"
if has "$PARTS" tls; then command -v openssl >/dev/null 2>&1 || apt_install openssl || pgh_die "openssl is needed for the tls part's certificates"; fi

stamp=$(date +%Y-%m-%d-%H%M)
[ -e "$RESULTS_DIR/$stamp.md" ] && stamp="$stamp-$(date +%S)"
raw="$RESULTS_DIR/raw/$stamp"
mkdir -p "$raw"
commands="$raw/commands.txt"
: >"$commands"
# record CMD...: note a command (as run, shell-quoted) for the report.
record() { printf '%q ' "$@" | sed 's/ $//' >>"$commands"; echo >>"$commands"; }

work=$(mktemp -d /tmp/pooler-run.XXXXXX)
chmod 755 "$work"
pg_dir="$work/pg"
bouncer_dir="$work/pgbouncer"
pooler_dir="$work/pooler"
tls_dir="$work/tls"
# shellcheck disable=SC2034 # the side instances' folders are read by name (side_pgbouncer, side_pooler)
bouncer_tls_dir="$work/pgbouncer-tls"
# shellcheck disable=SC2034
pooler_tls_dir="$work/pooler-tls"
bouncer_prep_dir="$work/pgbouncer-prep"
pooler_prep_dir="$work/pooler-prep"
mkdir -p "$bouncer_dir" "$pooler_dir" "$work/pgb"
pooler_pid=""
pooler_tls_pid=""
pooler_prep_pid=""
idle_pid=""
idle_fd=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  bl_sampler_stop
  if [ -n "$idle_fd" ]; then eval "exec $idle_fd>&-" 2>/dev/null || true; fi
  if [ -n "$idle_pid" ]; then pgh_kill_pid "$idle_pid"; fi
  if [ -n "$pooler_pid" ]; then pgh_kill_pid "$pooler_pid"; fi
  if [ -n "$pooler_tls_pid" ]; then pgh_kill_pid "$pooler_tls_pid"; fi
  if [ -n "$pooler_prep_pid" ]; then pgh_kill_pid "$pooler_prep_pid"; fi
  pgh_pgbouncer_stop "$bouncer_dir/pgbouncer.pid"
  pgh_pgbouncer_stop "$bouncer_tls_dir/pgbouncer.pid"
  pgh_pgbouncer_stop "$bouncer_prep_dir/pgbouncer.pid"
  pgh_pg_stop "$pg_dir"
  if [ "${KEEP_WORK:-0}" = 1 ]; then pgh_log "kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build ----------------------------------------------------------------------------------------
charts_dll="$repo/src/Pooler.BenchCharts/bin/Release/net10.0/Pooler.BenchCharts.dll"
workload_dll="$repo/src/Pooler.Workload/bin/Release/net10.0/Pooler.Workload.dll"
pooler_dll="$repo/src/Pooler.Host/bin/Release/net10.0/Pooler.Host.dll"
build() {
  local proj=$1
  [ -d "$repo/src/$proj" ] || return 0
  pgh_log "building $proj (Release)"
  timeout -k 10 900 dotnet build "$repo/src/$proj" -c Release -nologo -v q >"$work/build-$proj.log" 2>&1 \
    || { tail -n 30 "$work/build-$proj.log" >&2; pgh_log "build of $proj failed"; }
}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  [ -n "${POOLER_CMD:-}" ] || build Pooler.Host
  build Pooler.BenchCharts
  [ -n "${WORKLOAD_CMD:-}" ] || build Pooler.Workload
fi
pooler_cmd_given=${POOLER_CMD:-}
POOLER_CMD=${POOLER_CMD:-"dotnet $pooler_dll"}
workload_note=""
if [ -z "${WORKLOAD_CMD:-}" ]; then
  if [ -f "$workload_dll" ]; then WORKLOAD_CMD="dotnet $workload_dll"
  else workload_note="src/Pooler.Workload is not built here (branch workload not merged yet?)"; fi
fi
if [ -n "$workload_note" ] && { has "$PARTS" seed || has "$PARTS" idle; }; then
  pgh_log "seed and idle parts skipped: $workload_note"
fi
# WORKLOAD_CMD is one string, split on spaces on purpose into the command to run ("${wl[@]}" ARGS...).
# shellcheck disable=SC2206
wl=(${WORKLOAD_CMD:-})

# --- PostgreSQL -----------------------------------------------------------------------------------
seed_max=0
has "$PARTS" seed && has "$TARGETS" direct && seed_max=$SEED_CONNECTIONS
# Pools of both poolers (the tls and prepared parts' two more each), plus room for the sampler and psql.
pg_max_conn=$(( (max_clients > seed_max ? max_clients : seed_max) + 6 * POOL_SIZE + 2 * SEED_POOL_SIZE + 100 ))
pg_port=$(pgh_free_port)
pg_version=$("$PGBIN/postgres" --version | awk '{print $3}')
pgh_log "PostgreSQL $pg_version on port $pg_port (max_connections $pg_max_conn, auth $AUTH, pg_stat_statements)"
pgh_pg_init "$pg_dir" "$pg_port" "$pg_max_conn" "$AUTH"
cat >>"$pg_dir/data/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.max = 5000
pg_stat_statements.track = top
CONF
pgh_pg_start "$pg_dir" || pgh_die "PostgreSQL did not start"
super_psql="$PSQL -h $pg_dir -p $pg_port -U postgres -d postgres"
# sql DB STATEMENT: one value, as superuser.
sql() { timeout -k 5 60 "$PSQL" -X -At -v ON_ERROR_STOP=1 -h "$pg_dir" -p "$pg_port" -U postgres -d "$1" -c "$2"; }

pwenc=scram-sha-256
[ "$AUTH" = md5 ] && pwenc=md5
pgh_psql_super "$pg_dir" "$pg_port" postgres <<SQL
SET password_encryption = '$pwenc';
CREATE ROLE bench LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_direct LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_pgbouncer LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_pooler LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_direct_tls LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_pgbouncer_tls LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_pooler_tls LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_direct_prep LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_pgbouncer_prep LOGIN PASSWORD '$PASSWORD';
CREATE ROLE bench_pooler_prep LOGIN PASSWORD '$PASSWORD';
CREATE DATABASE bench OWNER bench;
CREATE DATABASE seed_direct OWNER bench_direct;
CREATE DATABASE seed_pgbouncer OWNER bench_pgbouncer;
CREATE DATABASE seed_pooler OWNER bench_pooler;
SQL
pgh_psql_super "$pg_dir" "$pg_port" bench -c "CREATE EXTENSION pg_stat_statements"

if has "$PARTS" matrix || has "$PARTS" tls || has "$PARTS" prepared; then
  pgh_log "pgbench -i -s $SCALE"
  record "$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$pg_port" -U bench bench
  PGPASSWORD=$PASSWORD timeout -k 10 900 "$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$pg_port" -U bench bench >"$work/init.log" 2>&1 \
    || { cat "$work/init.log" >&2; pgh_die "pgbench -i failed"; }
  # One role per target, so pg_stat_activity tells whose backends they are; TPC-B writes, so full rights.
  pgh_psql_super "$pg_dir" "$pg_port" bench \
    -c "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO bench_direct, bench_pgbouncer, bench_pooler,
          bench_direct_tls, bench_pgbouncer_tls, bench_pooler_tls, bench_direct_prep, bench_pgbouncer_prep, bench_pooler_prep" \
    -c "VACUUM ANALYZE"
fi

# --- PgBouncer ------------------------------------------------------------------------------------
# The plain poolers serve the matrix, seed and idle parts; the tls part starts its own two (see below).
plain_parts=0
for p in matrix seed idle; do if has "$PARTS" "$p"; then plain_parts=1; fi; done
bouncer_ok=0
bouncer_port=""
bouncer_pid=""
bouncer_version=$("$(pgh_find_pgbouncer)" --version 2>/dev/null | head -n1 || echo "PgBouncer ?")
if has "$TARGETS" pgbouncer && [ "$plain_parts" = 1 ]; then
  bouncer_port=$(pgh_free_port)
  printf '"bench_pgbouncer" "%s"\n' "$PASSWORD" >"$bouncer_dir/userlist.txt"
  cat >"$bouncer_dir/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench
seed_pgbouncer = host=127.0.0.1 port=$pg_port dbname=seed_pgbouncer pool_size=$SEED_POOL_SIZE

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
    bouncer_pid=$(cat "$bouncer_dir/pgbouncer.pid")
    pgh_log "$bouncer_version on port $bouncer_port (pid $bouncer_pid, open files limit $(awk '/Max open files/ {print $4}' "/proc/$bouncer_pid/limits"))"
  else
    pgh_log "PgBouncer did not start; its rows will show FAILED"
  fi
fi

# --- Pooler ---------------------------------------------------------------------------------------
pooler_ok=0
pooler_port=""
pooler_note=""
if has "$TARGETS" pooler && [ "$plain_parts" = 1 ]; then
  pooler_port=$(pgh_free_port)
  if [ "$POOLER_CMD" = "dotnet $pooler_dll" ] && [ ! -f "$pooler_dll" ]; then pooler_note="no $pooler_dll"; fi
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
    seed_pooler { host = "127.0.0.1", port = $pg_port, dbname = "seed_pooler", user = "bench_pooler", password = "$PASSWORD", pool-size = $SEED_POOL_SIZE }
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
  [ -z "$pooler_note" ] || pgh_log "Pooler rows will show FAILED ($pooler_note)"
fi

# The tls part's targets (set up in part 5): ssl state "" until then.
tls_direct_ok=0; tls_direct_why="not-set-up"
bouncer_tls_ok=0; bouncer_tls_port=""; bouncer_tls_pid=""; bouncer_tls_why="not-started"
pooler_tls_ok=0; pooler_tls_port=""; pooler_tls_why="not-started"; pooler_tls_said=""
# The prepared part's targets (set up in part 6, stopped after it).
bouncer_prep_ok=0; bouncer_prep_port=""; bouncer_prep_pid=""; bouncer_prep_why="not-started"
pooler_prep_ok=0; pooler_prep_port=""; pooler_prep_why="not-started"; pooler_prep_said=""

# target_info TARGET: sets t_port, t_role, t_pid (process to account, "" for direct), t_ok, t_why.
# TARGET is direct, pgbouncer or pooler, or direct-tls, pgbouncer-tls or pooler-tls for the tls part, or direct-prep,
# pgbouncer-prep or pooler-prep for the prepared part.
target_info() {
  t_ok=1; t_why=""
  case "$1" in
    direct)    t_port=$pg_port;       t_role=bench_direct;    t_pid="" ;;
    pgbouncer) t_port=$bouncer_port;  t_role=bench_pgbouncer; t_pid=$bouncer_pid
               [ "$bouncer_ok" = 1 ] || { t_ok=0; t_why="not-started"; } ;;
    pooler)    t_port=$pooler_port;   t_role=bench_pooler;    t_pid=$pooler_pid
               [ "$pooler_ok" = 1 ] || { t_ok=0; t_why=${pooler_note// /-}; } ;;
    direct-tls)    t_port=$pg_port;           t_role=bench_direct_tls;    t_pid=""
                   [ "$tls_direct_ok" = 1 ] || { t_ok=0; t_why=$tls_direct_why; } ;;
    pgbouncer-tls) t_port=$bouncer_tls_port;  t_role=bench_pgbouncer_tls; t_pid=$bouncer_tls_pid
                   [ "$bouncer_tls_ok" = 1 ] || { t_ok=0; t_why=$bouncer_tls_why; } ;;
    pooler-tls)    t_port=$pooler_tls_port;   t_role=bench_pooler_tls;    t_pid=$pooler_tls_pid
                   [ "$pooler_tls_ok" = 1 ] || { t_ok=0; t_why=$pooler_tls_why; } ;;
    direct-prep)    t_port=$pg_port;            t_role=bench_direct_prep;    t_pid="" ;;
    pgbouncer-prep) t_port=$bouncer_prep_port;  t_role=bench_pgbouncer_prep; t_pid=$bouncer_prep_pid
                    [ "$bouncer_prep_ok" = 1 ] || { t_ok=0; t_why=$bouncer_prep_why; } ;;
    pooler-prep)    t_port=$pooler_prep_port;   t_role=bench_pooler_prep;    t_pid=$pooler_prep_pid
                    [ "$pooler_prep_ok" = 1 ] || { t_ok=0; t_why=$pooler_prep_why; } ;;
  esac
  if [ "$t_ok" = 1 ] && [ -n "$t_pid" ] && ! kill -0 "$t_pid" 2>/dev/null; then t_ok=0; t_why="process-gone"; fi
}

# --- 1. pgbench matrix ------------------------------------------------------------------------------
matrix="$raw/matrix.tsv"
printf 'script\ttarget\tclients\ttps\tavg_ms\tp50_ms\tp99_ms\tmax_ms\tfailed\tprocessed\tmax_backends\tconn_ms\tcpu_s\tcpu_s_per_1k_tx\tpeak_rss_kib\tstatus\n' >"$matrix"

# pgbench_run TSV SCRIPT TARGET CLIENTS SECONDS: one pgbench run, one row of TSV (the matrix's columns).
# A *-tls target runs pgbench with PGSSLMODE=require. The select-connect script (-C) keeps no per-transaction log:
# pgbench's logged latency leaves out the connection, which is what -C measures (tps = connections per second).
pgbench_run() {
  local tsv=$1 script=$2 target=$3 c=$4 dur=$5 out logdir rc=0 status=ok threads=$THREADS tps lat failed processed conn
  local n p50 p99 pmax cpu0="" cpu1="" cpu="-" cpuk="-" rss="-" backends pre=() txlog=()
  target_info "$target"
  if [ "$t_ok" != 1 ]; then
    printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\tFAILED(%s)\n' "$script" "$target" "$c" "$t_why" >>"$tsv"
    return 0
  fi
  if ! fits $(( dur + 10 )); then
    printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\tSKIPPED(budget)\n' "$script" "$target" "$c" >>"$tsv"
    return 0
  fi
  [ "$c" -lt "$threads" ] && threads=$c
  out="$raw/pgbench-$script-$target-$c.log"
  logdir="$work/pgb/$script-$target-$c"
  mkdir -p "$logdir"
  [[ "$target" == *-tls ]] && pre=(env PGSSLMODE=require)
  [ "$script" = select-connect ] || txlog=(-l --log-prefix="$logdir/tx")
  # shellcheck disable=SC2046
  set -- "${pre[@]}" "$PGBENCH" -h 127.0.0.1 -p "$t_port" -U "$t_role" $(script_args "$script") -T "$dur" -c "$c" -j "$threads" -n \
    "${txlog[@]}" bench
  record "$@"
  bl_sampler_start "$work/sample" $(( dur + 120 )) "$super_psql" "$t_role" bench "$t_pid"
  [ -n "$t_pid" ] && cpu0=$(bl_cpu_ticks "$t_pid")
  PGPASSWORD=$PASSWORD timeout -k 10 $(( dur + 60 + c / 10 )) "$@" >"$out" 2>&1 || rc=$?
  [ -n "$t_pid" ] && cpu1=$(bl_cpu_ticks "$t_pid")
  bl_sampler_stop
  backends=$(cat "$work/sample.backends")
  [ -n "$t_pid" ] && rss=$(cat "$work/sample.rss")
  tps=$(bl_pgbench_field "$out" tps); lat=$(bl_pgbench_field "$out" lat); failed=$(bl_pgbench_field "$out" failed)
  conn=$(bl_pgbench_field "$out" conn); processed=$(bl_pgbench_field "$out" processed)
  if [ -z "$tps" ] && [ "${processed:-}" = 0 ]; then tps=0; fi
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="FAILED(timeout)"
  elif [ "$rc" -ne 0 ]; then status="FAILED(exit-$rc)"
  # -T ran out while pgbench was still opening its connections: no transaction, no connection time, exit 0.
  elif [ "${processed:-}" = 0 ] && [ -z "$conn" ]; then status="FAILED(connecting-outlasted-T)"; fi
  if [ "$status" != ok ]; then
    pgh_log "$script $target $c clients: $status; pgbench said:"
    grep -v '^progress' "$out" | tail -n 8 >&2 || true
  fi
  n=0; p50="-"; p99="-"; pmax="-"
  if [ "${#txlog[@]}" -gt 0 ]; then read -r n p50 p99 pmax < <(bl_latency_stats "$logdir"/tx.*); fi
  rm -rf "$logdir"
  if [ -n "$cpu0" ] && [ -n "$cpu1" ]; then
    cpu=$(bl_cpu_seconds "$cpu0" "$cpu1")
    cpuk=$(bl_div "$cpu" "$(bl_div "${processed:-0}" 1000 %.3f)" %.3f)
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$script" "$target" "$c" "${tps:--}" "${lat:--}" \
    "$p50" "$p99" "$pmax" "${failed:--}" "${processed:--}" "$backends" "${conn:--}" "$cpu" "$cpuk" "$rss" "$status" >>"$tsv"
}

# matrix_run SCRIPT TARGET CLIENTS: one pgbench run of the matrix.
matrix_run() { pgbench_run "$matrix" "$1" "$2" "$3" "$DURATION"; }

# Warm-up, not recorded: Pooler is .NET and compiles its hot path (tiered JIT) during the first
# seconds; each target gets the same short pgbench -S run so the first row measures steady state.
if has "$PARTS" matrix && [ "$WARMUP" -gt 0 ]; then
  for target in $TARGETS; do
    target_info "$target"
    [ "$t_ok" = 1 ] || continue
    pgh_log "warm-up: pgbench -S -T $WARMUP -c 50 -> $target (not recorded)"
    PGPASSWORD=$PASSWORD timeout -k 10 $(( WARMUP + 60 )) "$PGBENCH" -h 127.0.0.1 -p "$t_port" -U "$t_role" -S -T "$WARMUP" -c 50 -j "$THREADS" -n bench \
      >"$raw/warmup-$target.log" 2>&1 || pgh_log "warm-up through $target failed (see raw/warmup-$target.log)"
  done
fi

if has "$PARTS" matrix; then
  for script in $SCRIPTS; do
    for c in $CLIENTS; do
      for target in $TARGETS; do
        pgh_log "matrix: pgbench $(script_args "$script") -T $DURATION -c $c -> $target"
        matrix_run "$script" "$target" "$c"
        tail -n 1 "$matrix" | awk -F'\t' '{ printf "    tps %s, avg %s ms, p99 %s ms, failed %s, backends %s, cpu/1k tx %s s, rss %s KiB, %s\n", $4, $5, $7, $9, $11, $14, $15, $16 }' >&2
      done
    done
  done
fi

# --- 2. seed experiment -----------------------------------------------------------------------------
seed="$raw/seed.tsv"
printf 'target\trun\tstatus\tjson\tmax_backends\tupdate_calls\tupdate_total_ms\tupdate_mean_ms\tall_calls\tall_total_ms\tcpu_s\tpeak_rss_kib\tinit_s\n' >"$seed"
uri() { echo "postgresql://$1:$PASSWORD@127.0.0.1:$2/$3"; }

# seed_run TARGET RUN: init directly, reset pg_stat_statements, run through TARGET, one TSV row.
seed_run() {
  local target=$1 r=$2 db="seed_$1" json="$raw/seed-$1-$2.json" out="$raw/seed-$1-$2.log" rc=0 status=ok
  local t0 init_s cpu0="" cpu1="" cpu="-" rss="-" backends stats
  target_info "$target"
  if [ "$t_ok" != 1 ]; then printf '%s\t%s\tFAILED(%s)\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n' "$target" "$r" "$t_why" >>"$seed"; return 0; fi
  if ! fits $(( est_seed_run + 10 )); then printf '%s\t%s\tSKIPPED(budget)\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n' "$target" "$r" >>"$seed"; return 0; fi
  t0=$SECONDS
  set -- "${wl[@]}" init --uri "$(uri "$t_role" "$pg_port" "$db")" --flights "$SEED_FLIGHTS"
  record "$@"
  if ! timeout -k 10 600 "$@" >"$raw/seed-$target-$r-init.log" 2>&1; then
    tail -n 10 "$raw/seed-$target-$r-init.log" >&2 || true
    printf '%s\t%s\tFAILED(init)\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n' "$target" "$r" >>"$seed"; return 0
  fi
  init_s=$(( SECONDS - t0 ))
  sql bench "SELECT pg_stat_statements_reset()" >/dev/null
  bl_sampler_start "$work/sample" $(( SEED_RUN_TIMEOUT + 30 )) "$super_psql" "$t_role" "$db" "$t_pid"
  [ -n "$t_pid" ] && cpu0=$(bl_cpu_ticks "$t_pid")
  rm -f "$json"
  set -- "${wl[@]}" run --uri "$(uri "$t_role" "$t_port" "$db")" --connections "$SEED_CONNECTIONS" \
    --workers "$SEED_WORKERS" --iterations "$SEED_ITERATIONS" --delay "$SEED_DELAY" --batch-size "$SEED_BATCH" \
    --schedule-freq "$freq_schedule" --status-freq "$freq_status" --inventory-freq "$freq_inventory" --price-freq "$freq_price" \
    --no-prepare --name "$target" --json "$json"
  record "$@"
  # Bounded by its own timeout and by what is left of the budget (plus a minute): a cut run has no JSON.
  local limit=$(( budget_end - SECONDS + 15 ))
  [ "$limit" -lt "$SEED_RUN_TIMEOUT" ] || limit=$SEED_RUN_TIMEOUT
  timeout -k 10 "$limit" "$@" >"$out" 2>&1 || rc=$?
  [ -n "$t_pid" ] && cpu1=$(bl_cpu_ticks "$t_pid")
  bl_sampler_stop
  backends=$(cat "$work/sample.backends")
  [ -n "$t_pid" ] && rss=$(cat "$work/sample.rss")
  [ -n "$cpu0" ] && [ -n "$cpu1" ] && cpu=$(bl_cpu_seconds "$cpu0" "$cpu1")
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="FAILED(timeout)"
  elif [ "$rc" -ne 0 ]; then status="FAILED(exit-$rc)"
  elif ! jq -e '.steps.__cycle__' "$json" >/dev/null 2>&1; then status="FAILED(no-json)"; fi
  if [ "$status" != ok ]; then pgh_log "seed $target run $r: $status; workload said:"; tail -n 10 "$out" >&2 || true; fi
  # PostgreSQL's own statement time for this database since the reset: UPDATEs, and every statement.
  stats=$(sql bench "SELECT coalesce(sum(calls) FILTER (WHERE query ~* '^\s*update'), 0),
      round(coalesce(sum(total_exec_time) FILTER (WHERE query ~* '^\s*update'), 0)::numeric, 1),
      coalesce(round((sum(total_exec_time) FILTER (WHERE query ~* '^\s*update')
                      / nullif(sum(calls) FILTER (WHERE query ~* '^\s*update'), 0))::numeric, 4)::text, '-'),
      coalesce(sum(calls), 0), round(coalesce(sum(total_exec_time), 0)::numeric, 1)
    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$db'" | tr '|' '\t')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$r" "$status" "$([ "$status" = ok ] && echo "$json" || echo -)" \
    "$backends" "$stats" "$cpu" "$rss" "$init_s" >>"$seed"
}

if has "$PARTS" seed && [ -z "$workload_note" ]; then
  for r in $(seq 1 "$SEED_RUNS"); do
    for target in $TARGETS; do
      pgh_log "seed: run $r of $SEED_RUNS -> $target ($SEED_CONNECTIONS connections, $SEED_ITERATIONS cycles/worker)"
      seed_run "$target" "$r"
      tail -n 1 "$seed" | awk -F'\t' '{ printf "    %s, backends %s, UPDATE calls %s total %s ms mean %s ms\n", $3, $5, $6, $7, $8 }' >&2
    done
  done
fi

# --- 3. idle scale ------------------------------------------------------------------------------------
idle="$raw/idle.tsv"
printf 'target\tconnections\tstatus\trss_before_kib\trss_holding_kib\tkib_per_client\topen_s\tfailed\tmax_backends\terrors\n' >"$idle"

# idle_run TARGET: IDLE_CONNECTIONS clients held open through TARGET, RSS before and while holding.
idle_run() {
  local target=$1 json="$raw/idle-$1.json" out="$raw/idle-$1.log" fifo="$work/idle-$1.fifo" status=ok
  local before holding=0 r t0 opened="" open_s="-" failed="-" errors="-" per="-" backends
  target_info "$target"
  if [ "$t_ok" != 1 ]; then printf '%s\t%s\tFAILED(%s)\t-\t-\t-\t-\t-\t-\t-\n' "$target" "$IDLE_CONNECTIONS" "$t_why" >>"$idle"; return 0; fi
  if ! fits $(( IDLE_CONNECTIONS / 400 + 15 )); then printf '%s\t%s\tSKIPPED(budget)\t-\t-\t-\t-\t-\t-\t-\n' "$target" "$IDLE_CONNECTIONS" >>"$idle"; return 0; fi
  sleep 2
  before=$(bl_status_kib "$t_pid" VmRSS)
  rm -f "$fifo" "$json"
  mkfifo "$fifo"
  bl_sampler_start "$work/sample" $(( IDLE_TIMEOUT + 60 )) "$super_psql" "$t_role" bench "$t_pid"
  # Our read-write end keeps the FIFO open without blocking; closing it is the workload's end of input. Opened after
  # the sampler starts and closed in the workload's redirections, so no other process holds a writer.
  exec {idle_fd}<>"$fifo"
  t0=$(date +%s.%N)
  set -- "${wl[@]}" idle --uri "$(uri "$t_role" "$t_port" bench)" --connections "$IDLE_CONNECTIONS" --hold-until-stdin-closes --json "$json"
  record "$@"
  timeout -k 10 $(( IDLE_TIMEOUT + 60 )) "$@" <"$fifo" >"$out" 2>&1 {idle_fd}>&- &
  idle_pid=$!
  for _ in $(seq 1 $(( IDLE_TIMEOUT * 5 ))); do
    if grep -q '^HOLDING' "$out" 2>/dev/null; then opened=$(date +%s.%N); break; fi
    kill -0 "$idle_pid" 2>/dev/null || break
    sleep 0.2
  done
  if [ -n "$opened" ]; then
    # Let the pooler settle, then take the highest of a few readings.
    sleep 3
    for _ in 1 2 3 4 5; do
      r=$(bl_status_kib "$t_pid" VmRSS)
      [[ "$r" =~ ^[0-9]+$ ]] && [ "$r" -gt "$holding" ] && holding=$r
      sleep 0.4
    done
  else
    status="FAILED(no-HOLDING)"
  fi
  exec {idle_fd}>&-
  idle_fd=""
  for _ in $(seq 1 300); do kill -0 "$idle_pid" 2>/dev/null || break; sleep 0.2; done
  pgh_kill_pid "$idle_pid"
  wait "$idle_pid" 2>/dev/null || true
  idle_pid=""
  bl_sampler_stop
  backends=$(cat "$work/sample.backends")
  if [ -f "$json" ]; then
    open_s=$(jq -r '.open_seconds // "-"' "$json"); failed=$(jq -r '.failed // "-"' "$json")
    errors=$(jq -r '(.errors // {}) | if type == "object" then (to_entries | map("\(.key):\(.value)") | join(" ")) else tostring end' "$json")
  elif [ -n "$opened" ]; then
    open_s=$(awk -v a="$t0" -v b="$opened" 'BEGIN { printf "%.2f", b - a }')
  fi
  [ "$status" = ok ] && per=$(bl_div $(( holding - before )) "$IDLE_CONNECTIONS" %.1f)
  [ "$status" = ok ] || { pgh_log "idle $target: $status; workload said:"; tail -n 10 "$out" >&2 || true; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$IDLE_CONNECTIONS" "$status" "${before:--}" "$holding" "$per" \
    "$open_s" "$failed" "$backends" "${errors:--}" >>"$idle"
  rm -f "$fifo"
}

if has "$PARTS" idle && [ -z "$workload_note" ]; then
  for target in $poolers; do
    pgh_log "idle: $IDLE_CONNECTIONS clients -> $target"
    idle_run "$target"
    tail -n 1 "$idle" | awk -F'\t' '{ printf "    %s, RSS %s -> %s KiB, %s KiB/client, open %s s, failed %s\n", $3, $4, $5, $6, $7, $8 }' >&2
  done
fi

# --- 6. prepared statements in transaction pooling -----------------------------------------------------
# Runs before the tls part (PostgreSQL still without ssl, as for the matrix). Both poolers are instances of their own,
# started for this part and stopped after it: the PgBouncer -M prepared attempt leaves its P_0 on the server
# connections it reached, and the Pooler gets max-prepared-statements set explicitly.
prepared="$raw/prepared.tsv"
printf 'script\ttarget\tclients\ttps\tavg_ms\tp50_ms\tp99_ms\tmax_ms\tfailed\tprocessed\tmax_backends\tconn_ms\tcpu_s\tcpu_s_per_1k_tx\tpeak_rss_kib\tstatus\n' >"$prepared"
prepared_cmds="$raw/prepared-commands.tsv"
printf 'script\ttarget\tclients\tcommand\n' >"$prepared_cmds"
prepared_attempt_c=""
pooler_prep_log="$raw/pooler-prep.log"
pooler_prep_log_lines=0

# side_pgbouncer SUFFIX LABEL [EXTRA_INI]: a PgBouncer of a part's own (folder bouncer_SUFFIX_dir, role
# bench_pgbouncer_SUFFIX), the matrix's settings (transaction mode, pool POOL_SIZE) plus EXTRA_INI's lines; sets
# bouncer_SUFFIX_port, _ok, _why and _pid.
side_pgbouncer() {
  local s=$1 label=$2 extra=${3:-} dir_var="bouncer_$1_dir" dir port
  dir=${!dir_var}
  port=$(pgh_free_port)
  printf -v "bouncer_${s}_port" '%s' "$port"
  mkdir -p "$dir"
  printf '"bench_pgbouncer_%s" "%s"\n' "$s" "$PASSWORD" >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $dir
auth_type = $AUTH
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
${extra}
INI
  record "$(pgh_find_pgbouncer)" -d "$dir/pgbouncer.ini"
  if pgh_pgbouncer_start "$dir" "$port" "$dir/pgbouncer.ini"; then
    printf -v "bouncer_${s}_ok" 1; printf -v "bouncer_${s}_why" ''
    printf -v "bouncer_${s}_pid" '%s' "$(cat "$dir/pgbouncer.pid")"
    pgh_log "PgBouncer $label on port $port (pid $(cat "$dir/pgbouncer.pid"))"
  else
    printf -v "bouncer_${s}_why" 'not-started'
    pgh_log "PgBouncer $label did not start; its rows will show FAILED"
  fi
}

# side_pooler SUFFIX LABEL [EXTRA_HOCON]: a Pooler of a part's own (folder pooler_SUFFIX_dir, role bench_pooler_SUFFIX),
# the matrix's settings plus EXTRA_HOCON inside pooler { }; sets pooler_SUFFIX_port, _ok, _why, _pid and _said.
side_pooler() {
  local s=$1 label=$2 extra=${3:-} dir_var="pooler_$1_dir" dir port pid why
  dir=${!dir_var}
  port=$(pgh_free_port)
  printf -v "pooler_${s}_port" '%s' "$port"
  mkdir -p "$dir"
  if [ "$POOLER_CMD" = "dotnet $pooler_dll" ] && [ ! -f "$pooler_dll" ]; then printf -v "pooler_${s}_why" 'no-Pooler.Host.dll'; return 0; fi
  printf '"bench_pooler_%s" "%s"\n' "$s" "$PASSWORD" >"$dir/userlist.txt"
  cat >"$dir/pooler.conf" <<HOCON
pooler {
  listen { host = "127.0.0.1", port = $port }
  auth { type = $AUTH, users-file = "$dir/userlist.txt" }
  pool-mode = transaction
  default-pool-size = $POOL_SIZE
  max-client-conn = $MAX_CLIENT_CONN
${extra}
  databases {
    bench { host = "127.0.0.1", port = $pg_port, dbname = "bench", user = "bench_pooler_$s", password = "$PASSWORD" }
  }
}
HOCON
  pgh_log "starting Pooler $label on port $port: $POOLER_CMD --config $dir/pooler.conf"
  # shellcheck disable=SC2086
  record $POOLER_CMD --config "$dir/pooler.conf"
  # shellcheck disable=SC2086
  $POOLER_CMD --config "$dir/pooler.conf" >"$dir/pooler.log" 2>&1 </dev/null &
  pid=$!
  if pgh_wait_port "$port" "${POOLER_START_TIMEOUT:-60}" "$pid"; then
    printf -v "pooler_${s}_pid" '%s' "$pid"; printf -v "pooler_${s}_ok" 1; printf -v "pooler_${s}_why" ''
  else
    if kill -0 "$pid" 2>/dev/null; then why="not-accepting"; else why="exited-at-start"; fi
    printf -v "pooler_${s}_why" '%s' "$why"
    pgh_log "Pooler $label did not start ($why); last output:"
    tail -n 20 "$dir/pooler.log" >&2 || true
    printf -v "pooler_${s}_said" '%s' "$(grep -v '^[[:space:]]*$' "$dir/pooler.log" | tail -n 1 | cut -c1-300 || true)"
    pgh_kill_pid "$pid"
    printf -v "pooler_${s}_pid" ''
  fi
}

# prep_start_pgbouncer: a PgBouncer for this part, otherwise as the matrix's (transaction mode, pool POOL_SIZE).
prep_start_pgbouncer() { side_pgbouncer prep "for the prepared part"; }

# prep_start_pooler: a Pooler for this part with max-prepared-statements = PREPARED_MAX_STATEMENTS, otherwise as the
# matrix's; free ports for its side endpoints (the matrix's Pooler may hold the defaults, 9110 and 8404).
prep_start_pooler() {
  side_pooler prep "for the prepared part" "  max-prepared-statements = $PREPARED_MAX_STATEMENTS
  pbm { port = 0 }
  http { port = 0 }"
}

# prep_stop: stops this part's PgBouncer and Pooler; their logs go to the raw folder (pooler_prep_log_lines: the
# Pooler's log lines up to the stop, so its own shutdown lines are not counted as the runs' warnings).
prep_stop() {
  [ -f "$pooler_prep_dir/pooler.log" ] && pooler_prep_log_lines=$(wc -l <"$pooler_prep_dir/pooler.log")
  pgh_pgbouncer_stop "$bouncer_prep_dir/pgbouncer.pid"
  bouncer_prep_ok=0; bouncer_prep_why="stopped"; bouncer_prep_pid=""
  if [ -n "$pooler_prep_pid" ]; then pgh_kill_pid "$pooler_prep_pid"; wait "$pooler_prep_pid" 2>/dev/null || true; fi
  pooler_prep_ok=0; pooler_prep_why="stopped"; pooler_prep_pid=""
  [ -f "$bouncer_prep_dir/pgbouncer.log" ] && cp "$bouncer_prep_dir/pgbouncer.log" "$raw/pgbouncer-prep.log"
  [ -f "$pooler_prep_dir/pooler.log" ] && cp "$pooler_prep_dir/pooler.log" "$pooler_prep_log"
  return 0
}

# prepared_run SCRIPT TARGET CLIENTS SECONDS: one pgbench run of the prepared part; its command (as run) kept for the report.
prepared_run() {
  local before
  before=$(wc -l <"$commands")
  pgbench_run "$prepared" "$@"
  if [ "$(wc -l <"$commands")" -gt "$before" ]; then
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(tail -n 1 "$commands")" >>"$prepared_cmds"
  fi
}

# prep_scripts TARGET: what this part runs through TARGET (PgBouncer cannot keep named statements in transaction mode).
prep_scripts() {
  case "$1" in
    direct)    echo select-prepared ;;
    pgbouncer) echo select-extended ;;
    pooler)    echo "select-prepared select-extended" ;;
  esac
}

if has "$PARTS" prepared; then
  pgh_log "prepared: instances of [${poolers}] of its own (transaction mode, pool $POOL_SIZE; Pooler max-prepared-statements $PREPARED_MAX_STATEMENTS)"
  if has "$TARGETS" pgbouncer; then prep_start_pgbouncer; fi
  if has "$TARGETS" pooler; then prep_start_pooler; fi
  # Warm-up, not recorded: each target with what it will run, 50 clients; the Pooler's second script for a shorter while.
  if [ "$WARMUP" -gt 0 ]; then
    for target in $TARGETS; do
      target_info "$target-prep"
      [ "$t_ok" = 1 ] || continue
      : >"$raw/warmup-$target-prep.log"
      w=$WARMUP
      for script in $(prep_scripts "$target"); do
        pgh_log "prepared warm-up: pgbench $(script_args "$script") -T $w -c 50 -> $target-prep (not recorded)"
        # shellcheck disable=SC2046
        PGPASSWORD=$PASSWORD timeout -k 10 $(( w + 60 )) "$PGBENCH" -h 127.0.0.1 -p "$t_port" -U "$t_role" $(script_args "$script") \
          -T "$w" -c 50 -j "$THREADS" -n bench >>"$raw/warmup-$target-prep.log" 2>&1 \
          || pgh_log "prepared warm-up ($script) through $target failed (see raw/warmup-$target-prep.log)"
        w=$prep_ext_warm
      done
    done
  fi
  for c in $PREPARED_CLIENTS; do
    for target in $TARGETS; do
      for script in $(prep_scripts "$target"); do
        pgh_log "prepared: pgbench $(script_args "$script") -T $DURATION -c $c -> $target-prep"
        prepared_run "$script" "$target-prep" "$c" "$DURATION"
        tail -n 1 "$prepared" | awk -F'\t' '{ printf "    tps %s, avg %s ms, p99 %s ms, failed %s, backends %s, cpu/1k tx %s s, rss %s KiB, %s\n", $4, $5, $7, $9, $11, $14, $15, $16 }' >&2
      done
    done
  done
  # After the measured runs: it leaves P_0 prepared on PgBouncer's server connections.
  if has "$TARGETS" pgbouncer && [ "$PREPARED_PGBOUNCER_ATTEMPT" -gt 0 ]; then
    read -r prepared_attempt_c _ <<<"$PREPARED_CLIENTS"
    pgh_log "prepared: pgbench -S -M prepared -T $PREPARED_PGBOUNCER_ATTEMPT -c $prepared_attempt_c -> pgbouncer-prep (attempt; PgBouncer ${bouncer_version#PgBouncer } relays statement names unchanged, expected to fail)"
    prepared_run select-prepared pgbouncer-prep "$prepared_attempt_c" "$PREPARED_PGBOUNCER_ATTEMPT"
    tail -n 1 "$prepared" | awk -F'\t' '{ printf "    tps %s, failed %s, %s\n", $4, $9, $16 }' >&2
  fi
  prep_stop
fi

# --- 5. TLS on both sides ------------------------------------------------------------------------------
# Runs after the other parts: turning ssl on (a reload) would put TLS under their direct rows (libpq's sslmode=prefer).
tls="$raw/tls.tsv"
printf 'script\ttarget\tclients\ttps\tavg_ms\tp50_ms\tp99_ms\tmax_ms\tfailed\tprocessed\tmax_backends\tconn_ms\tcpu_s\tcpu_s_per_1k_tx\tpeak_rss_kib\tstatus\n' >"$tls"
tls_seen="$raw/tls-negotiated.tsv"
printf 'target\tclient_side\tserver_side\n' >"$tls_seen"
tls_note=""
tls_cmd_from=0
tls_cmd_to=0
tls_roles="bench_direct_tls,bench_pgbouncer_tls,bench_pooler_tls"

# tls_openssl ARGS...: one openssl command in the certificate folder, recorded, under a timeout.
tls_openssl() {
  record openssl "$@"
  (cd "$tls_dir" && timeout -k 5 60 openssl "$@") >>"$tls_dir/openssl.log" 2>&1
}

# tls_make_certs: a throw-away CA and a server certificate for CN=localhost (SAN DNS:localhost, IP:127.0.0.1) in
# $tls_dir; keys 0600. PostgreSQL and PgBouncer get their own copies (owned by the service user when root).
tls_make_certs() {
  local newkey=(-newkey "$TLS_KEY") usage="digitalSignature, keyEncipherment"
  if [ "$TLS_KEY" = ec ]; then newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1); usage="digitalSignature"; fi
  mkdir -p "$tls_dir"
  chmod 755 "$tls_dir"
  printf 'subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, %s\nextendedKeyUsage = serverAuth\n' \
    "$usage" >"$tls_dir/server.ext"
  (umask 077
   tls_openssl req -x509 "${newkey[@]}" -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=Pooler bench throw-away CA" \
     -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
   tls_openssl req -new "${newkey[@]}" -nodes -keyout server.key -out server.csr -subj "/CN=localhost" &&
   tls_openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt &&
   tls_openssl verify -CAfile ca.crt server.crt) || return 1
  chmod 644 "$tls_dir/ca.crt" "$tls_dir/server.crt"
  chmod 600 "$tls_dir/ca.key" "$tls_dir/server.key"
}

# tls_copy_certs DIR: ca.crt, server.crt and server.key (0600) into DIR, owned by the service user when root.
tls_copy_certs() {
  cp "$tls_dir/ca.crt" "$tls_dir/server.crt" "$tls_dir/server.key" "$1/"
  chmod 644 "$1/ca.crt" "$1/server.crt"
  chmod 600 "$1/server.key"
  pgh_give "$1/ca.crt" "$1/server.crt" "$1/server.key"
}

# tls_pg_on: ssl = on (ALTER SYSTEM, reload), pg_hba lets the tls roles in over TLS only; waits for the reload.
tls_pg_on() {
  local hba="$pg_dir/data/pg_hba.conf"
  mkdir -p "$pg_dir/tls"
  chmod 700 "$pg_dir/tls"
  pgh_give "$pg_dir/tls"
  tls_copy_certs "$pg_dir/tls"
  set -- -c "ALTER SYSTEM SET ssl_cert_file = '$pg_dir/tls/server.crt'" -c "ALTER SYSTEM SET ssl_key_file = '$pg_dir/tls/server.key'" \
    -c "ALTER SYSTEM SET ssl_ca_file = '$pg_dir/tls/ca.crt'" -c "ALTER SYSTEM SET ssl = on"
  record "$PSQL" -h "$pg_dir" -p "$pg_port" -U postgres -d postgres "$@"
  pgh_psql_super "$pg_dir" "$pg_port" postgres "$@" || return 1
  # First match wins: the tls roles over TLS only, everyone else as before (host lines match with or without TLS).
  { printf 'hostssl   all %s 127.0.0.1/32 %s\nhostnossl all %s 127.0.0.1/32 reject\n' "$tls_roles" "$AUTH" "$tls_roles"
    cat "$hba"; } >"$work/pg_hba.new"
  cat "$work/pg_hba.new" >"$hba"
  record "$PSQL" -h "$pg_dir" -p "$pg_port" -U postgres -d postgres -c "SELECT pg_reload_conf()"
  sql postgres "SELECT pg_reload_conf()" >/dev/null || return 1
  for _ in $(seq 1 50); do
    [ "$(sql postgres "SHOW ssl" 2>/dev/null)" = on ] && break
    sleep 0.2
  done
  [ "$(sql postgres "SHOW ssl" 2>/dev/null)" = on ] || { tail -n 20 "$pg_dir/postgres.log" >&2 || true; return 1; }
  [ "$(sql postgres "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL")" = 0 ] \
    || { sql postgres "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL" >&2; return 1; }
}

# tls_start_pgbouncer: a second PgBouncer, TLS to clients and to PostgreSQL, otherwise as the matrix's.
tls_start_pgbouncer() {
  mkdir -p "$bouncer_tls_dir"
  tls_copy_certs "$bouncer_tls_dir"
  side_pgbouncer tls "with TLS" "client_tls_sslmode = require
client_tls_key_file = $bouncer_tls_dir/server.key
client_tls_cert_file = $bouncer_tls_dir/server.crt
client_tls_ca_file = $bouncer_tls_dir/ca.crt
server_tls_sslmode = $TLS_SERVER_SSLMODE
server_tls_ca_file = $bouncer_tls_dir/ca.crt"
}

# tls_start_pooler: a second Pooler, TLS to clients and to PostgreSQL, otherwise as the matrix's.
tls_start_pooler() {
  side_pooler tls "with TLS" "  client-tls-sslmode = \"require\"
  client-tls-cert-file = \"$tls_dir/server.crt\"
  client-tls-key-file = \"$tls_dir/server.key\"
  client-tls-ca-file = \"$tls_dir/ca.crt\"
  server-tls-sslmode = \"$TLS_SERVER_SSLMODE\"
  server-tls-ca-file = \"$tls_dir/ca.crt\""
}

# tls_probe TARGET: one psql session with sslmode=require through TARGET (a *-tls target); notes the client side's
# protocol and cipher (\conninfo) and the server side's (pg_stat_ssl of the backend that ran the query). Fails, and
# marks the target failed (tls-probe), when the session does not work.
tls_probe() {
  local target=$1 out="$raw/tls-probe-$1.log" client server said
  target_info "$target"
  [ "$t_ok" = 1 ] || return 0
  set -- "$PSQL" -X -At -h 127.0.0.1 -p "$t_port" -U "$t_role" -d bench -c '\conninfo' \
    -c "SELECT coalesce(version, 'no-TLS') || ' ' || coalesce(cipher, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
  record env PGSSLMODE=require "$@"
  if PGPASSWORD=$PASSWORD PGSSLMODE=require timeout -k 5 30 "$@" >"$out" 2>&1; then
    client=$(sed -n 's/^SSL connection (protocol: \([^,]*\), cipher: \([^,]*\),.*/\1 \2/p' "$out" | head -n1)
    server=$(grep -E '^(TLSv|SSLv|no-TLS)' "$out" | head -n1)
    printf '%s\t%s\t%s\n' "${target%-tls}" "${client:--}" "${server:--}" >>"$tls_seen"
    pgh_log "  $target: client side ${client:-?}; server side ${server:-?}"
    return 0
  fi
  pgh_log "  $target: a TLS session failed; psql said:"
  tail -n 5 "$out" >&2 || true
  said=$(grep -v '^[[:space:]]*$' "$out" | tail -n 1 | cut -c1-200 | tr '\t|' '  ' || true)
  printf '%s\t%s\t%s\n' "${target%-tls}" "FAILED: ${said:-no output}" "-" >>"$tls_seen"
  case "$target" in
    direct-tls)    tls_direct_ok=0; tls_direct_why="tls-probe" ;;
    pgbouncer-tls) bouncer_tls_ok=0; bouncer_tls_why="tls-probe" ;;
    pooler-tls)    pooler_tls_ok=0; pooler_tls_why="tls-probe" ;;
  esac
}

if has "$PARTS" tls; then
  tls_cmd_from=$(( $(wc -l <"$commands") + 1 ))
  pgh_log "tls: certificates ($TLS_KEY), PostgreSQL ssl = on (reload), TLS instances of [${poolers}]"
  if ! tls_make_certs; then
    tls_note="the certificates could not be made (openssl)"; tail -n 20 "$tls_dir/openssl.log" >&2 || true
  elif ! tls_pg_on; then
    tls_note="PostgreSQL's ssl could not be turned on"
  fi
  if [ -n "$tls_note" ]; then
    pgh_log "tls part not run: $tls_note"
    tls_direct_why="no-TLS-setup"; bouncer_tls_why="no-TLS-setup"; pooler_tls_why="no-TLS-setup"
  else
    tls_direct_ok=1; tls_direct_why=""
    if has "$TARGETS" pgbouncer; then tls_start_pgbouncer; fi
    if has "$TARGETS" pooler; then tls_start_pooler; fi
    for target in $TARGETS; do tls_probe "$target-tls"; done
  fi
  tls_hs_warm=$(( WARMUP / 4 > 2 ? WARMUP / 4 : 2 ))
  if [ -z "$tls_note" ] && [ "$WARMUP" -gt 0 ]; then
    for target in $TARGETS; do
      target_info "$target-tls"
      [ "$t_ok" = 1 ] || continue
      pgh_log "tls warm-up: pgbench -S -T $WARMUP -c 50, then -S -C -T $tls_hs_warm -c $TLS_HANDSHAKE_CLIENTS -> $target-tls (not recorded)"
      PGPASSWORD=$PASSWORD PGSSLMODE=require timeout -k 10 $(( WARMUP + 60 )) "$PGBENCH" -h 127.0.0.1 -p "$t_port" -U "$t_role" -S -T "$WARMUP" \
        -c 50 -j "$THREADS" -n bench >"$raw/warmup-$target-tls.log" 2>&1 || pgh_log "tls warm-up through $target failed (see raw/warmup-$target-tls.log)"
      PGPASSWORD=$PASSWORD PGSSLMODE=require timeout -k 10 $(( tls_hs_warm + 60 )) "$PGBENCH" -h 127.0.0.1 -p "$t_port" -U "$t_role" -S -C -T "$tls_hs_warm" \
        -c "$TLS_HANDSHAKE_CLIENTS" -j "$THREADS" -n bench >>"$raw/warmup-$target-tls.log" 2>&1 || pgh_log "tls handshake warm-up through $target failed"
    done
  fi
  for c in $TLS_CLIENTS; do
    for target in $TARGETS; do
      pgh_log "tls: PGSSLMODE=require pgbench -S -M simple -T $(tls_duration "$c") -c $c -> $target-tls"
      pgbench_run "$tls" select-simple "$target-tls" "$c" "$(tls_duration "$c")"
      tail -n 1 "$tls" | awk -F'\t' '{ printf "    tps %s, avg %s ms, p99 %s ms, failed %s, backends %s, cpu/1k tx %s s, rss %s KiB, %s\n", $4, $5, $7, $9, $11, $14, $15, $16 }' >&2
    done
  done
  for target in $TARGETS; do
    pgh_log "tls: PGSSLMODE=require pgbench -S -M simple -C -T $TLS_HANDSHAKE_DURATION -c $TLS_HANDSHAKE_CLIENTS -> $target-tls (handshake rate)"
    pgbench_run "$tls" select-connect "$target-tls" "$TLS_HANDSHAKE_CLIENTS" "$TLS_HANDSHAKE_DURATION"
    tail -n 1 "$tls" | awk -F'\t' '{ printf "    connections/s %s, avg connection %s ms, failed %s, cpu/1k connections %s s, %s\n", $4, $12, $9, $14, $16 }' >&2
  done
  tls_cmd_to=$(wc -l <"$commands")
fi

# --- charts -----------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
charts=()
if [ -f "$charts_dll" ]; then
  if has "$PARTS" matrix && [ "$(wc -l <"$matrix")" -gt 1 ]; then
    record dotnet "$charts_dll" tps --tsv "$matrix" --out-prefix "$RESULTS_DIR/$stamp-tps" --title-prefix pgbench
    if out=$(timeout 120 dotnet "$charts_dll" tps --tsv "$matrix" --out-prefix "$RESULTS_DIR/$stamp-tps" --title-prefix pgbench 2>"$work/charts.err"); then
      while read -r f; do charts+=("$f"); done <<<"$out"
    else
      cat "$work/charts.err" >&2; pgh_log "tps charts failed"
    fi
  fi
  mapfile -t seed_specs < <(awk -F'\t' 'NR > 1 && $3 == "ok" { print $1 "=" $4 }' "$seed")
  if [ "${#seed_specs[@]}" -gt 0 ]; then
    record dotnet "$charts_dll" latency --out "$RESULTS_DIR/$stamp-seed-latency.png" --title "seed experiment: cycle latency, $SEED_CONNECTIONS connections" "${seed_specs[@]}"
    if timeout 120 dotnet "$charts_dll" latency --out "$RESULTS_DIR/$stamp-seed-latency.png" \
        --title "seed experiment: cycle latency, $SEED_CONNECTIONS connections" "${seed_specs[@]}" >/dev/null 2>"$work/charts.err"; then
      charts+=("$RESULTS_DIR/$stamp-seed-latency.png")
    else
      cat "$work/charts.err" >&2; pgh_log "latency chart failed"
    fi
  fi
else
  pgh_log "no $charts_dll: no charts"
fi

# --- report -----------------------------------------------------------------------------------------
report="$RESULTS_DIR/$stamp.md"
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
[ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit (with uncommitted changes)"
# tsv_get TSV SCRIPT TARGET CLIENTS COLUMN: one value of a matrix-shaped TSV; "-" where it is missing.
tsv_get() { awk -F'\t' -v s="$2" -v t="$3" -v c="$4" -v k="$5" '
  NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
  $1 == s && $2 == t && $3 == c { print $col[k]; found = 1; exit }
  END { if (!found) print "-" }' "$1"; }
# tsv_ok: the same, "-" unless the run's status is ok.
tsv_ok() { local v; v=$(tsv_get "$@"); [ "$(tsv_get "$1" "$2" "$3" "$4" status)" = ok ] && echo "$v" || echo "-"; }
matrix_get() { tsv_get "$matrix" "$@"; }
ok_val() { tsv_ok "$matrix" "$@"; }
# verdict RATIO [MIN]: a target of >= MIN (default 1.0) met or not ("not measured" without a ratio).
verdict() { if [ "${1:--}" = - ]; then echo "not measured"; elif awk -v r="$1" -v m="${2:-1}" 'BEGIN { exit !(r >= m) }'; then echo "**met**"; else echo "not met"; fi; }
label() { case "$1" in direct) echo "PostgreSQL direct" ;; pgbouncer) echo "PgBouncer" ;; pooler) echo "Pooler" ;; *) echo "$1" ;; esac; }
tls_hs_warm=${tls_hs_warm:-0}
img() { [ -f "$RESULTS_DIR/$1" ] && printf '![%s](%s)\n\n' "$2" "$1"; return 0; }
# shellcheck disable=SC2016 # backticks are markdown here
script_title() {
  case "$1" in
    select-simple)   echo 'select-only, simple protocol (`pgbench -S`)' ;;
    select-extended) echo 'select-only, extended protocol (`pgbench -S -M extended`)' ;;
    tpcb-like)       echo 'TPC-B-like read/write (`pgbench`, default script)' ;;
  esac
}
mib() { [[ "${1:-}" =~ ^[0-9]+$ ]] && awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }' || echo "-"; }

{
  echo "# Pooler benchmark $stamp"
  echo
  echo "One run of \`bench/run.sh$([ "$quick" = 1 ] && echo ' --quick')\`, all targets on the same machine in the same run, everything on 127.0.0.1."
  echo "How to read it: [bench/README.md](../README.md)."
  echo
  echo "| machine | |"
  echo "| --- | --- |"
  echo "| cores | $(nproc) ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)) |"
  echo "| RAM | $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) |"
  echo "| kernel | $(uname -sr) |"
  echo "| OS | Debian $(cat /etc/debian_version 2>/dev/null || echo '?') |"
  echo "| load average at start of report | $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared) |"
  echo "| PostgreSQL | $pg_version (fsync off, synchronous_commit off, shared_buffers 128MB, max_connections $pg_max_conn, pg_stat_statements$(has "$PARTS" tls && echo '; ssl on for part 5 only')) |"
  echo "| PgBouncer | ${bouncer_version#PgBouncer } (Debian package), transaction mode |"
  echo "| Pooler | commit $commit, Release build, transaction mode, $(dotnet --version 2>/dev/null || echo '?') SDK |"
  echo "| pgbench | $("$PGBENCH" --version | awk '{print $3}'), -j $THREADS, scale $SCALE, auth $AUTH |"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC'), took $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s |"
  echo

  if has "$PARTS" matrix; then
    echo "## 1. pgbench matrix"
    echo
    echo "\`pgbench -T $DURATION -j $THREADS -n\` per run; both poolers in transaction mode with pool size $POOL_SIZE, max_client_conn $MAX_CLIENT_CONN."
    echo "tps excludes the initial connection time; p50/p99/max come from pgbench's per-transaction log (\`-l\`), nearest rank;"
    echo "\"backends\" is the most client backends of the target's role in the bench database seen in pg_stat_activity (sampled every 0.5 s)."
    echo
    for script in $SCRIPTS; do
      echo "### $(script_title "$script")"
      echo
      img "$stamp-tps-$script.png" "tps by clients, $script"
      echo "| clients | target | tps | avg ms | p50 ms | p99 ms | max ms | failed | backends | status |"
      echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
      for c in $CLIENTS; do
        for t in $TARGETS; do
          echo "| $c | $(label "$t") | $(bl_fmt_int "$(matrix_get "$script" "$t" "$c" tps)") | $(matrix_get "$script" "$t" "$c" avg_ms) | $(matrix_get "$script" "$t" "$c" p50_ms) | $(matrix_get "$script" "$t" "$c" p99_ms) | $(matrix_get "$script" "$t" "$c" max_ms) | $(matrix_get "$script" "$t" "$c" failed) | $(matrix_get "$script" "$t" "$c" max_backends) | $(matrix_get "$script" "$t" "$c" status) |"
        done
      done
      echo
      echo "| clients | tps Pooler / PgBouncer | tps Pooler / direct | p99 Pooler / PgBouncer | p99 Pooler / direct |"
      echo "| ---: | ---: | ---: | ---: | ---: |"
      for c in $CLIENTS; do
        echo "| $c | $(bl_div "$(ok_val "$script" pooler "$c" tps)" "$(ok_val "$script" pgbouncer "$c" tps)") | $(bl_div "$(ok_val "$script" pooler "$c" tps)" "$(ok_val "$script" direct "$c" tps)") | $(bl_div "$(ok_val "$script" pooler "$c" p99_ms)" "$(ok_val "$script" pgbouncer "$c" p99_ms)") | $(bl_div "$(ok_val "$script" pooler "$c" p99_ms)" "$(ok_val "$script" direct "$c" p99_ms)") |"
      done
      echo
    done
  fi

  if has "$PARTS" seed; then
    echo "## 2. Seed experiment"
    echo
    if [ -n "$workload_note" ]; then
      echo "Not run: $workload_note."
      echo
    else
      echo "src/Pooler.Workload: $SEED_CONNECTIONS connections ($SEED_WORKERS workers), $SEED_ITERATIONS cycles per worker, delay $SEED_DELAY ms,"
      echo "batch $SEED_BATCH, frequencies schedule/status/inventory/price $freq_schedule/$freq_status/$freq_inventory/$freq_price, no prepared statements;"
      echo "\`init --flights $SEED_FLIGHTS\` directly before each run; both poolers with pool size $SEED_POOL_SIZE. Statement time is PostgreSQL's"
      echo "(pg_stat_statements, reset after each init, \`total_exec_time\` of the statements starting with UPDATE in that run's database)."
      echo
      img "$stamp-seed-latency.png" "seed cycle latency distribution"
      echo "| target | run | status | cycles/s | cycle p50 ms | cycle p99 ms | cycle max ms | errors | backends | UPDATE calls | UPDATE total ms | UPDATE mean ms | all statements ms | proxy CPU s |"
      echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
      while IFS=$'\t' read -r t r st js be uc ut um _ac at cpu rss init_s; do
        [ "$t" = target ] && continue
        local_cps="-"; p50="-"; p99="-"; pmax="-"; errs="-"
        if [ "$st" = ok ]; then
          read -r local_cps p50 p99 pmax < <(jq -r '[.cycles_per_second, .steps.__cycle__.p50_ms, .steps.__cycle__.p99_ms, .steps.__cycle__.max_ms] | map(if type == "number" then (. * 100 | round / 100) else "-" end) | @tsv' "$js")
          errs=$(jq -r '(.errors // {}) | to_entries | map("\(.key) \(.value)") | join(", ") | if . == "" then "0" else . end' "$js")
        fi
        echo "| $(label "$t") | $r | $st | $local_cps | $p50 | $p99 | $pmax | $errs | $be | $(bl_fmt_int "$uc") | $(bl_fmt_int "$ut") | $um | $(bl_fmt_int "$at") | $cpu |"
      done <"$seed"
      echo
      echo "Per step, median over the runs of each target (count summed):"
      echo
      echo "| step | target | count | ops/s | p50 ms | p99 ms | max ms |"
      echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
      steps=$(awk -F'\t' 'NR > 1 && $3 == "ok" { print $4 }' "$seed" | while read -r js; do jq -r '.steps | keys[]' "$js"; done | sort -u | awk '$0 == "__cycle__" { c = 1; next } { print } END { if (c) print "__cycle__" }')
      for step in $steps; do
        for t in $TARGETS; do
          mapfile -t files < <(awk -F'\t' -v t="$t" 'NR > 1 && $1 == t && $3 == "ok" { print $4 }' "$seed")
          [ "${#files[@]}" -gt 0 ] || continue
          vals=$(for js in "${files[@]}"; do jq -r --arg s "$step" '.steps[$s] // {} | [.count, .ops_per_second, .p50_ms, .p99_ms, .max_ms] | map(. // "-") | @tsv' "$js"; done)
          cnt=$(awk -F'\t' '{ s += $1 } END { print s + 0 }' <<<"$vals")
          # shellcheck disable=SC2046
          echo "| $step | $(label "$t") | $(bl_fmt_int "$cnt") | $(bl_median $(cut -f2 <<<"$vals")) | $(bl_median $(cut -f3 <<<"$vals")) | $(bl_median $(cut -f4 <<<"$vals")) | $(bl_median $(cut -f5 <<<"$vals")) |"
        done
      done
      echo
      echo "UPDATE statement time, median over runs, against the seed's claim of \"97% less statement time\" through a pooler:"
      echo
      echo "| target | UPDATE total ms | UPDATE mean ms | change of total vs direct | change of mean vs direct |"
      echo "| --- | ---: | ---: | ---: | ---: |"
      # shellcheck disable=SC2046
      d_tot=$(bl_median $(awk -F'\t' '$1 == "direct" && $3 == "ok" { print $7 }' "$seed"))
      # shellcheck disable=SC2046
      d_mean=$(bl_median $(awk -F'\t' '$1 == "direct" && $3 == "ok" { print $8 }' "$seed"))
      for t in $TARGETS; do
        # shellcheck disable=SC2046
        tot=$(bl_median $(awk -F'\t' -v t="$t" '$1 == t && $3 == "ok" { print $7 }' "$seed"))
        # shellcheck disable=SC2046
        mean=$(bl_median $(awk -F'\t' -v t="$t" '$1 == t && $3 == "ok" { print $8 }' "$seed"))
        ch_tot="-"; ch_mean="-"
        if [ "$t" != direct ]; then
          r1=$(bl_div "$tot" "$d_tot" %.4f); r2=$(bl_div "$mean" "$d_mean" %.4f)
          [ "$r1" != "-" ] && ch_tot=$(awk -v r="$r1" 'BEGIN { printf "%+.0f%%", (r - 1) * 100 }')
          [ "$r2" != "-" ] && ch_mean=$(awk -v r="$r2" 'BEGIN { printf "%+.0f%%", (r - 1) * 100 }')
        fi
        echo "| $(label "$t") | $(bl_fmt_int "$tot") | $mean | $ch_tot | $ch_mean |"
      done
      echo
    fi
  fi

  if has "$PARTS" matrix && [ -n "$poolers" ]; then
    echo "## 3. Cost"
    echo
    echo "CPU seconds (utime + stime from /proc/PID/stat, before and after each pgbench run, including the clients' connecting)"
    echo "per 1,000 transactions, and the highest VmRSS sampled during the run (every 0.5 s), of the pooler under test."
    echo
    echo "| script | clients | PgBouncer CPU s / 1k tx | Pooler CPU s / 1k tx | Pooler / PgBouncer | PgBouncer peak RSS MiB | Pooler peak RSS MiB |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for script in $SCRIPTS; do
      for c in $CLIENTS; do
        b=$(ok_val "$script" pgbouncer "$c" cpu_s_per_1k_tx); p=$(ok_val "$script" pooler "$c" cpu_s_per_1k_tx)
        echo "| $script | $c | $b | $p | $(bl_div "$p" "$b") | $(mib "$(matrix_get "$script" pgbouncer "$c" peak_rss_kib)") | $(mib "$(matrix_get "$script" pooler "$c" peak_rss_kib)") |"
      done
    done
    echo
  fi

  if has "$PARTS" idle && [ -n "$poolers" ]; then
    echo "## 4. Idle scale"
    echo
    if [ -n "$workload_note" ]; then
      echo "Not run: $workload_note."
    else
      echo "\`Pooler.Workload idle\` opens $IDLE_CONNECTIONS client connections through the pooler and holds them; RSS per idle client ="
      echo "(VmRSS while holding, highest of 5 readings after 3 s − VmRSS just before) / connections. Open time is the workload's own."
      echo
      echo "| target | connections | status | RSS before MiB | RSS holding MiB | KiB per idle client | open s | failed | backends | errors |"
      echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
      while IFS=$'\t' read -r t n st rb rh per os fl be er; do
        [ "$t" = target ] && continue
        echo "| $(label "$t") | $(bl_fmt_int "$n") | $st | $(mib "$rb") | $(mib "$rh") | $per | $os | $fl | $be | $er |"
      done <"$idle"
    fi
    echo
  fi

  if has "$PARTS" tls; then
    echo "## 5. TLS on both sides"
    echo
    if [ -n "$tls_note" ]; then
      echo "Not run: $tls_note."
      echo
    else
      echo "Every connection is encrypted: pgbench → target with \`PGSSLMODE=require\` (libpq), and each pooler → PostgreSQL with"
      echo "sslmode \`$TLS_SERVER_SSLMODE\` against the CA. Certificates are made for the run with \`openssl\` (key \`$TLS_KEY\`): a throw-away CA and a"
      echo "server certificate for CN=localhost (SAN DNS:localhost, IP:127.0.0.1), used by PostgreSQL and by both poolers."
      echo "PostgreSQL's \`ssl = on\` (ssl_cert_file, ssl_key_file, ssl_ca_file) is switched on with a reload after the other parts, and"
      echo "pg_hba lets this part's roles in over TLS only (\`hostssl\`, then \`hostnossl ... reject\`), so every row that ran had TLS"
      echo "between the pooler and PostgreSQL. The poolers are second instances on their own ports, as the matrix's otherwise"
      echo "(transaction mode, pool size $POOL_SIZE, max_client_conn $MAX_CLIENT_CONN, auth $AUTH): PgBouncer with \`client_tls_sslmode = require\`,"
      echo "\`client_tls_key_file\`/\`client_tls_cert_file\`/\`client_tls_ca_file\`, \`server_tls_sslmode = $TLS_SERVER_SSLMODE\`, \`server_tls_ca_file\`;"
      echo "Pooler with \`client-tls-sslmode = require\`, \`client-tls-cert-file\`/\`client-tls-key-file\`/\`client-tls-ca-file\`,"
      echo "\`server-tls-sslmode = $TLS_SERVER_SSLMODE\`, \`server-tls-ca-file\`. Each target first gets an unrecorded warm-up ($WARMUP s of"
      echo "\`pgbench -S -c 50\`, then ${tls_hs_warm} s of \`pgbench -S -C -c $TLS_HANDSHAKE_CLIENTS\`, both with TLS)."
      echo
      echo "Negotiated (one \`psql\` session per target: \`\\conninfo\` on the client side, \`pg_stat_ssl\` of the backend that ran the query):"
      echo
      echo "| target | pgbench → target | → PostgreSQL |"
      echo "| --- | --- | --- |"
      while IFS=$'\t' read -r t cs ss; do
        [ "$t" = target ] && continue
        echo "| $(label "$t") | $cs | $ss |"
      done <"$tls_seen"
      echo
      if [ -n "$pooler_tls_said" ]; then
        echo "Pooler with TLS did not start ($pooler_tls_why); its last line: \`${pooler_tls_said//\`/\'}\`"
        echo
      fi
      echo "### Throughput, select-only, simple protocol"
      echo
      echo "\`PGSSLMODE=require pgbench -S -M simple -T T -c C -j $THREADS -n -l\` per run, the targets interleaved at each client count,"
      echo "T = $DURATION s plus $TLS_CONNECT_ALLOWANCE s per 1,000 clients: pgbench's clock runs while each thread opens its connections one after"
      echo "the other (each a TLS handshake; \"connect ms\" is pgbench's initial connection time), and tps leaves that time out."
      echo "Other columns as in the matrix; CPU (including the clients' handshakes) and RSS are the pooler's, as in Cost."
      echo
      echo "| clients | target | tps | avg ms | p50 ms | p99 ms | max ms | failed | backends | connect ms | CPU s / 1k tx | peak RSS MiB | status |"
      echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
      for c in $TLS_CLIENTS; do
        for t in $TARGETS; do
          g() { tsv_get "$tls" select-simple "$t-tls" "$c" "$1"; }
          echo "| $c | $(label "$t") | $(bl_fmt_int "$(g tps)") | $(g avg_ms) | $(g p50_ms) | $(g p99_ms) | $(g max_ms) | $(g failed) | $(g max_backends) | $(bl_fmt_int "$(g conn_ms)") | $(g cpu_s_per_1k_tx) | $(mib "$(g peak_rss_kib)") | $(g status) |"
        done
      done
      echo
      echo "### Handshake rate"
      echo
      echo "\`PGSSLMODE=require pgbench -S -M simple -C -T $TLS_HANDSHAKE_DURATION -c $TLS_HANDSHAKE_CLIENTS -j $([ "$TLS_HANDSHAKE_CLIENTS" -lt "$THREADS" ] && echo "$TLS_HANDSHAKE_CLIENTS" || echo "$THREADS") -n\`: a new connection (TCP, TLS handshake,"
      echo "startup, authentication) for every transaction; pgbench's tps is then connections per second. \"avg connect ms\" is pgbench's"
      echo "average connection time, \"ms per connection + query\" its latency average (run time × clients / transactions)."
      echo "Through a pooler the server connections stay pooled: the handshakes measured are the clients'."
      echo
      echo "| target | connections/s | avg connect ms | ms per connection + query | failed | CPU s / 1k connections | peak RSS MiB | status |"
      echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
      for t in $TARGETS; do
        g() { tsv_get "$tls" select-connect "$t-tls" "$TLS_HANDSHAKE_CLIENTS" "$1"; }
        echo "| $(label "$t") | $(bl_fmt_int "$(g tps)") | $(g conn_ms) | $(g avg_ms) | $(g failed) | $(g cpu_s_per_1k_tx) | $(mib "$(g peak_rss_kib)") | $(g status) |"
      done
      echo
      echo "### Ratios and the issue's targets"
      echo
      echo "Same-run ratios (above 1 = Pooler faster; for p99 below 1 = Pooler lower). Targets: Pooler ≥ 1.0× PgBouncer in tps at"
      echo "50 and 1,000 clients, and a handshake rate (\`pgbench -C\`) at least PgBouncer's."
      echo
      echo "| measure | Pooler / PgBouncer | Pooler / direct | target | met? |"
      echo "| --- | ---: | ---: | --- | --- |"
      for c in $TLS_CLIENTS; do
        p=$(tsv_ok "$tls" select-simple pooler-tls "$c" tps); b=$(tsv_ok "$tls" select-simple pgbouncer-tls "$c" tps)
        d=$(tsv_ok "$tls" select-simple direct-tls "$c" tps)
        if [ "$c" = 50 ] || [ "$c" = 1000 ]; then tgt="≥ 1.0× PgBouncer"; v=$(verdict "$(bl_div "$p" "$b" %.4f)"); else tgt="(none)"; v="-"; fi
        echo "| tps, $c clients | $(bl_div "$p" "$b") | $(bl_div "$p" "$d") | $tgt | $v |"
      done
      for c in $TLS_CLIENTS; do
        p=$(tsv_ok "$tls" select-simple pooler-tls "$c" p99_ms); b=$(tsv_ok "$tls" select-simple pgbouncer-tls "$c" p99_ms)
        d=$(tsv_ok "$tls" select-simple direct-tls "$c" p99_ms)
        echo "| p99, $c clients | $(bl_div "$p" "$b") | $(bl_div "$p" "$d") | (none) | - |"
      done
      p=$(tsv_ok "$tls" select-connect pooler-tls "$TLS_HANDSHAKE_CLIENTS" tps); b=$(tsv_ok "$tls" select-connect pgbouncer-tls "$TLS_HANDSHAKE_CLIENTS" tps)
      d=$(tsv_ok "$tls" select-connect direct-tls "$TLS_HANDSHAKE_CLIENTS" tps)
      echo "| connections/s (\`-C\`), $TLS_HANDSHAKE_CLIENTS clients | $(bl_div "$p" "$b") | $(bl_div "$p" "$d") | ≥ 1.0× PgBouncer | $(verdict "$(bl_div "$p" "$b" %.4f)") |"
      echo
      echo "Reproduce this part alone: \`${pooler_cmd_given:+POOLER_CMD=\"$pooler_cmd_given\" }PARTS=tls TLS_CLIENTS=\"$TLS_CLIENTS\" TLS_HANDSHAKE_CLIENTS=$TLS_HANDSHAKE_CLIENTS DURATION=$DURATION TLS_HANDSHAKE_DURATION=$TLS_HANDSHAKE_DURATION TLS_CONNECT_ALLOWANCE=$TLS_CONNECT_ALLOWANCE WARMUP=$WARMUP POOL_SIZE=$POOL_SIZE MAX_CLIENT_CONN=$MAX_CLIENT_CONN TLS_SERVER_SSLMODE=$TLS_SERVER_SSLMODE TLS_KEY=$TLS_KEY AUTH=$AUTH bench/run.sh\`."
      echo
    fi
    if [ "$tls_cmd_to" -ge "$tls_cmd_from" ] && [ "$tls_cmd_from" -gt 0 ]; then
      echo "<details><summary>this part's commands ($(( tls_cmd_to - tls_cmd_from + 1 )))</summary>"
      echo
      echo '```sh'
      sed -n "${tls_cmd_from},${tls_cmd_to}p" "$commands" | sed "s/$PASSWORD/\$PASSWORD/g"
      echo '```'
      echo
      echo "</details>"
      echo
    fi
  fi

  if has "$PARTS" prepared; then
    echo "## 6. Prepared statements in transaction pooling"
    echo
    echo "Protocol-level named prepared statements: \`pgbench -M prepared\` sends Parse of a named statement (\`P_0\`) once per client"
    echo "connection, then only Bind/Execute by name; \`-M extended\` sends Parse, Bind and Execute of the unnamed statement for every query."
    echo "Both poolers are instances of their own for this part (own ports, roles \`bench_pgbouncer_prep\`, \`bench_pooler_prep\`;"
    echo "\`bench_direct_prep\` directly), in transaction mode with pool size $POOL_SIZE and max_client_conn $MAX_CLIENT_CONN, auth $AUTH, as the matrix's."
    echo "Pooler has \`max-prepared-statements = $PREPARED_MAX_STATEMENTS\`: it renames each client's statements and prepares them on whichever"
    echo "server a transaction gets. PgBouncer ${bouncer_version#PgBouncer } relays statement names unchanged, so in transaction mode a second"
    echo "client's \`P_0\` meets the first one's on a shared server: it runs \`-M extended\` only (one short \`-M prepared\` attempt below)."
    echo "Select-only (\`-S\`) on purpose: pgbench's TPC-B script with \`-M prepared\` deadlocks through any transaction pooler once"
    echo "clients outnumber the pool (pgbench's blocking PQprepare inside an open transaction). Each target first gets an unrecorded"
    echo "warm-up with what it runs ($WARMUP s at 50 clients; Pooler's \`-M extended\` ${prep_ext_warm} s after its \`-M prepared\`); then at each"
    echo "client count the runs are interleaved (direct, PgBouncer, Pooler prepared, Pooler extended), \`pgbench -T $DURATION -j $THREADS -n -l\` each."
    echo "Columns as in the matrix; CPU and RSS are the pooler's, as in Cost."
    echo
    echo "| clients | target | protocol | tps | avg ms | p50 ms | p99 ms | max ms | failed | backends | CPU s / 1k tx | peak RSS MiB | status |"
    echo "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for c in $PREPARED_CLIENTS; do
      for t in $TARGETS; do
        for script in $(prep_scripts "$t"); do
          g() { tsv_get "$prepared" "$script" "$t-prep" "$c" "$1"; }
          echo "| $c | $(label "$t") | \`$(script_args "$script" | sed 's/^-S //')\` | $(bl_fmt_int "$(g tps)") | $(g avg_ms) | $(g p50_ms) | $(g p99_ms) | $(g max_ms) | $(g failed) | $(g max_backends) | $(g cpu_s_per_1k_tx) | $(mib "$(g peak_rss_kib)") | $(g status) |"
        done
      done
    done
    echo
    echo "### Ratios and the issue's targets"
    echo
    echo "Same-run tps ratios (above 1 = Pooler with \`-M prepared\` faster). Targets: Pooler prepared ≥ 1.15× Pooler extended and"
    echo "≥ 1.0× PgBouncer extended; no failed transaction and no aborted client (pgbench exit 0, status ok) through Pooler."
    echo
    echo "| clients | Pooler prepared tps | Pooler extended tps | PgBouncer extended tps | direct prepared tps | Pooler prepared / Pooler extended (≥ 1.15) | Pooler prepared / PgBouncer extended (≥ 1.0) | Pooler prepared / direct prepared | failed: Pooler prepared, Pooler extended, PgBouncer extended, direct prepared |"
    echo "| ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |"
    for c in $PREPARED_CLIENTS; do
      pp=$(tsv_ok "$prepared" select-prepared pooler-prep "$c" tps); pe=$(tsv_ok "$prepared" select-extended pooler-prep "$c" tps)
      be=$(tsv_ok "$prepared" select-extended pgbouncer-prep "$c" tps); dp=$(tsv_ok "$prepared" select-prepared direct-prep "$c" tps)
      r1=$(bl_div "$pp" "$pe"); r2=$(bl_div "$pp" "$be")
      fl="$(tsv_get "$prepared" select-prepared pooler-prep "$c" failed), $(tsv_get "$prepared" select-extended pooler-prep "$c" failed), $(tsv_get "$prepared" select-extended pgbouncer-prep "$c" failed), $(tsv_get "$prepared" select-prepared direct-prep "$c" failed)"
      echo "| $c | $(bl_fmt_int "$pp") | $(bl_fmt_int "$pe") | $(bl_fmt_int "$be") | $(bl_fmt_int "$dp") | $r1 ($(verdict "$(bl_div "$pp" "$pe" %.4f)" 1.15)) | $r2 ($(verdict "$(bl_div "$pp" "$be" %.4f)")) | $(bl_div "$pp" "$dp") | $fl |"
    done
    echo
    for c in $PREPARED_CLIENTS; do
      st=$(tsv_get "$prepared" select-prepared pooler-prep "$c" status); fl=$(tsv_get "$prepared" select-prepared pooler-prep "$c" failed)
      if [ "$st" = ok ] && [ "$fl" = 0 ]; then v="**met**"; elif [ "$st" = - ]; then v="not measured"; else v="not met"; fi
      echo "- Pooler \`-M prepared\`, $c clients: $fl failed transactions, status $st: $v."
    done
    echo
    if [ -n "$pooler_prep_said" ]; then
      echo "Pooler for this part did not start ($pooler_prep_why); its last line: \`${pooler_prep_said//\`/\'}\`"
      echo
    fi
    if [ -f "$pooler_prep_log" ]; then
      n_warn=$(head -n "$pooler_prep_log_lines" "$pooler_prep_log" | grep -cE '^\[(WARNING|ERROR)\]' || true)
      echo "Pooler's log from its start to its stop after the runs (\`raw/$stamp/pooler-prep.log\`): WARNING or ERROR lines: ${n_warn:-0}$([ "${n_warn:-0}" -gt 0 ] && echo "; the first:" || echo ".")"
      if [ "${n_warn:-0}" -gt 0 ]; then
        echo
        echo '```'
        head -n "$pooler_prep_log_lines" "$pooler_prep_log" | grep -E '^\[(WARNING|ERROR)\]' | head -n 5 | cut -c1-300
        echo '```'
      fi
      echo
    fi
    if [ -n "$prepared_attempt_c" ]; then
      g() { tsv_get "$prepared" select-prepared pgbouncer-prep "$prepared_attempt_c" "$1"; }
      a_out="$raw/pgbench-select-prepared-pgbouncer-prep-$prepared_attempt_c.log"
      said=$(grep -m1 -iE 'error|abort' "$a_out" 2>/dev/null | cut -c1-200 || true)
      n_err=$(grep -ciE '^pgbench: error: (ERROR|client)' "$a_out" 2>/dev/null || true)
      echo "PgBouncer with \`-M prepared\` (one attempt after the measured runs, \`-T $PREPARED_PGBOUNCER_ATTEMPT\`, $prepared_attempt_c clients): status $(g status), tps $(bl_fmt_int "$(g tps)") (of the clients that went on), failed $(g failed)${said:+; pgbench printed ${n_err:-0} client errors, the first: \`${said//\`/\'}\`}."
      echo
    fi
    echo "Commands, as run, of the rows above (the per-transaction log under the run's temp folder):"
    echo
    echo '```sh'
    while IFS=$'\t' read -r script t c cmd; do
      [ "$script" = script ] && continue
      echo "# $c clients, $(label "${t%-prep}"), $(script_args "$script")$([ "$script-$t" = select-prepared-pgbouncer-prep ] && echo " (attempt)")"
      echo "${cmd//$PASSWORD/\$PASSWORD}"
    done <"$prepared_cmds"
    echo '```'
    echo
    echo "Reproduce this part alone: \`${pooler_cmd_given:+POOLER_CMD=\"$pooler_cmd_given\" }PARTS=prepared PREPARED_CLIENTS=\"$PREPARED_CLIENTS\" DURATION=$DURATION WARMUP=$WARMUP POOL_SIZE=$POOL_SIZE MAX_CLIENT_CONN=$MAX_CLIENT_CONN PREPARED_MAX_STATEMENTS=$PREPARED_MAX_STATEMENTS PREPARED_PGBOUNCER_ATTEMPT=$PREPARED_PGBOUNCER_ATTEMPT AUTH=$AUTH bench/run.sh\`."
    echo
  fi

  echo "## Commands run"
  echo
  echo "Temp-folder paths are this run's; raw outputs are in \`bench/results/raw/$stamp/\` (not committed)."
  echo
  echo "<details><summary>$(wc -l <"$commands") commands</summary>"
  echo
  echo '```sh'
  echo "# environment: PARTS=\"$PARTS\" TARGETS=\"$TARGETS\" SCRIPTS=\"$SCRIPTS\" CLIENTS=\"$CLIENTS\" DURATION=$DURATION THREADS=$THREADS SCALE=$SCALE POOL_SIZE=$POOL_SIZE SEED_POOL_SIZE=$SEED_POOL_SIZE SEED_RUNS=$SEED_RUNS SEED_CONNECTIONS=$SEED_CONNECTIONS SEED_WORKERS=$SEED_WORKERS SEED_ITERATIONS=$SEED_ITERATIONS SEED_FLIGHTS=$SEED_FLIGHTS IDLE_CONNECTIONS=$IDLE_CONNECTIONS MAX_CLIENT_CONN=$MAX_CLIENT_CONN TLS_CLIENTS=\"$TLS_CLIENTS\" TLS_HANDSHAKE_CLIENTS=$TLS_HANDSHAKE_CLIENTS TLS_HANDSHAKE_DURATION=$TLS_HANDSHAKE_DURATION TLS_CONNECT_ALLOWANCE=$TLS_CONNECT_ALLOWANCE TLS_SERVER_SSLMODE=$TLS_SERVER_SSLMODE TLS_KEY=$TLS_KEY PREPARED_CLIENTS=\"$PREPARED_CLIENTS\" PREPARED_MAX_STATEMENTS=$PREPARED_MAX_STATEMENTS PREPARED_PGBOUNCER_ATTEMPT=$PREPARED_PGBOUNCER_ATTEMPT AUTH=$AUTH"
  sed "s/$PASSWORD/\$PASSWORD/g" "$commands"
  echo '```'
  echo
  echo "</details>"
} >"$report"

cp "$report" "$RESULTS_DIR/latest.md"
sed -i "s/($stamp-/(latest-/g" "$RESULTS_DIR/latest.md"
rm -f "$RESULTS_DIR"/latest-*.png
for f in "${charts[@]}"; do
  [ -f "$f" ] && cp "$f" "$RESULTS_DIR/latest-${f##*/"$stamp"-}"
done
pgh_log "report: $report (and latest.md); charts: ${#charts[@]}; raw: $raw; took $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s"
