#!/usr/bin/env bash
# Makes a throwaway CA, a server certificate it signs for localhost and 127.0.0.1, and a
# client certificate, for trying TLS and mutual TLS on one machine (not for production:
# no passphrase, ten days). Usage: scripts/tls-certs.sh DIR [extra server name ...]
#   strom serve --tls-cert DIR/server.pem --tls-key DIR/server.key --tls-client-ca DIR/ca.pem
#   strom topic list --tls-ca DIR/ca.pem --tls-client-cert DIR/client.pem --tls-client-key DIR/client.key
set -euo pipefail
dir=${1:?usage: scripts/tls-certs.sh DIR [extra server name ...]}
shift
mkdir -p "$dir"
cd "$dir"
san="DNS:localhost,IP:127.0.0.1"
for name in "$@"; do san="$san,DNS:$name"; done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 10 \
  -subj "/CN=strom test CA" -keyout ca.key -out ca.pem 2>/dev/null
# Each certificate says what it is for (extendedKeyUsage): one without it would be
# accepted as a client's certificate too, the server's included.
leaf() { # name, subjectAltName, serverAuth or clientAuth
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 10 \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$2" "$3") \
    -out "$1.pem" 2>/dev/null
  rm "$1.csr"
}
leaf server "$san" serverAuth
leaf client "DNS:client" clientAuth
echo "in $dir: ca.pem, server.pem server.key, client.pem client.key"
