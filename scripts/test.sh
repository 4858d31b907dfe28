#!/usr/bin/env bash
# The whole check, as CI runs it: install what the tests need, then formatting, lints,
# docs and every test (unit, doc, and integration against real Dovecot and Cyrus instances
# that the tests start on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh notmuch cyrus
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' "$log"
