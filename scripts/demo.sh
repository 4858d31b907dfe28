#!/usr/bin/env bash
# Starts a throwaway Dovecot on 127.0.0.1 filled with sample mail, writes a syncmail
# configuration for it, and syncs it with the progress display. Everything lives in one
# temporary directory, printed at the end; the server is stopped when the script ends
# (pass --keep to leave it running).
#
#   scripts/demo.sh [--messages N] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
messages=1000
keep=no
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages=$2; shift 2 ;;
    --keep) keep=yes; shift ;;
    *) echo "usage: scripts/demo.sh [--messages N] [--keep]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "the demo's Dovecot runs as root (its mail processes as nobody); run it as root" >&2; exit 2; }
bash scripts/install-deps.sh
corpus=${SYNCMAIL_CORPUS_SCRIPT:-../shared/corpus/make-corpus.py}
[ -f "$corpus" ] || { echo "the corpus generator is not at $corpus (set SYNCMAIL_CORPUS_SCRIPT)" >&2; exit 2; }

echo "building syncmail (release)..."
cargo build --release --locked -q -p syncmail-cli
bin=$PWD/target/release/syncmail

dir=$(mktemp -d /tmp/syncmail-demo.XXXXXX)
chmod 755 "$dir"   # Dovecot's mail processes run as nobody and must reach the server's files
port_plain=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
port_tls=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$dir/server/index" "$dir/server/control" "$dir/server/home"
bash scripts/dovecot/make-certs.sh "$dir/server/certs"
echo "writing $messages sample messages..."
python3 "$corpus" "$dir/server/mail" --messages "$messages" >/dev/null
chown -R 65534:65534 "$dir/server/mail" "$dir/server/index" "$dir/server/control" "$dir/server/home"
sed -e "s|@DIR@|$dir/server|g; s|@PORT_PLAIN@|$port_plain|g; s|@PORT_TLS@|$port_tls|g; s|@IMAP_CAPABILITY@||g; s|@AUTH_MECHANISMS@|plain login|g; s|@SEPARATOR@|.|g; s|@PASSWORD@|secret|g; s|@OAUTH2_PASSDB@||g; s|@MAILBOX_LIST_INDEX@|no|g; s|@IMAP_PLUGINS@||g; s|@MAX_CONNECTIONS@|100|g" \
  scripts/dovecot/dovecot.conf.in > "$dir/server/dovecot.conf"
setsid /usr/sbin/dovecot -F -c "$dir/server/dovecot.conf" </dev/null >/dev/null 2>&1 &
dovecot_pid=$!
stop() { [ "$keep" = yes ] || kill -TERM -- "-$dovecot_pid" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq 100); do
  python3 - "$port_plain" <<'PY' && break
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
    sys.exit(0 if s.recv(4) == b"* OK" else 1)
except OSError:
    sys.exit(1)
PY
  sleep 0.1
done

cat > "$dir/config.toml" <<EOT
[accounts.demo]
maildir = "$dir/Mail/demo"
state-dir = "$dir/state/demo"
[accounts.demo.imap]
host = "127.0.0.1"
port = $port_tls
tls = "implicit"
user = "test"
password = "secret"
ca-file = "$dir/server/certs/ca.pem"
EOT

echo "syncing (IMAP over TLS on 127.0.0.1:$port_tls)..."
"$bin" -c "$dir/config.toml" sync
echo
echo "The Maildir is $dir/Mail/demo; read it with, for instance:"
echo "  mutt -f $dir/Mail/demo/INBOX      or      notmuch (database.path=$dir/Mail/demo)"
echo "The configuration is $dir/config.toml; run again with:"
echo "  $bin -c $dir/config.toml sync"
if [ "$keep" = yes ]; then
  echo "Dovecot keeps running (pid $dovecot_pid); stop it with: kill -- -$dovecot_pid"
fi
