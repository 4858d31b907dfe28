#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need from Debian's packages, where
# it is missing: Dovecot (dovecot-imapd), openssl, python3. Idempotent; needs root.
# Arguments ask for more: a Debian package name (`notmuch`), or a group:
#   cyrus  Cyrus IMAP 3.6 (cyrus-imapd) for the OBJECTID tests (testkit's cyrus.rs). Its
#          cyrus-common brings the SASL modules (AUTH=PLAIN/LOGIN), creates the `cyrus`
#          user the server drops to, and pulls in an MTA (Debian's default, exim4) because
#          it depends on one. No cyrus-admin or sasl2-bin: the test instance checks no
#          passwords (SASL alwaystrue) and testkit drives it over IMAP.
set -euo pipefail
need=()
[ -x /usr/sbin/dovecot ] && [ -x /usr/bin/doveadm ] || need+=(dovecot-imapd)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
for extra in "$@"; do
  case "$extra" in
    cyrus) [ -x /usr/lib/cyrus/bin/master ] && id cyrus >/dev/null 2>&1 || need+=(cyrus-imapd) ;;
    *) dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra") ;;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The packages may start the system-wide Dovecot, Cyrus or exim4; the tests never use
# them (they run their own instances on free ports), so they are left as they are.
