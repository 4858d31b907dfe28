#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need from Debian's packages, where
# it is missing: Dovecot (dovecot-imapd), openssl, python3; for the keyring test
# dbus-run-session, gnome-keyring and secret-tool; and aiosmtpd from PyPI (the SMTP server
# of the outbox tests) into a virtual environment at $SYNCMAIL_VENV, by default
# ~/.cache/syncmail-venv. Idempotent; needs root.
set -euo pipefail
need=()
[ -x /usr/sbin/dovecot ] && [ -x /usr/bin/doveadm ] && [ -x /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
# The desktop keyring test: a private D-Bus session with GNOME Keyring, read by secret-tool.
command -v dbus-run-session >/dev/null || need+=(dbus-daemon)
command -v gnome-keyring-daemon >/dev/null || need+=(gnome-keyring)
command -v secret-tool >/dev/null || need+=(libsecret-tools)
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
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
# The package may start the system-wide Dovecot; the tests never use it (they run their
# own instances on free ports), so it is left as it is.
