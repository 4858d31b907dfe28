#!/usr/bin/env bash
# The whole check, as CI runs it: install what the tests need, then formatting, lints,
# docs and every test (unit, doc, and integration against real Dovecot and Cyrus instances
# that the tests start on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh notmuch cyrus
export CARGO_TERM_COLOR=never
echo "== the Dovecot template's placeholders are filled by every script that uses it"
for p in $(grep -o '@[A-Z0-9_]*@' scripts/dovecot/dovecot.conf.in | sort -u); do
  for f in scripts/demo.sh bench/bench.py crates/testkit/src/lib.rs; do
    grep -q -- "$p" "$f" || { echo "$f does not fill $p of scripts/dovecot/dovecot.conf.in" >&2; exit 1; }
  done
done
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
