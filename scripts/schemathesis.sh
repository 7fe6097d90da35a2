#!/usr/bin/env bash
# Property-based API tests with schemathesis against a real `lastmile serve`, once on a
# fresh SQLite database and once on a fresh PostgreSQL database. Fails on any server
# error, any response that does not match the OpenAPI document's schema, and any status
# the document does not list for its operation.
#
#   scripts/schemathesis.sh               # both databases (PostgreSQL from LASTMILE_TEST_DATABASE_URL)
#   SCHEMATHESIS_BACKENDS=sqlite scripts/schemathesis.sh
#
# Knobs: SCHEMATHESIS_MAX_EXAMPLES (per operation and phase, default 25),
# SCHEMATHESIS_SEED (default fixed, so a red run reproduces), LASTMILE_BIN (the binary;
# default: $CARGO_TARGET_DIR/debug/lastmile, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCHEMATHESIS_VERSION="4.32.5"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
SEED="${SCHEMATHESIS_SEED:-20240514}"
BACKENDS="${SCHEMATHESIS_BACKENDS:-sqlite postgres}"
PG_URL="${LASTMILE_TEST_DATABASE_URL:-}"

# schemathesis from PyPI in a venv kept between runs.
VENV="$HOME/.cache/lastmile-schemathesis/venv-$SCHEMATHESIS_VERSION"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "-- installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

BIN="${LASTMILE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/lastmile-target}/debug/lastmile}"
if [ ! -x "$BIN" ]; then
    cargo build --bin lastmile
fi

WORK=$(mktemp -d)
# schemathesis keeps its crash cache in the working directory: keep it out of the clone.
cd "$WORK"
SERVER_PID=""
PG_DB=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [ -n "$PG_DB" ]; then psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

json_field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

# POST JSON with a bearer token; prints the body, fails on a non-2xx answer.
post() {
    curl -sS --fail-with-body -X POST "$BASE$1" -H "authorization: Bearer $2" -H 'content-type: application/json' "${@:4}" -d "$3"
}

run_backend() {
    local backend=$1 db_url
    case "$backend" in
        sqlite) db_url="sqlite://$WORK/$backend.db" ;;
        postgres)
            if [ -z "$PG_URL" ]; then
                echo "!!! SKIPPED schemathesis on PostgreSQL: set LASTMILE_TEST_DATABASE_URL to run it !!!"
                return 0
            fi
            PG_DB="lm_schemathesis_$(python3 -c 'import uuid; print(uuid.uuid4().hex)')"
            psql -q "$PG_URL" -c "CREATE DATABASE $PG_DB" >/dev/null
            db_url="${PG_URL%/*}/$PG_DB"
            ;;
        *) echo "unknown backend $backend" >&2; return 1 ;;
    esac
    local port
    port=$(free_port)
    BASE="http://127.0.0.1:$port"
    export LASTMILE_DATABASE_URL="$db_url" LASTMILE_LISTEN="127.0.0.1:$port"
    export LASTMILE_SECRET_KEY_FILE="$WORK/$backend.key"
    # Generated traffic is a burst from one credential: keep the limiter out of its way.
    export LASTMILE_RATE_LIMIT_PER_SECOND=100000 LASTMILE_RATE_LIMIT_BURST=100000
    export LASTMILE_LOG_FORMAT=json RUST_LOG=warn
    # The bundled Helsinki extract: geocoding and the street map answer for real.
    export LASTMILE_GEOCODING__OSM_PBF="$ROOT/crates/sim/data/helsinki.osm.pbf" LASTMILE_WEB__OSM_PBF="$ROOT/crates/sim/data/helsinki.osm.pbf"

    local tenant admin
    tenant=$("$BIN" admin create-tenant schemathesis 2>>"$WORK/$backend.log")
    admin=$(echo "$tenant" | json_field '["admin_key"]')
    "$BIN" serve >>"$WORK/$backend.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        curl -sf "$BASE/readyz" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/$backend.log"; return 1; }
        sleep 0.1
    done

    # Something to find: a store, a driver, an API client and an order, so list and
    # lookup answers carry real views rather than only empty lists and 404s.
    local store driver client client_id client_secret jwt driver_token
    store=$(post /v1/stores "$admin" '{"name": "Fuzz Kitchen", "platform": "native", "platform_store_id": "fuzz-kitchen",
        "webhook_secret": "", "pickup": {"lat": 60.17, "lng": 24.94, "address": "Mannerheimintie 1, Helsinki"}}' | json_field '["id"]')
    driver=$(post /v1/drivers "$admin" '{"name": "Fuzz Driver", "capacity": 2}')
    driver_token=$(echo "$driver" | json_field '["token"]')
    client=$(post /v1/api-clients "$admin" '{"name": "fuzz"}')
    client_id=$(echo "$client" | json_field '["client_id"]')
    client_secret=$(echo "$client" | json_field '["client_secret"]')
    jwt=$(curl -sS --fail-with-body "$BASE/oauth/token" -d grant_type=client_credentials \
        --data-urlencode "client_id=$client_id" --data-urlencode "client_secret=$client_secret" | json_field '["access_token"]')
    post /v1/orders "$jwt" "{\"store_id\": \"$store\", \"customer\": {\"name\": \"Ada\"},
        \"dropoff\": {\"address\": {\"line1\": \"Aleksanterinkatu 5\", \"city\": \"Helsinki\", \"postal_code\": \"00100\", \"country\": \"FI\"}, \"lat\": 60.168, \"lng\": 24.95},
        \"items\": [{\"name\": \"Soup\", \"quantity\": 1, \"unit_price_minor\": 900}], \"currency\": \"EUR\"}" \
        -H 'idempotency-key: seed-1' >/dev/null

    local common=(
        "$BASE/openapi.json"
        --checks not_a_server_error,status_code_conformance,response_schema_conformance
        --max-examples "$MAX_EXAMPLES" --seed "$SEED" --generation-database none
        --request-timeout 15 --workers 2 --no-color --suppress-health-check all
        --warnings off
        # Streams never end; they are covered by the realtime tests.
        --exclude-path /v1/driver/events --exclude-path /v1/driver/ws
        --exclude-path-regex '^/v1/track/\{token\}/events$' --exclude-path /v1/events
    )
    local status=0
    echo "-- $backend: every operation with the admin key"
    "$VENV/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" run "${common[@]}" -H "Authorization: Bearer $admin" \
        --exclude-tag driver || status=1
    echo "-- $backend: the driver app's operations with a driver token"
    "$VENV/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" run "${common[@]}" -H "Authorization: Bearer $driver_token" \
        --include-tag driver || status=1
    echo "-- $backend: the ordering API with a client token"
    "$VENV/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" run "${common[@]}" -H "Authorization: Bearer $jwt" \
        --include-tag orders --include-tag catalog || status=1

    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    if grep -q '"level":"ERROR"' "$WORK/$backend.log"; then
        echo "!! the server logged errors on $backend:"
        grep '"level":"ERROR"' "$WORK/$backend.log" | head -20
        status=1
    fi
    if [ "$backend" = postgres ]; then
        psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
        PG_DB=""
    fi
    return $status
}

failed=0
for b in $BACKENDS; do
    start=$(date +%s)
    run_backend "$b" || failed=1
    echo "-- $b took $(($(date +%s) - start)) s"
done
if [ "$failed" != 0 ]; then
    echo "schemathesis found problems" >&2
    exit 1
fi
echo "schemathesis: no server errors, schema violations or undocumented statuses"
