#!/bin/sh
# Copies deploy/nats/auth.conf into the nats-config ConfigMap of nats.yaml
# (e2e's TestDeployNATSConfigsValid fails while they differ).
set -eu
cd "$(dirname "$0")"
awk 'BEGIN { while ((getline l < "../nats/auth.conf") > 0) auth = auth (l == "" ? "" : "    " l) "\n" }
/^  auth\.conf: \|$/ { print; printf "%s", auth; skip = 1; next }
skip && /^---$/ { skip = 0 }
!skip { print }' nats.yaml > nats.yaml.tmp
mv nats.yaml.tmp nats.yaml
