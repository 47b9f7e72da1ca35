# Shared bash helpers for bench/pgbench-compare.sh and quickstart.sh (source it; needs bash).
# A throwaway PostgreSQL cluster in a temp folder, PgBouncer, free ports, waits with timeouts, cleanup.
# When run as root, server processes run as the OS user "postgres" (initdb, postgres and pgbouncer refuse root).

PGH_SERVICE_USER=postgres

pgh_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pgh_die() { pgh_log "ERROR: $*"; exit 1; }

pgh_is_root() { [ "$(id -u)" -eq 0 ]; }

# Make sure the OS user postgres exists when we are root.
pgh_ensure_service_user() {
  pgh_is_root || return 0
  id -u "$PGH_SERVICE_USER" >/dev/null 2>&1 && return 0
  useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql --shell /bin/bash "$PGH_SERVICE_USER" \
    || id -u "$PGH_SERVICE_USER" >/dev/null 2>&1
}

# Command prefix (array) that runs the rest as the service user when root: "${PGH_AS[@]}" cmd args...
# runuser's PAM session (pam_limits) drops the soft open-files limit to 1024, which is too few for PgBouncer with
# 1000 clients, so the command first raises it back to the hard limit.
if [ "$(id -u)" -eq 0 ]; then
  PGH_AS=(runuser -u "$PGH_SERVICE_USER" -- /bin/sh -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"' sh)
else
  PGH_AS=()
fi

# Run a command as the service user when root, else as ourselves.
pgh_as_service() { "${PGH_AS[@]}" "$@"; }

# Give a path to the service user (root only).
pgh_give() {
  if pgh_is_root; then chown -R "$PGH_SERVICE_USER:" "$@"; fi
}

# Folder of the PostgreSQL server binaries: $PG_BIN, newest /usr/lib/postgresql/N/bin, or initdb on PATH.
pgh_find_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return 0; fi
  local d best="" bestv=0 v
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] || continue
    v=$(basename "$(dirname "$d")"); v=${v%%.*}
    if [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt "$bestv" ]; then bestv=$v; best=$d; fi
  done
  if [ -n "$best" ]; then echo "$best"; return 0; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

pgh_find_pgbouncer() {
  if [ -n "${PGBOUNCER_BIN:-}" ]; then echo "$PGBOUNCER_BIN"; return 0; fi
  command -v pgbouncer 2>/dev/null && return 0
  [ -x /usr/sbin/pgbouncer ] && { echo /usr/sbin/pgbouncer; return 0; }
  return 1
}

# Install what is missing through apt (postgresql, postgresql-contrib, and pgbouncer if $1 = with-pgbouncer).
pgh_install_missing() {
  local want_bouncer=${1:-} missing=0
  pgh_find_bin >/dev/null 2>&1 || missing=1
  if [ "$want_bouncer" = with-pgbouncer ] && ! pgh_find_pgbouncer >/dev/null 2>&1; then missing=1; fi
  [ "$missing" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || pgh_die "PostgreSQL (and pgbouncer) missing and no apt-get: install them or set PG_BIN/PGBOUNCER_BIN"
  local sudo=""
  pgh_is_root || sudo=sudo
  pgh_log "installing PostgreSQL${want_bouncer:+ and PgBouncer} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  if [ "$want_bouncer" = with-pgbouncer ]; then
    $sudo apt-get install -y -q postgresql postgresql-contrib pgbouncer
  else
    $sudo apt-get install -y -q postgresql postgresql-contrib
  fi
}

# A TCP port nobody listens on at 127.0.0.1.
pgh_free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    return 0
  fi
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

# pgh_wait_port PORT TIMEOUT_SECONDS [PID]: until 127.0.0.1:PORT accepts; fails early if PID dies.
pgh_wait_port() {
  local port=$1 timeout=$2 pid=${3:-} end=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$end" ]; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.2
  done
  return 1
}

# pgh_pg_init DIR PORT MAX_CONNECTIONS HOST_AUTH: initdb into DIR/data, configure; socket in DIR.
pgh_pg_init() {
  local dir=$1 port=$2 maxconn=$3 auth=$4 bin
  bin=$(pgh_find_bin) || pgh_die "PostgreSQL binaries not found"
  pgh_ensure_service_user
  mkdir -p "$dir"
  chmod 700 "$dir"
  pgh_give "$dir"
  (cd "$dir" && pgh_as_service "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C \
      --auth-local=trust --auth-host="$auth" --no-sync --no-instructions >"$dir/initdb.log" 2>&1) \
    || { cat "$dir/initdb.log" >&2; pgh_die "initdb failed"; }
  local pwenc=scram-sha-256
  [ "$auth" = md5 ] && pwenc=md5
  cat >>"$dir/data/postgresql.conf" <<CONF

# --- throwaway cluster ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = $maxconn
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = '$pwenc'
log_line_prefix = '%m [%p] %q%u@%d '
CONF
  cat >"$dir/data/pg_hba.conf" <<HBA
local all postgres trust
local all all $auth
host  all all 127.0.0.1/32 $auth
HBA
  pgh_give "$dir/data/postgresql.conf" "$dir/data/pg_hba.conf"
}

# pgh_pg_start DIR / pgh_pg_stop DIR
pgh_pg_start() {
  local dir=$1 bin
  bin=$(pgh_find_bin)
  (cd "$dir" && timeout -k 5 120 "${PGH_AS[@]}" "$bin/pg_ctl" start -w -t 90 -D "$dir/data" -l "$dir/postgres.log" -s) \
    || { tail -n 30 "$dir/postgres.log" >&2 || true; return 1; }
}
pgh_pg_stop() {
  local dir=$1 bin
  [ -f "$dir/data/postmaster.pid" ] || return 0
  bin=$(pgh_find_bin)
  (cd "$dir" && timeout -k 5 60 "${PGH_AS[@]}" "$bin/pg_ctl" stop -w -t 30 -D "$dir/data" -m fast -s) 2>/dev/null \
    || (cd "$dir" && timeout -k 5 30 "${PGH_AS[@]}" "$bin/pg_ctl" stop -w -t 20 -D "$dir/data" -m immediate -s) 2>/dev/null \
    || true
}

# pgh_psql_super DIR PORT DB SQL...: psql as superuser postgres over the unix socket in DIR.
pgh_psql_super() {
  local dir=$1 port=$2 db=$3; shift 3
  timeout -k 5 120 "$(pgh_find_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d "$db" "$@"
}

# pgh_pgbouncer_start DIR PORT INI: runs pgbouncer -d (as the service user when root), waits for the port.
pgh_pgbouncer_start() {
  local dir=$1 port=$2 ini=$3 bouncer
  bouncer=$(pgh_find_pgbouncer) || pgh_die "pgbouncer not found"
  pgh_give "$dir"
  (cd "$dir" && timeout -k 5 30 "${PGH_AS[@]}" "$bouncer" -d "$ini") >"$dir/pgbouncer.out" 2>&1 \
    || { cat "$dir/pgbouncer.out" >&2; return 1; }
  pgh_wait_port "$port" 30 || { tail -n 30 "$dir"/*.log >&2 || true; return 1; }
}
pgh_pgbouncer_stop() {
  local pidfile=$1 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local i
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# pgh_kill_pid PID: TERM, wait up to 10 s, then KILL.
pgh_kill_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Raise the open-files limit as far as allowed (many client connections).
pgh_raise_nofile() {
  local want=${1:-65536} hard
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null && hard=$want
  fi
  if [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ]; then ulimit -n "$want" 2>/dev/null || true
  else ulimit -n "$hard" 2>/dev/null || true; fi
}
