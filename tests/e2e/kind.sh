#!/usr/bin/env bash
# The integration suite on kind, for machines with Docker: a real kubelet instead of kwok.
# The local control plane (`make test`) stays the default everywhere; this is the extra check.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make e2e-kind needs a running Docker engine" >&2; exit 1; }
bin=${XDG_CACHE_HOME:-$HOME/.cache}/parachute/bin/kind-v0.30.0
if ! command -v kind >/dev/null; then
  [ -x "$bin/kind" ] || GOBIN=$bin go install sigs.k8s.io/kind@v0.30.0
  PATH=$bin:$PATH
fi
name=parachute-e2e
work=$(mktemp -d)
trap 'kind delete cluster --name "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
kind create cluster --name "$name" --kubeconfig "$work/kubeconfig" --wait 180s
PARACHUTE_TEST_KUBECONFIG=$work/kubeconfig .venv/bin/python -m pytest tests/integration
