#!/usr/bin/env bash
# Builds the pinned Go tools the local cluster and the tests need, from their Go modules, into a
# cache keyed by tool and version; a tool whose binary is already cached is not rebuilt.
#
#   tools.sh [TOOL...]        build (if missing) the named tools, or all of them
#   tools.sh --print-env      build all, then print `export ...` lines (PATH and stage dir)
#   tools.sh --which TOOL     build TOOL if missing, then print its binary path
#   tools.sh --list           print "tool version" lines
#
# Cache: ${EDGEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet}/tools/<tool>-<version>/bin/
# Each tool family is built in its own scratch Go module so dependency versions never mix.
set -euo pipefail

K8S_VERSION=v1.35.4
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging paths;
# the scratch module replaces them with these published tags instead.
K8S_STAGING_VERSION=v0.35.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
VERSITYGW_VERSION=v1.8.0
# A real node: kubelet and kube-proxy come from k8s.io/kubernetes above; the container runtime,
# its low-level runtime, pod networking, image assembly and cluster DNS from these.
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
CNI_PLUGINS_VERSION=v1.10.0
CRANE_VERSION=v0.22.1
COREDNS_VERSION=v1.15.0
# The Go every tool is built with. An older or missing local Go is replaced by this release,
# fetched as the golang.org/toolchain module from the Go module proxy (as GOTOOLCHAIN does).
GO_VERSION=1.26.8
GO_TOOLCHAIN_SHA256_LINUX_AMD64=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7

K8S_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
ALL_TOOLS=("${K8S_TOOLS[@]}" etcd kwok helm versitygw containerd runc cni-plugins crane coredns)

CACHE=${EDGEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet}
TOOLS_DIR=$CACHE/tools
SRC_DIR=$CACHE/src
LOG_DIR=$CACHE/logs

log() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

version_of() {
  case $1 in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
      echo "$K8S_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    versitygw) echo "$VERSITYGW_VERSION" ;;
    containerd) echo "$CONTAINERD_VERSION" ;;
    runc) echo "$RUNC_VERSION" ;;
    cni-plugins) echo "$CNI_PLUGINS_VERSION" ;;
    crane) echo "$CRANE_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
  esac
}

tool_dir() { echo "$TOOLS_DIR/$1-$(version_of "$1")"; }
bin_path() { echo "$(tool_dir "$1")/bin/$1"; }

# The binaries a tool ships (most ship one, named after the tool).
binaries_of() {
  case $1 in
    containerd) echo containerd ctr containerd-shim-runc-v2 ;;
    cni-plugins) echo bridge host-local loopback portmap ;;
    *) echo "$1" ;;
  esac
}

# A tool counts as present only when everything it ships is in place (kwok needs its stages).
present() {
  local binary
  for binary in $(binaries_of "$1"); do
    [[ -x $(tool_dir "$1")/bin/$binary ]] || return 1
  done
  if [[ $1 == kwok ]]; then [[ -d $(tool_dir kwok)/stage ]] || return 1; fi
  return 0
}

go_env() {
  # Reproducible, static binaries.
  export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
}

# version_at_least HAVE WANT: true when version HAVE (e.g. 1.26.8) >= WANT (e.g. 1.26).
version_at_least() {
  [[ -n $1 ]] && printf '%s\n%s\n' "$2" "$1" | sort -V -C
}

# Makes `go` a Go >= 1.26: the local one if it is recent enough; else Go $GO_VERSION, which a
# Go >= 1.21 fetches itself (GOTOOLCHAIN) and which is otherwise bootstrapped from the proxy.
ensure_go() {
  local have
  have=$(go env GOVERSION 2>/dev/null || true)
  have=${have#go}
  if version_at_least "$have" 1.26; then
    export GOTOOLCHAIN=local
  elif version_at_least "$have" 1.21; then
    export GOTOOLCHAIN=go$GO_VERSION
  else
    bootstrap_go
    export GOTOOLCHAIN=local
  fi
}

bootstrap_go() {
  local dest=$CACHE/go-$GO_VERSION
  if [[ ! -x $dest/bin/go ]]; then
    [[ $(uname -sm) == "Linux x86_64" ]] ||
      die "no Go >= 1.21 on PATH; install Go $GO_VERSION (only linux/amd64 is bootstrapped)"
    command -v curl >/dev/null && command -v unzip >/dev/null ||
      die "bootstrapping Go needs curl and unzip (apt-get install curl unzip)"
    local module=golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-amd64 tmp
    log "no Go >= 1.21 on PATH: fetching $module from the Go module proxy"
    tmp=$(mktemp -d "$CACHE/go-bootstrap.XXXXXX")
    curl -sSf --retry 3 -o "$tmp/go.zip" \
      "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-amd64.zip"
    echo "$GO_TOOLCHAIN_SHA256_LINUX_AMD64  $tmp/go.zip" | sha256sum -c --quiet - ||
      die "the downloaded Go toolchain does not match its pinned SHA-256"
    unzip -q "$tmp/go.zip" -d "$tmp"
    # Module zips carry no file modes.
    chmod +x "$tmp/$module"/bin/* "$tmp/$module"/pkg/tool/*/*
    rm -rf "$dest"
    mv "$tmp/$module" "$dest"
    rm -rf "$tmp"
  fi
  export PATH="$dest/bin:$PATH"
  go version >/dev/null || die "the bootstrapped Go in $dest does not run"
}

# Runs a long go command with its output in a log file, printing a heartbeat while it works.
run_logged() {
  local what=$1 logfile=$2
  shift 2
  local start=$SECONDS next_report=$((SECONDS + 30))
  "$@" >"$logfile" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1 &
    wait $! || true
    if kill -0 "$pid" 2>/dev/null && ((SECONDS >= next_report)); then
      # `go build -v` prints one line per package compiled.
      log "  ... $what: $((SECONDS - start))s, $(grep -vc '^go: ' "$logfile" || true) packages"
      next_report=$((SECONDS + 30))
    fi
  done
  if ! wait "$pid"; then
    tail -n 40 "$logfile" >&2
    die "$what failed; full log: $logfile"
  fi
}

# Creates (once) a scratch module directory and prints its path.
scratch_module() {
  local name=$1 dir=$SRC_DIR/$1
  mkdir -p "$dir"
  if [[ ! -f $dir/go.mod ]]; then
    (cd "$dir" && go mod init "localbuild/$name" >/dev/null 2>&1)
  fi
  echo "$dir"
}

# Moves a freshly built binary (named BINARY, default TOOL) into its tool's cache dir atomically,
# so a half-built tool never counts.
install_bin() {
  local tool=$1 built=$2 binary=${3:-$1} dest
  dest=$(tool_dir "$tool")
  mkdir -p "$dest/bin"
  mv -f "$built" "$dest/bin/$binary.tmp"
  mv -f "$dest/bin/$binary.tmp" "$dest/bin/$binary"
}

prepare_k8s_module() {
  local dir gomod staging
  dir=$(scratch_module "k8s-$K8S_VERSION")
  # The marker names the commands fetched, so adding one re-prepares an older cache.
  local marker=$dir/.prepared-${K8S_TOOLS[*]// /-}
  if [[ -f $marker ]]; then echo "$dir"; return; fi
  log "preparing scratch module for k8s.io/kubernetes $K8S_VERSION"
  gomod=$(cd "$dir" && go list -m -f "{{.GoMod}}" "k8s.io/kubernetes@$K8S_VERSION")
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
  staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod")
  [[ -n $staging ]] || die "no staging replaces found in $gomod"
  local args=()
  for m in $staging; do args+=("-replace=$m=$m@$K8S_STAGING_VERSION"); done
  (cd "$dir" && go mod edit "${args[@]}")
  # Upstream pins runtime behaviour (e.g. default=go1.xx) with godebug lines; keep them.
  local godebug
  godebug=$(awk '/^godebug \(/ { inblock = 1; next } inblock && /^\)/ { inblock = 0 }
                 inblock { print $1 } /^godebug [^(]/ { print $2 }' "$gomod")
  for g in $godebug; do (cd "$dir" && go mod edit "-godebug=$g"); done
  local packages=() tool
  for tool in "${K8S_TOOLS[@]}"; do packages+=("k8s.io/kubernetes/cmd/$tool@$K8S_VERSION"); done
  (cd "$dir" && run_logged "go get k8s.io/kubernetes" "$LOG_DIR/k8s-get.log" go get "${packages[@]}")
  touch "$marker"
  echo "$dir"
}

k8s_minor() {
  local minor=${K8S_VERSION#v1.}
  echo "${minor%%.*}"
}

k8s_ldflags() {
  local flags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(k8s_minor)"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

build_k8s() {
  local tool=$1 dir tmp
  dir=$(prepare_k8s_module)
  tmp=$(mktemp -d "$SRC_DIR/out.XXXXXX")
  (cd "$dir" && run_logged "go build $tool" "$LOG_DIR/$tool.log" \
    go build -v -ldflags "$(k8s_ldflags)" -o "$tmp/$tool" "k8s.io/kubernetes/cmd/$tool")
  install_bin "$tool" "$tmp/$tool"
  rmdir "$tmp"
}

# build_simple TOOL PACKAGE [LDFLAGS]: one scratch module, `go get pkg@version`, `go build pkg`.
build_simple() {
  build_packages "$1" "${3:-}" "$1=$2"
}

# build_packages TOOL LDFLAGS BINARY=PACKAGE...: the binaries a tool ships, each built from a
# package of the tool's module (fetched at the tool's version) in one scratch module.
build_packages() {
  local tool=$1 ldflags=$2 dir tmp spec
  shift 2
  dir=$(scratch_module "$tool-$(version_of "$tool")")
  if [[ ! -f $dir/.prepared ]]; then
    local packages=()
    for spec in "$@"; do packages+=("${spec#*=}@$(version_of "$tool")"); done
    (cd "$dir" && run_logged "go get $tool" "$LOG_DIR/$tool-get.log" go get "${packages[@]}")
    touch "$dir/.prepared"
  fi
  tmp=$(mktemp -d "$SRC_DIR/out.XXXXXX")
  for spec in "$@"; do
    (cd "$dir" && run_logged "go build ${spec%%=*}" "$LOG_DIR/${spec%%=*}.log" \
      go build -v -ldflags "-s -w $ldflags" -o "$tmp/${spec%%=*}" "${spec#*=}")
  done
  for spec in "$@"; do install_bin "$tool" "$tmp/${spec%%=*}" "${spec%%=*}"; done
  rmdir "$tmp"
}

build_kwok() {
  build_simple kwok sigs.k8s.io/kwok/cmd/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
  # kwok >= 0.8 refuses to start without stage files; they ship in its module source.
  local src
  src=$(cd "$SRC_DIR/kwok-$KWOK_VERSION" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  local dest
  dest=$(tool_dir kwok)/stage
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  (cd "$src/kustomize/stage" && find node pod -name '*.yaml' -not -path '*/testdata/*' \
    -exec cp --parents {} "$dest.tmp/" \;)
  chmod -R u+w "$dest.tmp"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
}

# runc's container setup (nsenter) is C, and seccomp filters come from libseccomp: the one tool
# built with cgo. Its Debian build dependencies are installed when missing (as root).
build_runc() {
  if ! { command -v gcc && command -v pkg-config && pkg-config --exists libseccomp; } >/dev/null; then
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null ||
      die "runc needs gcc and libseccomp's headers: apt-get install -y gcc libseccomp-dev pkg-config"
    log "installing runc's build dependencies: apt-get install gcc libseccomp-dev pkg-config"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libseccomp-dev pkg-config; } >&2 ||
      die "could not install gcc libseccomp-dev pkg-config"
  fi
  CGO_ENABLED=1 GOFLAGS="$GOFLAGS -tags=seccomp" build_simple runc github.com/opencontainers/runc \
    "-X main.version=${RUNC_VERSION#v}"
}

build_tool() {
  local tool=$1
  case $tool in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
      build_k8s "$tool" ;;
    etcd) build_simple etcd go.etcd.io/etcd/server/v3 ;;
    kwok) build_kwok ;;
    helm)
      # Without these, `helm template` assumes Kubernetes 1.20 for .Capabilities.KubeVersion.
      local k8s="-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(k8s_minor)"
      k8s+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(k8s_minor)"
      build_simple helm helm.sh/helm/v3/cmd/helm \
        "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean $k8s"
      ;;
    versitygw)
      build_simple versitygw github.com/versity/versitygw/cmd/versitygw \
        "-X main.Version=$VERSITYGW_VERSION -X main.Build=$VERSITYGW_VERSION"
      ;;
    containerd)
      local m=github.com/containerd/containerd/v2
      build_packages containerd "-X $m/version.Version=$CONTAINERD_VERSION" \
        "containerd=$m/cmd/containerd" "ctr=$m/cmd/ctr" \
        "containerd-shim-runc-v2=$m/cmd/containerd-shim-runc-v2"
      ;;
    runc) build_runc ;;
    cni-plugins)
      local m=github.com/containernetworking/plugins
      build_packages cni-plugins "-X $m/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
        "bridge=$m/plugins/main/bridge" "host-local=$m/plugins/ipam/host-local" \
        "loopback=$m/plugins/main/loopback" "portmap=$m/plugins/meta/portmap"
      ;;
    crane) build_simple crane github.com/google/go-containerregistry/cmd/crane ;;
    coredns)
      build_simple coredns github.com/coredns/coredns \
        "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
      ;;
  esac
}

ensure() {
  local missing=() tool
  for tool in "$@"; do present "$tool" || missing+=("$tool"); done
  ((${#missing[@]} == 0)) && return 0
  mkdir -p "$TOOLS_DIR" "$SRC_DIR" "$LOG_DIR"
  ensure_go
  go_env
  # Two test runs may start at once: one builds, the other waits and then finds the binaries.
  exec 9>"$CACHE/tools.lock"
  flock 9
  for tool in "${missing[@]}"; do
    if present "$tool"; then continue; fi
    local start=$SECONDS
    log "building $tool $(version_of "$tool") (this takes minutes the first time)"
    build_tool "$tool"
    log "built $tool $(version_of "$tool") in $((SECONDS - start))s -> $(bin_path "$tool")"
  done
  exec 9>&-
}

print_env() {
  local dirs="" tool
  for tool in "${ALL_TOOLS[@]}"; do
    [[ $tool == cni-plugins ]] || dirs+="$(tool_dir "$tool")/bin:"
  done
  printf 'export PATH=%q"$PATH"\n' "$dirs"
  printf 'export EDGEFLEET_KWOK_STAGES=%q\n' "$(tool_dir kwok)/stage"
  # CNI plugins are found by the runtime in a directory of their own, not on PATH.
  printf 'export EDGEFLEET_CNI_BIN_DIR=%q\n' "$(tool_dir cni-plugins)/bin"
}

main() {
  case ${1:-} in
    --print-env)
      ensure "${ALL_TOOLS[@]}"
      print_env
      ;;
    --which)
      [[ $# -eq 2 ]] || die "usage: tools.sh --which TOOL"
      ensure "$2"
      bin_path "$2"
      ;;
    --list)
      for tool in "${ALL_TOOLS[@]}"; do echo "$tool $(version_of "$tool")"; done
      ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' ;;
    "") ensure "${ALL_TOOLS[@]}" ;;
    -*) die "unknown option $1" ;;
    *)
      for tool in "$@"; do version_of "$tool" >/dev/null; done
      ensure "$@"
      ;;
  esac
}

main "$@"
