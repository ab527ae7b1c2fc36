#!/usr/bin/env bash
# A throwaway PostgreSQL (Debian's package) on loopback for the tests: a new cluster in a temp
# dir, trust authentication for the `lethe` role, a free port.
#   pg_server.sh [tls]      creates and starts one; prints its admin URL and its directory.
#                           With `tls`, TCP clients must use TLS: the server's certificate
#                           (for 127.0.0.1) is signed by a throwaway CA, DIR/ca.pem
#   pg_server.sh down DIR   stops it at once, as a crash would (immediate shutdown)
#   pg_server.sh up DIR     starts it again
#   pg_server.sh stop DIR   stops it and removes the cluster
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start() { as_owner "$bin/pg_ctl" -D "$1/data" -l "$1/server.log" -w start >/dev/null; }
case "${1:-}" in
  down) as_owner "$bin/pg_ctl" -D "$2/data" -m immediate -w stop >/dev/null; exit 0 ;;
  up) start "$2"; exit 0 ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$2/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$2"
    exit 0 ;;
esac
dir=$(mktemp -d /tmp/lethe-pg.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_owner "$bin/initdb" -D "$dir/data" -U lethe --auth=trust --no-sync >"$dir/initdb.log" 2>&1
# fsync stays on: the tests kill lethe (and this server), and its durability is the real one.
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
CONF
if [ "${1:-}" = tls ]; then
  (cd "$dir" &&
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
      -subj /CN=lethe-test-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null &&
    openssl req -newkey rsa:2048 -nodes -keyout data/server.key -out server.csr \
      -subj /CN=127.0.0.1 2>/dev/null &&
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out data/server.crt -days 2 -extfile server.ext 2>/dev/null)
  chmod 600 "$dir/data/server.key"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/data/server.key" "$dir/data/server.crt"
  echo "ssl = on" >>"$dir/data/postgresql.conf"
  printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
fi
start "$dir"
echo "postgres://lethe@127.0.0.1:$port/postgres $dir"
