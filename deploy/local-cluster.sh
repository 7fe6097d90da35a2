#!/usr/bin/env bash
# Start a local Lastmile cluster for tests and demos: N `lastmile serve` nodes on one
# PostgreSQL and one NATS (JetStream enabled), behind nginx with
# deploy/nginx/lastmile.conf.template. Ctrl-C stops everything.
#
#   deploy/local-cluster.sh [N]            (default 3 nodes)
#
# Environment (defaults in brackets):
#   LASTMILE_DATABASE_URL   [postgres://postgres@127.0.0.1:5432/lastmile]  created if missing
#   LASTMILE_BUS            [nats://127.0.0.1:4222]
#   LM_BIN                  [target/release/lastmile, else target/debug/lastmile, else `lastmile` on PATH]
#   PROXY_LISTEN            [127.0.0.1:8080]   where clients connect
#   FIRST_NODE_PORT         [8081]             nodes listen on 8081, 8082, ...
#   RUN_DIR                 [./.cluster]       logs, the shared key file, nginx's files
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-3}"
DB="${LASTMILE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/lastmile}"
BUS="${LASTMILE_BUS:-nats://127.0.0.1:4222}"
PROXY_LISTEN="${PROXY_LISTEN:-127.0.0.1:8080}"
FIRST_NODE_PORT="${FIRST_NODE_PORT:-8081}"
RUN_DIR="$(mkdir -p "${RUN_DIR:-.cluster}" && cd "${RUN_DIR:-.cluster}" && pwd)"
BIN="${LM_BIN:-}"
if [ -z "$BIN" ]; then
    for b in target/release/lastmile target/debug/lastmile "$(command -v lastmile || true)"; do
        if [ -n "$b" ] && [ -x "$b" ]; then BIN="$b"; break; fi
    done
fi
[ -n "$BIN" ] || { echo "no lastmile binary: cargo build --release, or set LM_BIN" >&2; exit 1; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 1; }

# Every node shares the database, the bus and the secret key.
export LASTMILE_DATABASE_URL="$DB" LASTMILE_BUS="$BUS"
export LASTMILE_SECRET_KEY_FILE="$RUN_DIR/lastmile.key"
export LASTMILE_CLUSTER__NAME="${LASTMILE_CLUSTER__NAME:-lastmile}"
# Behind the proxy every connection comes from its address.
export LASTMILE_EDGE__MAX_CONNECTIONS_PER_IP=0

if command -v psql >/dev/null 2>&1 && [[ "$DB" == postgres* ]]; then
    dbname="${DB##*/}"; dbname="${dbname%%\?*}"
    psql "${DB%/*}/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$dbname'" | grep -q 1 \
        || psql "${DB%/*}/postgres" -c "CREATE DATABASE $dbname" >/dev/null
fi
# One key for every node (it signs tokens and encrypts stored secrets), made before the
# nodes start so they do not race to generate it; and the schema migrated once.
if [ ! -s "$LASTMILE_SECRET_KEY_FILE" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$LASTMILE_SECRET_KEY_FILE")
fi
"$BIN" migrate >/dev/null

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

upstreams=""
for i in $(seq 0 $((N - 1))); do
    port=$((FIRST_NODE_PORT + i))
    LASTMILE_LISTEN="127.0.0.1:$port" LASTMILE_CLUSTER__NODE_ID="node-$i" \
        "$BIN" serve >"$RUN_DIR/node-$i.log" 2>&1 &
    pids+=($!)
    upstreams+="server 127.0.0.1:$port max_fails=1 fail_timeout=2s;\n        "
    echo "node-$i  http://127.0.0.1:$port  (log: $RUN_DIR/node-$i.log)"
done

mkdir -p "$RUN_DIR/nginx"
sed -e "s|@RUN_DIR@|$RUN_DIR/nginx|g" -e "s|@LISTEN@|$PROXY_LISTEN|g" -e "s|@UPSTREAMS@|$upstreams|" \
    deploy/nginx/lastmile.conf.template >"$RUN_DIR/nginx/nginx.conf"
"$NGINX" -t -q -p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx/nginx.conf"
"$NGINX" -p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx/nginx.conf" -g "daemon off;" &
pids+=($!)

for _ in $(seq 1 100); do
    curl -fsS "http://$PROXY_LISTEN/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
echo "proxy   http://$PROXY_LISTEN  ->  $N nodes   (GET /readyz on a node shows its cluster view)"
echo "Ctrl-C stops the cluster."
wait
