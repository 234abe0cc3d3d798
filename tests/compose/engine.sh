#!/usr/bin/env bash
# The machine set-up the compose suite needs (tests/compose/): podman and the compose tool,
# the engine's configuration, and local stand-ins for the base images docker-compose.yml and
# the Dockerfile name (no container registry is reachable here). Idempotent: what exists is
# kept, so a second run only checks. Run as root (rootful podman).
#   tests/compose/engine.sh prepare    # everything below, in order
#   tests/compose/engine.sh packages   # only the packages (scripts/test calls this)
#   tests/compose/engine.sh images     # only the stand-in images
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PACKAGES=(podman buildah runc debootstrap docker-compose)
BASE=localhost/debian:bookworm
# Stand-in directory under images/ -> the names the compose file and the Dockerfile use.
declare -A STANDINS=(
  [python]="docker.io/library/python:3.11-slim"
  [rabbitmq]="docker.io/library/rabbitmq:3.13-management"
  [postgres]="docker.io/library/postgres:16"
  [nginx]="docker.io/library/nginx:1.27-alpine"
)

log() { echo "engine.sh: $*" >&2; }

install_packages() {
  local missing=()
  for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
      || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
    >/dev/null
}

# Without it no container starts here: podman's default ulimits exceed what root may set,
# crun cannot run on a hybrid cgroup layout, and there is no systemd. A user's own file is kept.
configure_engine() {
  local conf=/etc/containers/containers.conf
  [ -e "$conf" ] && return 0
  log "writing $conf"
  mkdir -p /etc/containers
  cat >"$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
}

have_image() { podman image exists "$1"; }

# A minimal Debian rootfs from the machine's own apt mirror, imported as an image.
build_base() {
  have_image "$BASE" && return 0
  local mirror rootfs
  mirror="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 \
    | awk '{print $2}')"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d /var/tmp/grid-debootstrap.XXXXXX)"
  log "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null \
    && rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb \
    && tar -C "$rootfs" -c . | podman import -q - "$BASE" >/dev/null
  local status=$?
  rm -rf "$rootfs"
  return $status
}

# The host's CA certificates (HTTPS egress is intercepted here) go into every stand-in.
build_standin() {
  local name="$1" tag="${STANDINS[$1]}" context
  have_image "$tag" && return 0
  context="$(mktemp -d /var/tmp/grid-standin.XXXXXX)"
  cp -r "$HERE/images/$name/." "$context/"
  mkdir -p "$context/ca"
  cp /usr/local/share/ca-certificates/*.crt "$context/ca/" 2>/dev/null || true
  log "building $tag"
  podman build -q --layers=false -t "$tag" "$context" >/dev/null 2>"$context/build.log" \
    || { cat "$context/build.log" >&2; rm -rf "$context"; return 1; }
  rm -rf "$context"
}

# The stand-ins build side by side: most of their time is spent downloading packages.
build_images() {
  build_base
  local pids=() failed=0
  for name in "${!STANDINS[@]}"; do build_standin "$name" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  return $failed
}

main() {
  [ "$(id -u)" = 0 ] || { log "must run as root (rootful podman)"; exit 1; }
  case "${1:-prepare}" in
    prepare) install_packages; configure_engine; build_images ;;
    packages) install_packages ;;
    images) build_images ;;
    *) log "usage: $0 [prepare|packages|images]"; exit 2 ;;
  esac
}

main "$@"
