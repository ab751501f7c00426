#!/usr/bin/env bash
# Obtains etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok for the
# local control plane (and helm, and the upstream Prometheus the testbed runs), into a
# per-user cache keyed by version. Official release downloads are tried first; where they
# cannot be reached, the same versions are built from the Go module proxy. A second run
# finds the cache and does nothing.
#
# Usage: cluster/install-binaries.sh          prints the cache directory on its last line
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

CACHE=${PARACHUTE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parachute}
BIN=$CACHE/bin
KUBE_DIR=$BIN/kubernetes-v$KUBE_VERSION
ETCD_DIR=$BIN/etcd-v$ETCD_VERSION
KWOK_DIR=$BIN/kwok-v$KWOK_VERSION
HELM_DIR=$BIN/helm-v$HELM_VERSION
PROMETHEUS_DIR=$BIN/prometheus-v$PROMETHEUS_VERSION
ARCH=$(uname -m); case $ARCH in x86_64) ARCH=amd64 ;; aarch64) ARCH=arm64 ;; esac

log() { printf '[install-binaries] %s\n' "$*" >&2; }

# Go settings for building from the module proxy: never fall back to a git clone
# (unreachable on closed networks) and never fetch another toolchain.
go_env() {
  export GOTOOLCHAIN=local GOFLAGS=-modcacherw CGO_ENABLED=0
  local proxy; proxy=$(go env GOPROXY)
  export GOPROXY=${proxy%,direct}
}

fetch() {  # fetch URL DEST: quick failure when the host is unreachable
  curl -fsSL --connect-timeout 5 --max-time 600 -o "$2" "$1"
}

# Versions are read into a variable first: `binary | grep -q` under pipefail fails at
# random when grep exits early and the binary dies of SIGPIPE.
reports() { local out; out=$("$1" --version 2>/dev/null) || return 1; [[ $out == *"$2"* ]]; }
kube_ok() { [ -x "$KUBE_DIR/kube-apiserver" ] && reports "$KUBE_DIR/kube-apiserver" "Kubernetes v$KUBE_VERSION" \
  && [ -x "$KUBE_DIR/kube-controller-manager" ] && [ -x "$KUBE_DIR/kube-scheduler" ]; }
etcd_ok() { [ -x "$ETCD_DIR/etcd" ] && reports "$ETCD_DIR/etcd" "etcd Version: $ETCD_VERSION"; }
kwok_ok() { [ -x "$KWOK_DIR/kwok" ] && { [ -f "$KWOK_DIR/stages.yaml" ] || write_kwok_stages; }; }

download_kube() {
  local tmp; tmp=$(mktemp -d)
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    fetch "https://dl.k8s.io/release/v$KUBE_VERSION/bin/linux/$ARCH/$c" "$tmp/$c" || { rm -rf "$tmp"; return 1; }
  done
  chmod +x "$tmp"/*; mkdir -p "$KUBE_DIR"; mv "$tmp"/* "$KUBE_DIR/"; rm -rf "$tmp"
}

# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the staging modules with
# local paths at the fake version v0.0.0. A throwaway module that requires it and replaces
# each staging module with its published v0.X.Y tag builds from the proxy.
build_kube() {
  go_env
  local w minor gomod v
  w=$(mktemp -d); minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  ( cd "$w"
    go mod init parachute-kube-build >/dev/null 2>&1
    go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" >dl.json
    gomod=$(python3 -c 'import json;print(json.load(open("dl.json"))["GoMod"])')
    echo "godebug default=go$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' "$gomod")" >>go.mod
    for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod"); do
      v="v0.$minor.${KUBE_VERSION##*.}"
      go mod edit -replace="$m=$m@$v"
    done
    cmds="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler"
    # shellcheck disable=SC2046
    go get $(for c in $cmds; do echo "$c@v$KUBE_VERSION"; done)
    local V=k8s.io/component-base/version
    mkdir -p "$KUBE_DIR"
    # shellcheck disable=SC2086
    go build -trimpath -ldflags "-s -w -X $V.gitVersion=v$KUBE_VERSION -X $V.gitMajor=1 -X $V.gitMinor=$minor -X $V.gitTreeState=clean" \
      -o "$KUBE_DIR/" $cmds )
  rm -rf "$w"
}

download_etcd() {
  local tmp; tmp=$(mktemp -d)
  fetch "https://github.com/etcd-io/etcd/releases/download/v$ETCD_VERSION/etcd-v$ETCD_VERSION-linux-$ARCH.tar.gz" "$tmp/etcd.tgz" || { rm -rf "$tmp"; return 1; }
  tar -xzf "$tmp/etcd.tgz" -C "$tmp" --strip-components=1
  mkdir -p "$ETCD_DIR"; mv "$tmp/etcd" "$ETCD_DIR/"; rm -rf "$tmp"
}

# etcd's server module has local replaces too, but its requirements carry real versions,
# so a throwaway module needs no replace lines.
build_etcd() {
  go_env
  local w; w=$(mktemp -d)
  ( cd "$w"
    go mod init parachute-etcd-build >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    mkdir -p "$ETCD_DIR"
    go build -trimpath -ldflags "-s -w" -o "$ETCD_DIR/etcd" go.etcd.io/etcd/server/v3 )
  rm -rf "$w"
}

download_kwok() {
  mkdir -p "$KWOK_DIR"
  fetch "https://github.com/kubernetes-sigs/kwok/releases/download/v$KWOK_VERSION/kwok-linux-$ARCH" "$KWOK_DIR/kwok.part" || return 1
  mv "$KWOK_DIR/kwok.part" "$KWOK_DIR/kwok"; chmod +x "$KWOK_DIR/kwok"
}

build_kwok() {
  go_env
  GOBIN=$KWOK_DIR go install "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
}

# kwok needs Stage objects to know how to make nodes and pods ready. They ship in its Go
# module (and in its repository, for machines without Go).
KWOK_STAGES="node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml"
write_kwok_stages() {
  local src="" f
  if command -v go >/dev/null; then
    go_env
    src=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" 2>/dev/null |
      python3 -c 'import json,sys;print(json.load(sys.stdin).get("Dir",""))' || true)
  fi
  for f in $KWOK_STAGES; do
    echo '---'
    if [ -n "$src" ]; then cat "$src/kustomize/stage/$f"
    else curl -fsSL --connect-timeout 5 "https://raw.githubusercontent.com/kubernetes-sigs/kwok/v$KWOK_VERSION/kustomize/stage/$f"
    fi
  done >"$KWOK_DIR/stages.yaml.part"
  mv "$KWOK_DIR/stages.yaml.part" "$KWOK_DIR/stages.yaml"
}

helm_ok() { local out; [ -x "$HELM_DIR/helm" ] && out=$("$HELM_DIR/helm" version --short 2>/dev/null) && [[ $out == "v$HELM_VERSION"* ]]; }

download_helm() {
  local tmp; tmp=$(mktemp -d)
  fetch "https://get.helm.sh/helm-v$HELM_VERSION-linux-$ARCH.tar.gz" "$tmp/helm.tgz" || { rm -rf "$tmp"; return 1; }
  tar -xzf "$tmp/helm.tgz" -C "$tmp"
  mkdir -p "$HELM_DIR"; mv "$tmp/linux-$ARCH/helm" "$HELM_DIR/"; rm -rf "$tmp"
}

build_helm() {
  go_env
  GOBIN=$HELM_DIR go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
}

# The testbed's one Prometheus, for static targets and pod discovery alike: the upstream
# build, since distributions' packages may lack Kubernetes discovery (`kubernetes_sd_configs`;
# Debian's does). Built from source, it serves the API without the web UI's assets, which no
# test reads.
prometheus_ok() { [ -x "$PROMETHEUS_DIR/prometheus" ] && reports "$PROMETHEUS_DIR/prometheus" "version $PROMETHEUS_VERSION"; }

download_prometheus() {
  local tmp; tmp=$(mktemp -d)
  fetch "https://github.com/prometheus/prometheus/releases/download/v$PROMETHEUS_VERSION/prometheus-$PROMETHEUS_VERSION.linux-$ARCH.tar.gz" "$tmp/p.tgz" || { rm -rf "$tmp"; return 1; }
  tar -xzf "$tmp/p.tgz" -C "$tmp" --strip-components=1
  mkdir -p "$PROMETHEUS_DIR"; mv "$tmp/prometheus" "$PROMETHEUS_DIR/"; rm -rf "$tmp"
}

# Prometheus 3's Go module is tagged v0.3MM.P for release 3.MM.P. Its go.mod has exclude
# lines, which `go install pkg@version` refuses; they name versions nothing selects, so a
# throwaway module builds the same binary.
build_prometheus() {
  go_env
  local w minor V=github.com/prometheus/common/version
  w=$(mktemp -d); minor=$(echo "$PROMETHEUS_VERSION" | cut -d. -f2)
  ( cd "$w"
    go mod init parachute-prometheus-build >/dev/null 2>&1
    go get "github.com/prometheus/prometheus/cmd/prometheus@v0.3$(printf %02d "$minor").${PROMETHEUS_VERSION##*.}"
    mkdir -p "$PROMETHEUS_DIR"
    go build -trimpath -ldflags "-s -w -X $V.Version=$PROMETHEUS_VERSION" \
      -o "$PROMETHEUS_DIR/prometheus" github.com/prometheus/prometheus/cmd/prometheus )
  rm -rf "$w"
}

obtain() {  # obtain NAME: check, else download, else build
  local name=$1 start=$SECONDS
  if "${name}_ok"; then log "$name: cached"; return; fi
  if "download_$name" 2>/dev/null && "${name}_ok"; then log "$name: downloaded in $((SECONDS - start))s"; return; fi
  command -v go >/dev/null || { log "$name: release download failed and no Go toolchain to build it"; exit 1; }
  log "$name: release download unreachable; building from the Go module proxy"
  "build_$name"
  "${name}_ok" || { log "$name: build finished but the binary does not report version as expected"; exit 1; }
  log "$name: built in $((SECONDS - start))s"
}

mkdir -p "$BIN"
obtain etcd
obtain kwok
obtain kube
obtain helm
obtain prometheus
echo "$BIN"
