#!/usr/bin/env bash
# Everything Parachute's tests and demo need on a fresh machine, each step skipped when
# already done: the Python virtualenv with the project and its dev tools, openssl, the
# binaries (the control plane, helm and Prometheus: downloaded or built, cached by version)
# and the published CRDs of the traffic routers (cached by version).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cd "$repo"
say() { printf '[setup] %s\n' "$*" >&2; }
start=$SECONDS

PYTHON=${PYTHON:-python3}
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  t=$SECONDS
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  rm -f .venv/.installed-*; touch "$stamp"
  say "python packages installed in $((SECONDS - t))s"
else
  say "python packages: up to date"
fi

# The tests mint certificates for a Prometheus that serves TLS.
if ! command -v openssl >/dev/null 2>&1; then
  t=$SECONDS
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null
  else
    say "please install openssl and run again"; exit 1
  fi
  say "openssl installed in $((SECONDS - t))s"
fi

t=$SECONDS
bash "$here/install-binaries.sh" >/dev/null
say "control-plane binaries, helm and prometheus ready in $((SECONDS - t))s"

t=$SECONDS
bash "$here/install-crds.sh" >/dev/null
say "traffic-router CRDs ready in $((SECONDS - t))s"
say "set-up done in $((SECONDS - start))s"
