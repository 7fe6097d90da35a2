#!/usr/bin/env bash
# Every libFuzzer target for a fixed budget: the ingest adapters (crates/ingest/fuzz) and
# the server's edge parsing (fuzz/: driver WebSocket messages, query strings, order
# bodies), seeded with the platforms' sample payloads and hand-written seeds.
#
#   scripts/fuzz.sh                  # 60 s per target
#   FUZZ_SECONDS=600 scripts/fuzz.sh shopify driver_ws
#
# Runs on the stable toolchain: cargo-fuzz with `--sanitizer none` needs no nightly
# compiler flag (AddressSanitizer would). Rust code is memory-safe (unsafe is forbidden in
# the workspace), so what this finds are panics, overflows (debug assertions are on) and
# hangs; a crash leaves its input under <fuzz dir>/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# target → (crate dir holding fuzz/, seed directory)
declare -A DIR=(
    [shopify]=crates/ingest [woocommerce]=crates/ingest [bigcommerce]=crates/ingest
    [driver_ws]=. [query_string]=. [order_body]=.
)
declare -A SEEDS=(
    [shopify]=crates/ingest/tests/fixtures/shopify [woocommerce]=crates/ingest/tests/fixtures/woocommerce
    [bigcommerce]=crates/ingest/tests/fixtures/bigcommerce
    [driver_ws]=fuzz/seeds/driver_ws [query_string]=fuzz/seeds/query_string [order_body]=fuzz/seeds/order_body
)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(shopify woocommerce bigcommerce driver_ws query_string order_body)

for t in "${TARGETS[@]}"; do
    dir=${DIR[$t]:?unknown target $t}
    corpus="$ROOT/$dir/fuzz/corpus/$t"
    mkdir -p "$corpus"
    echo "== fuzz $t for ${SECONDS_PER_TARGET}s"
    (cd "$dir" && cargo fuzz run --sanitizer none --debug-assertions "$t" "$corpus" "$ROOT/${SEEDS[$t]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10 -print_final_stats=1)
done
echo "fuzzing: no crash in ${#TARGETS[@]} target(s) × ${SECONDS_PER_TARGET}s"
