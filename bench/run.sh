#!/usr/bin/env bash
# The syncmail benchmark, in one command (see bench/README.md):
#
#   bench/run.sh [--quick] [--runs N] [--skip offlineimap] [--corpus normal|tiny] ...
#   bench/run.sh --help
#
# Installs what is missing (Debian: dovecot-imapd isync offlineimap3 time), builds syncmail
# in release, starts a private Dovecot on 127.0.0.1, times syncmail, mbsync and offlineimap3
# on the same work, prints a markdown table and writes it to bench/results/<date>.md.
# The work itself is in bench.py (Python 3, standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root (Dovecot's mail processes run as nobody)" >&2; exit 2; }
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
# The exact command line, for the report.
SYNCMAIL_BENCH_COMMAND="bench/run.sh${*:+ $(printf '%q ' "$@")}"
export SYNCMAIL_BENCH_COMMAND="${SYNCMAIL_BENCH_COMMAND% }"
exec python3 bench/bench.py "$@"
