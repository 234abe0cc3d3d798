#!/bin/sh
# The cluster proxy's entrypoint (docker-compose.yml: cluster-proxy). nginx resolves the
# replicas' name at request time through a `resolver`, which must be the container's own DNS
# server: Docker's embedded 127.0.0.11, or the network gateway on podman. Both are the
# first nameserver line of /etc/resolv.conf, so that file is read here, then nginx runs (or the
# command given as arguments). Only the first: nginx asks the servers of a `resolver` line in
# turn, and those after it (podman copies the host's) answer "not found" for a service name. RESOLV_CONF and RESOLVER_CONF move the two files (for tests).
set -eu
resolv="${RESOLV_CONF:-/etc/resolv.conf}"
out="${RESOLVER_CONF:-/etc/nginx/conf.d/00-resolver.conf}"
servers=$(awk '$1 == "nameserver" {
  if ($2 ~ /:/) printf "[%s] ", $2; else printf "%s ", $2; exit }' "$resolv")
if [ -z "$servers" ]; then
  echo "cluster-proxy: no nameserver in $resolv" >&2
  exit 1
fi
echo "resolver ${servers}valid=5s ipv6=off;" >"$out"
echo "cluster-proxy: resolver ${servers}" >&2
[ $# -gt 0 ] || set -- nginx -g 'daemon off;'
exec "$@"
