#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need from Debian's packages, where
# it is missing: Dovecot (dovecot-imapd), openssl, python3, and for the keyring test
# dbus-run-session, gnome-keyring and secret-tool. Idempotent; needs root.
set -euo pipefail
need=()
[ -x /usr/sbin/dovecot ] && [ -x /usr/bin/doveadm ] || need+=(dovecot-imapd)
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
# The package may start the system-wide Dovecot; the tests never use it (they run their
# own instances on free ports), so it is left as it is.
