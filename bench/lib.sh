# shellcheck shell=bash
# Shared bash helpers for bench/run.sh (source it after scripts/pg-helpers.sh; needs bash).
# Process accounting from /proc, a bounded background sampler, pgbench latency percentiles, small math.
# Nothing here starts or stops a server; nothing here kills a process it was not handed by the caller.

# bl_clk_tck: clock ticks per second (utime/stime unit in /proc/PID/stat).
BL_CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# bl_cpu_ticks PID: utime+stime of PID in clock ticks ("" when the process is gone).
# Fields are counted after the last ')' so a command name with spaces cannot shift them.
bl_cpu_ticks() {
  local stat rest
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  rest=${stat##*) }
  # rest starts at field 3 (state); utime is field 14, stime field 15 -> positions 12 and 13 of rest.
  awk '{ print $12 + $13 }' <<<"$rest"
}

# bl_status_kib PID FIELD: a kB value of /proc/PID/status (VmRSS, VmHWM); "" when gone.
bl_status_kib() {
  awk -v f="$2:" '$1 == f { print $2; exit }' "/proc/$1/status" 2>/dev/null || true
}

# bl_cpu_seconds TICKS_BEFORE TICKS_AFTER: CPU seconds between two bl_cpu_ticks readings ("-" if either is missing).
bl_cpu_seconds() {
  if [ -z "$1" ] || [ -z "$2" ]; then echo "-"; return 0; fi
  awk -v a="$1" -v b="$2" -v hz="$BL_CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }'
}

# bl_div A B [FORMAT]: A / B formatted (default %.2f), "-" when either is missing or B is 0.
bl_div() {
  local fmt=${3:-%.2f}
  if [[ "${1:-}" =~ ^-?[0-9.]+$ ]] && [[ "${2:-}" =~ ^-?[0-9.]+$ ]]; then
    awk -v a="$1" -v b="$2" -v f="$fmt" 'BEGIN { if (b != 0) printf f, a / b; else print "-" }'
  else
    echo "-"
  fi
}

# bl_median NUMBERS...: median of the numeric arguments ("-" when none is numeric).
bl_median() {
  printf '%s\n' "$@" | awk '/^-?[0-9.]+(e[-+]?[0-9]+)?$/' | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "-"; exit }
      if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
      if (m == int(m)) printf "%d\n", m; else printf "%.2f\n", m
    }'
}

# bl_latency_stats FILES...: pgbench per-transaction logs (-l) -> "count p50_ms p99_ms max_ms".
# Field 3 is the transaction's latency in microseconds; "failed"/"skipped" lines are not latencies.
# Percentiles are nearest-rank on the sorted latencies (p99 = value at rank ceil(0.99 n)).
bl_latency_stats() {
  local sorted
  sorted=$(mktemp "${TMPDIR:-/tmp}/bl-lat.XXXXXX")
  # A run that failed before writing a log leaves no file: that is 0 latencies, not an error (set -e, pipefail).
  { cat "$@" 2>/dev/null || true; } | awk '$3 ~ /^[0-9]+$/ { print $3 }' | LC_ALL=C sort -n -S 64M >"$sorted"
  awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "0 - - -"; exit }
      i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
      i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
      printf "%d %.3f %.3f %.3f\n", NR, v[i50] / 1000, v[i99] / 1000, v[NR] / 1000
    }' "$sorted"
  rm -f "$sorted"
}

# bl_sampler_start OUT_PREFIX MAX_SECONDS PSQL_ARGS ROLE DB [PID]: a background loop (every 0.5 s, at most
# MAX_SECONDS) that keeps in OUT_PREFIX.backends the most client backends of ROLE in database DB seen in
# pg_stat_activity (a pooler's idle servers for other databases are not counted) and, when
# PID is given, in OUT_PREFIX.rss the highest VmRSS (KiB) of PID. PSQL_ARGS is one string of psql connection options
# (superuser over the socket). Sets BL_SAMPLER_PID; stop it with bl_sampler_stop.
BL_SAMPLER_PID=""
bl_sampler_start() {
  local out=$1 max_s=$2 psql_args=$3 role=$4 db=$5 pid=${6:-}
  echo 0 >"$out.backends"
  echo 0 >"$out.rss"
  (
    trap 'exit 0' TERM
    end=$((SECONDS + max_s)); maxb=0; maxr=0
    while [ "$SECONDS" -lt "$end" ]; do
      # shellcheck disable=SC2086
      n=$(timeout 5 $psql_args -X -At -c \
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = '$role' AND datname = '$db'" 2>/dev/null || echo 0)
      if [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt "$maxb" ]; then maxb=$n; echo "$maxb" >"$out.backends"; fi
      if [ -n "$pid" ]; then
        r=$(bl_status_kib "$pid" VmRSS)
        if [[ "$r" =~ ^[0-9]+$ ]] && [ "$r" -gt "$maxr" ]; then maxr=$r; echo "$maxr" >"$out.rss"; fi
      fi
      sleep 0.5
    done
  ) &
  BL_SAMPLER_PID=$!
}
bl_sampler_stop() {
  if [ -n "$BL_SAMPLER_PID" ]; then
    kill "$BL_SAMPLER_PID" 2>/dev/null || true
    wait "$BL_SAMPLER_PID" 2>/dev/null || true
  fi
  BL_SAMPLER_PID=""
}

# bl_pgbench_field FILE WHAT: a number from pgbench's summary (tps, lat, failed, conn, processed).
# With -C (a new connection per transaction) pgbench prints "tps = N (including reconnection times)", which is
# connections per second, and "average connection time" instead of the initial one; tps and conn read either form.
bl_pgbench_field() {
  local f=$1
  case "$2" in
    tps)       sed -n 's/^tps = \([0-9.]*\) (\(without initial connection time\|including reconnection times\)).*/\1/p' "$f" ;;
    lat)       sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$f" ;;
    failed)    sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$f" ;;
    conn)      sed -n 's/^\(initial\|average\) connection time = \([0-9.]*\) ms.*/\2/p' "$f" ;;
    processed) sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$f" ;;
  esac | head -n1
}

# bl_fmt_int N: 12345.6 -> 12,346 ("-" stays "-").
bl_fmt_int() {
  if [[ "${1:-}" =~ ^-?[0-9.]+$ ]]; then
    awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); out = ""; neg = (substr(s, 1, 1) == "-"); if (neg) s = substr(s, 2)
      while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
      printf "%s%s%s\n", (neg ? "-" : ""), s, out }'
  else
    echo "${1:--}"
  fi
}
