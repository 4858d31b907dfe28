#!/bin/sh
# Usage: make-bad-cert.sh CERTDIR KIND
# Replaces server.pem/server.key in CERTDIR (made by make-certs.sh, whose ca.key it uses)
# with a certificate that a client must refuse:
#   expired     - signed by the test CA, valid 2020-01-01 to 2021-01-01 only
#   wrong-name  - signed by the test CA, for DNS:wrong.example only (not localhost/127.0.0.1)
#   other-ca    - for localhost/127.0.0.1, signed by a second CA that no one trusts
set -eu
dir=${1:?usage: make-bad-cert.sh CERTDIR KIND}
kind=${2:?usage: make-bad-cert.sh CERTDIR KIND}
cd "$dir"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
san="DNS:localhost,IP:127.0.0.1"
ca=ca.pem
cakey=ca.key
case $kind in
  expired) ;;
  wrong-name) san="DNS:wrong.example" ;;
  other-ca)
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$work/other.key" -out "$work/other.pem" -days 3650 -subj "/CN=untrusted CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    ca=$work/other.pem
    cakey=$work/other.key ;;
  *) echo "make-bad-cert.sh: unknown kind $kind" >&2; exit 2 ;;
esac
cn=${san#*:}; cn=${cn%%,*}
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$work/server.key" -out "$work/server.csr" -subj "/CN=$cn" 2>/dev/null
cat > "$work/server.ext" <<EOT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
EOT
# `openssl ca` is the one tool of OpenSSL 3.0 that sets a start date in the past.
cat > "$work/ca.cnf" <<EOT
[ ca ]
default_ca = test
[ test ]
database = $work/index.txt
new_certs_dir = $work
serial = $work/serial
default_md = sha256
policy = any
[ any ]
commonName = supplied
EOT
: > "$work/index.txt"
echo 1000 > "$work/serial"
if [ "$kind" = expired ]; then
  dates="-startdate 20200101000000Z -enddate 20210101000000Z"
else
  dates="-days 3650"
fi
# shellcheck disable=SC2086
openssl ca -batch -notext -config "$work/ca.cnf" -cert "$ca" -keyfile "$cakey" \
    -in "$work/server.csr" -out "$work/server.pem" -extfile "$work/server.ext" $dates 2>/dev/null
cp "$work/server.key" server.key
cp "$work/server.pem" server.pem
chmod 644 server.pem
