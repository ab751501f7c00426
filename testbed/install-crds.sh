#!/usr/bin/env bash
# Obtains the published CRDs of the traffic routers Parachute drives, into the per-user cache
# keyed by version: Gateway API's standard channel (sigs.k8s.io/gateway-api,
# config/crd/standard/) and Istio's bundle (istio.io/api,
# kubernetes/customresourcedefinitions.gen.yaml). Both are Go modules, so the Go module proxy
# serves them; without Go, the same files come from the projects' tagged sources on GitHub.
# Copies are never committed. A second run finds the cache and does nothing.
#
# Usage: testbed/install-crds.sh          prints the cache directory on its last line
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

CACHE=${PARACHUTE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parachute}
CRDS=$CACHE/crds
GATEWAY_DIR=$CRDS/gateway-api-v$GATEWAY_API_VERSION
ISTIO_DIR=$CRDS/istio-api-v$ISTIO_API_VERSION
# The standard channel's CRDs that routing uses; its ValidatingAdmissionPolicy is not a CRD
# and is left out.
GATEWAY_FILES="gatewayclasses gateways httproutes referencegrants"
ISTIO_FILE=customresourcedefinitions.gen.yaml

log() { printf '[install-crds] %s\n' "$*" >&2; }

module_dir() {  # module_dir PATH@VERSION: the module's unpacked source, or nothing
  command -v go >/dev/null || return 0
  GOTOOLCHAIN=local GOFLAGS=-modcacherw GOPROXY=$(go env GOPROXY | sed 's/,direct$//') \
    go mod download -json "$1" 2>/dev/null |
    python3 -c 'import json,sys;print(json.load(sys.stdin).get("Dir",""))' || true
}

copy_or_fetch() {  # copy_or_fetch SRC_DIR REL_PATH URL DEST
  if [ -n "$1" ] && [ -f "$1/$2" ]; then cp "$1/$2" "$4.part"
  else curl -fsSL --connect-timeout 5 --max-time 300 -o "$4.part" "$3"
  fi
  chmod 644 "$4.part"; mv "$4.part" "$4"
}

gateway_ok() { for f in $GATEWAY_FILES; do [ -s "$GATEWAY_DIR/gateway.networking.k8s.io_$f.yaml" ] || return 1; done; }
istio_ok() { [ -s "$ISTIO_DIR/$ISTIO_FILE" ]; }

obtain_gateway() {
  local src f rel
  src=$(module_dir "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION")
  mkdir -p "$GATEWAY_DIR"
  for f in $GATEWAY_FILES; do
    rel=config/crd/standard/gateway.networking.k8s.io_$f.yaml
    copy_or_fetch "$src" "$rel" \
      "https://raw.githubusercontent.com/kubernetes-sigs/gateway-api/v$GATEWAY_API_VERSION/$rel" \
      "$GATEWAY_DIR/gateway.networking.k8s.io_$f.yaml"
  done
}

obtain_istio() {
  local src rel=kubernetes/$ISTIO_FILE
  src=$(module_dir "istio.io/api@v$ISTIO_API_VERSION")
  mkdir -p "$ISTIO_DIR"
  copy_or_fetch "$src" "$rel" "https://raw.githubusercontent.com/istio/api/v$ISTIO_API_VERSION/$rel" \
    "$ISTIO_DIR/$ISTIO_FILE"
}

for name in gateway istio; do
  if "${name}_ok"; then log "$name: cached"; continue; fi
  "obtain_$name" || { log "$name: neither the Go module proxy nor GitHub could be reached"; exit 1; }
  "${name}_ok" || { log "$name: obtained, but files are missing"; exit 1; }
  log "$name: obtained"
done
echo "$CRDS"
