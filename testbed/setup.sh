#!/usr/bin/env bash
# Everything Parachute's tests and demo need on a fresh machine, each step skipped when
# already done: the Python virtualenv with the project and its dev tools, Debian's
# Prometheus, the control-plane binaries (downloaded or built, cached by version) and the
# published CRDs of the traffic routers (cached by version).
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

if ! command -v prometheus >/dev/null 2>&1; then
  t=$SECONDS
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus openssl >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus openssl >/dev/null
  else
    say "please install Prometheus (Debian/Ubuntu: apt-get install prometheus) and run again"; exit 1
  fi
  say "prometheus installed in $((SECONDS - t))s"
  # Debian's package may start a system service; the tests run their own.
  (command -v systemctl >/dev/null && systemctl disable --now prometheus >/dev/null 2>&1) || true
else
  say "prometheus: $(command -v prometheus)"
fi

t=$SECONDS
bash "$here/install-binaries.sh" >/dev/null
say "control-plane binaries ready in $((SECONDS - t))s"

t=$SECONDS
bash "$here/install-crds.sh" >/dev/null
say "traffic-router CRDs ready in $((SECONDS - t))s"
say "set-up done in $((SECONDS - start))s"
