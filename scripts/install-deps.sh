#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need from Debian's packages, where
# it is missing: Dovecot (dovecot-imapd), openssl, python3; for the keyring test
# dbus-run-session, gnome-keyring and secret-tool; and aiosmtpd from PyPI (the SMTP server
# of the outbox tests) into a virtual environment at $SYNCMAIL_VENV, by default
# ~/.cache/syncmail-venv. Idempotent; needs root.
# Arguments ask for more: a Debian package name (`notmuch`), or a group:
#   cyrus  Cyrus IMAP 3.6 for the OBJECTID tests (testkit's cyrus.rs). Debian's
#          cyrus-imapd package conflicts with dovecot-imapd (both provide imap-server), so
#          only cyrus-common is installed (the master process, the SASL modules, the
#          `cyrus` user the server drops to, and an MTA it depends on, exim4); the imapd
#          program is taken out of the cyrus-imapd package file without installing it.
set -euo pipefail
need=()
[ -x /usr/sbin/dovecot ] && [ -x /usr/bin/doveadm ] && [ -x /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
# The desktop keyring test: a private D-Bus session with GNOME Keyring, read by secret-tool.
command -v dbus-run-session >/dev/null || need+=(dbus-daemon)
command -v gnome-keyring-daemon >/dev/null || need+=(gnome-keyring)
command -v secret-tool >/dev/null || need+=(libsecret-tools)
cyrus=no
for extra in "$@"; do
  case "$extra" in
    cyrus)
      cyrus=yes
      [ -x /usr/lib/cyrus/bin/master ] && id cyrus >/dev/null 2>&1 || need+=(cyrus-common)
      ;;
    *) dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra") ;;
  esac
done
updated=no
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  updated=yes
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$cyrus" = yes ] && [ ! -x /usr/lib/cyrus/bin/imapd ]; then
  echo "unpacking Cyrus imapd (the cyrus-imapd package itself would remove Dovecot)" >&2
  [ "$updated" = yes ] || apt-get update -qq
  work=$(mktemp -d)
  chmod 755 "$work" # apt downloads as its own user
  (cd "$work" && apt-get download -qq cyrus-imapd >/dev/null && dpkg -x cyrus-imapd_*.deb root)
  install -m 755 "$work"/root/usr/lib/cyrus/bin/* /usr/lib/cyrus/bin/
  rm -rf "$work"
fi
venv=${SYNCMAIL_VENV:-${HOME:-/root}/.cache/syncmail-venv}
if ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing aiosmtpd into $venv" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian keeps venv's pip bootstrap in its own package.
    rm -rf "$venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check aiosmtpd==1.4.6 atpublic==9.0.0 attrs==26.1.0
fi
# The packages may start the system-wide Dovecot or exim4; the tests never use them (they
# run their own instances on free ports), so they are left as they are.
