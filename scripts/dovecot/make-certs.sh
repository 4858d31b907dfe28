#!/bin/sh
# Usage: make-certs.sh OUTDIR
# Writes a throwaway CA and a server cert signed by it into OUTDIR:
#   ca.key ca.pem        - test CA (give ca.pem to the client as trust root)
#   server.key server.pem - server cert, CN=localhost, SAN=DNS:localhost,IP:127.0.0.1
# Keys are EC P-256 (fast to generate). Valid 10 years.
set -eu
out=${1:?usage: make-certs.sh OUTDIR}
mkdir -p "$out"
cd "$out"
umask 077
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout ca.key -out ca.pem -days 3650 -subj "/CN=imap-sync test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
cat > server.ext <<EOT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EOT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out server.pem -days 3650 -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.pem server.pem
openssl verify -CAfile ca.pem server.pem >/dev/null
