#!/bin/sh
# Makes a private CA and one route certificate for nats-1, nats-2 and nats-3
# (server and client use: routes authenticate each other with it), in the
# directory given (default: this script's directory), for hosts/nats.conf:
#   ca.pem, route.pem, route-key.pem  (keys are mode 0600; never commit them)
# Extra names: NATS_ROUTE_NAMES="DNS:nats-1.example.com,DNS:..." ./make-certs.sh
set -eu
dir=${1:-$(dirname "$0")}
names=${NATS_ROUTE_NAMES:-DNS:nats-1,DNS:nats-2,DNS:nats-3,DNS:localhost,IP:127.0.0.1}
cd "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=cachepool NATS CA" \
  -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=cachepool NATS route" \
  -keyout route-key.pem -out route.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$names" > route.ext
openssl x509 -req -in route.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
  -extfile route.ext -out route.pem 2>/dev/null
rm -f route.csr route.ext ca.srl
chmod 0644 ca.pem route.pem
echo "wrote $dir/ca.pem, route.pem, route-key.pem (and ca-key.pem: keep it offline)"
