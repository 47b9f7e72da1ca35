#!/usr/bin/env bash
# The small comparison: pgbench -S (simple protocol) directly against PostgreSQL, through PgBouncer and
# through Pooler, at a few client counts. It is bench/run.sh's pgbench matrix with one script, so both
# measure the same way (same setup, warm-up, p99 from per-transaction logs, CPU and RSS of the poolers).
#
#   bench/pgbench-compare.sh                  # clients 1 50 1000, 15 s each
#   CLIENTS="50" DURATION=5 bench/pgbench-compare.sh
#
# Env: CLIENTS ("1 50 1000"), DURATION (15), and every other knob of bench/run.sh (THREADS, SCALE, POOL_SIZE,
#      MAX_CLIENT_CONN, AUTH, TARGETS, WARMUP, POOLER_CMD, SKIP_BUILD, KEEP_WORK).
# The report goes to bench/results/compare/<YYYY-MM-DD-HHMM>.md (not committed), so bench/results/latest.md
# stays the latest full run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PARTS=matrix SCRIPTS=select-simple
export CLIENTS=${CLIENTS:-"1 50 1000"} DURATION=${DURATION:-15}
export RESULTS_DIR=${RESULTS_DIR:-$here/results/compare}
exec "$here/run.sh" "$@"
