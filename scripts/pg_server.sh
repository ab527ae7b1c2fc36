#!/usr/bin/env bash
# Starts a throwaway PostgreSQL (Debian's package) on loopback for the tests: a new cluster in
# a temp dir, trust authentication for the `lethe` role, a free port. Prints the admin URL on
# stdout; `scripts/pg_server.sh stop DIR` stops it and removes the cluster.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "${1:-}" = stop ]; then
  as_owner "$bin/pg_ctl" -D "$2/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$2"
  exit 0
fi
dir=$(mktemp -d /tmp/lethe-pg.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_owner "$bin/initdb" -D "$dir/data" -U lethe --auth=trust --no-sync >"$dir/initdb.log" 2>&1
# fsync stays on: the crash tests kill lethe, not PostgreSQL, but its durability is the real one.
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o \
  "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300" \
  start >/dev/null
echo "postgres://lethe@127.0.0.1:$port/postgres $dir"
