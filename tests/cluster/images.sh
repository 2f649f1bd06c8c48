#!/usr/bin/env bash
# Builds the container images the real nodes run, without Docker: the operator and the edge
# (the same content as operator/Dockerfile and edge/Dockerfile produce), the pod sandbox's pause
# image, and an origin image for the kind example. Each is written as an image tarball
# (`docker save` format, which `ctr images import`, `kind load image-archive` and
# `docker load` all take) and rebuilt only when what goes into it changed.
#
#   images.sh [--out DIR]     build what is missing or stale; print `images=DIR` (the default
#                             is ${EDGEFLEET_CACHE:-~/.cache/edgefleet}/images) and
#                             `binaries=DIR` (the release binaries the images hold)
#   images.sh --list          print "<file> <image reference>" lines
#
# How an image is made: the binary from `cargo build --release --locked` (what the Dockerfiles
# run), a base layer of the Debian packages it needs taken from this machine's own dpkg
# database (the packages distroless/cc-debian12 is built from: glibc, libgcc, CA certificates,
# netbase, with its passwd/group naming nonroot 65532), then crane (built by tools.sh) puts the
# layers in an image through a throwaway registry on 127.0.0.1 and sets the user (65532:65532),
# entrypoint, PATH and SSL_CERT_FILE as the Dockerfiles do. Every file gets mtime 0 and
# root ownership, so the same inputs make the same image digest.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${EDGEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet}
OUT=$CACHE/images
# Bump when the way images are assembled changes, so cached images are rebuilt.
RECIPE=1

VERSION=$(awk -F'"' '/^appVersion:/ { print $2 }' "$REPO/charts/edgefleet/Chart.yaml")
OPERATOR_IMAGE=ghcr.io/edgefleet/operator:$VERSION
EDGE_IMAGE=ghcr.io/edgefleet/edge:$VERSION
# The name real-node.sh's containerd pins as its sandbox image.
PAUSE_VERSION=3.10.1
PAUSE_IMAGE=localhost/edgefleet/pause:$PAUSE_VERSION
# The S3 store as an in-cluster origin for examples/kind (Versity S3 Gateway, Apache-2.0): the
# same content as examples/kind/origin.Dockerfile.
ORIGIN_IMAGE=localhost/edgefleet/versitygw:$(bash "$HERE/tools.sh" --list | awk '$1 == "versitygw" { print $2 }')

# The Debian packages a glibc Rust binary needs at run time, as in distroless/cc.
BASE_PACKAGES=(libc6 libgcc-s1 netbase)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A cargo started from a test inherits what cargo sets for test processes (CARGO_PKG_*,
# CARGO_MANIFEST_DIR, LD_LIBRARY_PATH, ...), and build fingerprints would see a changed
# environment: the release build would be redone every time it is asked for from a test after a
# shell, or the other way round. The cargo here sees only the user's own settings.
without_inherited_cargo_env() {
  local var
  for var in $(compgen -e); do
    case $var in
      CARGO_HOME | CARGO_TARGET_DIR | CARGO_BUILD_* | CARGO_TERM_* | CARGO_INCREMENTAL | \
        CARGO_PROFILE_* | CARGO_NET_* | CARGO_HTTP_* | CARGO_REGISTRIES_*) ;;
      CARGO | CARGO_* | LD_LIBRARY_PATH | RUST_RECURSION_COUNT) unset "$var" ;;
    esac
  done
}

# A tar of DIR's contents that depends only on the files themselves.
reproducible_tar() {
  local dir=$1 out=$2
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$dir" -cf "$out" .
}

# Fills DIR with the base: the base packages' files (no docs), the CA bundle, and the users.
make_base_root() {
  local root=$1 package path dir
  # Debian 12's merged /usr: /bin, /lib, /lib64 and /sbin are links into /usr.
  for dir in bin lib lib64 sbin; do
    mkdir -p "$root/usr/$dir"
    ln -s "usr/$dir" "$root/$dir"
  done
  for package in "${BASE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      die "the base needs the Debian package $package installed on this machine"
    dpkg-query -L "$package" | while read -r path; do
      case $path in
        /usr/share/doc/* | /usr/share/lintian/* | /usr/share/man/*) continue ;;
        /bin | /lib | /lib64 | /sbin) continue ;;
      esac
      if [[ -f $path || -L $path ]]; then
        mkdir -p "$root$(dirname "$path")"
        cp -a "$path" "$root$path"
      elif [[ -d $path ]]; then
        mkdir -p "$root$path"
      fi
    done
  done
  [[ -f $CA_BUNDLE ]] || die "no CA bundle at $CA_BUNDLE (apt-get install ca-certificates)"
  install -D -m 0644 "$CA_BUNDLE" "$root$CA_BUNDLE"
  mkdir -p "$root/etc" "$root/home/nonroot" "$root/tmp"
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
}

# What the base is made of, for the cache key: package versions and the CA bundle.
base_fingerprint() {
  dpkg-query -W -f='${Package}=${Version}\n' "${BASE_PACKAGES[@]}"
  sha256sum "$CA_BUNDLE"
}

# image NAME REF KEY ROOTFS_FN ENTRYPOINT USER: builds $OUT/NAME.tar unless $OUT/NAME.key says
# it was built from KEY already. ROOTFS_FN DIR fills the image's top layer.
image() {
  local name=$1 ref=$2 key=$3 fill=$4 entrypoint=$5 user=$6
  if [[ -f $OUT/$name.tar && $(cat "$OUT/$name.key" 2>/dev/null) == "$key" ]]; then
    return
  fi
  local work
  work=$(mktemp -d "$OUT/.build-$name.XXXXXX")
  mkdir -p "$work/top"
  "$fill" "$work/top"
  reproducible_tar "$work/top" "$work/top.tar"
  local layers=(-f "$work/top.tar")
  if [[ $name != pause ]]; then layers=(-f "$OUT/.base-layer.tar" "${layers[@]}"); fi
  local staging=127.0.0.1:$REGISTRY_PORT/edgefleet/$name:staging
  crane append --oci-empty-base "${layers[@]}" -t "$staging" >/dev/null
  crane mutate "$staging" --set-platform linux/amd64 --entrypoint "$entrypoint" -u "$user" \
    -e "PATH=$IMAGE_PATH" -e "SSL_CERT_FILE=$CA_BUNDLE" -t "$ref" -o "$work/image.tar" >/dev/null
  mv -f "$work/image.tar" "$OUT/$name.tar"
  echo "$key" >"$OUT/$name.key"
  rm -rf "$work"
  log "built $ref ($(du -h "$OUT/$name.tar" | cut -f1)) -> $OUT/$name.tar"
}

fill_operator() { install -D -m 0755 "$BINARIES/edgefleet-operator" "$1/usr/local/bin/edgefleet-operator"; }
fill_edge() { install -D -m 0755 "$BINARIES/edgefleet-edge" "$1/usr/local/bin/edgefleet-edge"; }
fill_pause() { install -D -m 0755 "$OUT/.pause" "$1/pause"; }
fill_origin() { install -D -m 0755 "$(bash "$HERE/tools.sh" --which versitygw)" "$1/usr/local/bin/versitygw"; }

# The pause binary: pause.c from the k8s.io/kubernetes module tools.sh fetched, linked statically.
build_pause() {
  local source
  source=$(ls -d "$(go env GOMODCACHE)"/k8s.io/kubernetes@"$(bash "$HERE/tools.sh" --list |
    awk '$1 == "kubelet" { print $2 }')"/build/pause/linux/pause.c 2>/dev/null) ||
    die "pause.c not found: run tests/cluster/tools.sh first (it fetches k8s.io/kubernetes)"
  command -v gcc >/dev/null || die "the pause image needs gcc (apt-get install -y gcc libc6-dev)"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-edgefleet" -o "$OUT/.pause" "$source"
  strip "$OUT/.pause"
  sha256sum "$OUT/.pause" | cut -d' ' -f1
}

start_registry() {
  REGISTRY_PORT=$((20000 + RANDOM % 12000))
  crane registry serve --address "127.0.0.1:$REGISTRY_PORT" >"$OUT/.registry.log" 2>&1 &
  REGISTRY_PID=$!
  trap 'kill "$REGISTRY_PID" 2>/dev/null || true' EXIT
  local tries
  for tries in $(seq 100); do
    curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null && return
    kill -0 "$REGISTRY_PID" 2>/dev/null || die "crane registry serve failed: $(cat "$OUT/.registry.log")"
    sleep 0.1
  done
  die "crane registry serve did not answer on 127.0.0.1:$REGISTRY_PORT"
}

main() {
  case ${1:-} in
    --list)
      printf '%s %s\n' operator.tar "$OPERATOR_IMAGE" edge.tar "$EDGE_IMAGE" \
        pause.tar "$PAUSE_IMAGE" origin.tar "$ORIGIN_IMAGE"
      return
      ;;
    --out) OUT=${2:?--out needs a directory} ;;
    "") ;;
    *) die "usage: images.sh [--out DIR] | --list" ;;
  esac
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  eval "$(bash "$HERE/tools.sh" --print-env)"
  # One build at a time per output directory (tests and the demo may start together).
  exec 8>"$OUT/.lock"
  flock 8
  # What an interrupted build left behind.
  rm -rf "$OUT"/.base.* "$OUT"/.build-*

  without_inherited_cargo_env
  log "cargo build --release --locked -p edgefleet-operator -p edgefleet-edge"
  (cd "$REPO" && cargo build --release --locked -p edgefleet-operator -p edgefleet-edge --bins)
  BINARIES=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release

  start_registry
  local base_key
  base_key="$RECIPE $(base_fingerprint | sha256sum | cut -d' ' -f1)"
  if [[ ! -f $OUT/.base-layer.tar || $(cat "$OUT/.base-layer.key" 2>/dev/null) != "$base_key" ]]; then
    local root
    root=$(mktemp -d "$OUT/.base.XXXXXX")
    make_base_root "$root"
    reproducible_tar "$root" "$OUT/.base-layer.tar"
    echo "$base_key" >"$OUT/.base-layer.key"
    rm -rf "$root"
  fi
  local bin_key
  bin_key() { echo "$base_key $RECIPE $(sha256sum "$1" | cut -d' ' -f1)"; }
  image operator "$OPERATOR_IMAGE" "$(bin_key "$BINARIES/edgefleet-operator")" fill_operator \
    /usr/local/bin/edgefleet-operator 65532:65532
  image edge "$EDGE_IMAGE" "$(bin_key "$BINARIES/edgefleet-edge")" fill_edge \
    /usr/local/bin/edgefleet-edge 65532:65532
  image pause "$PAUSE_IMAGE" "$RECIPE $(build_pause)" fill_pause /pause 65535:65535
  image origin "$ORIGIN_IMAGE" "$(bin_key "$(bash "$HERE/tools.sh" --which versitygw)")" fill_origin \
    /usr/local/bin/versitygw 65532:65532
  echo "images=$OUT"
  echo "binaries=$BINARIES"
}

main "$@"
