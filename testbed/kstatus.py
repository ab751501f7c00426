"""kstatus, as Flux and kpt compute a resource's status: a small Go program over
sigs.k8s.io/cli-utils/pkg/kstatus, built once from the Go module proxy and cached like the
control-plane binaries (keyed by its sources, so a change to them rebuilds it).

Test infrastructure only: the tests ask it what Flux would conclude from a Rollout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent / "kstatus-go"


class GoMissingError(RuntimeError):
    """No Go toolchain to build the harness with."""


def cache_dir() -> Path:
    base = os.environ.get("PARACHUTE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "parachute"
    )
    return Path(base) / "bin"


def _key() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    return digest.hexdigest()[:12]


def binary() -> Path:
    """The harness, built on first use."""
    target = cache_dir() / f"kstatus-{_key()}" / "kstatus"
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise GoMissingError("building the kstatus harness needs Go (1.22 or later)")
    proxy = subprocess.run([go, "env", "GOPROXY"], capture_output=True, text=True, check=True).stdout.strip()
    # Never a git clone (closed networks), never another toolchain: as install-binaries.sh does.
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-modcacherw", "CGO_ENABLED": "0",
           "GOPROXY": proxy.removesuffix(",direct") or "https://proxy.golang.org"}  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        built = Path(work) / "kstatus"
        subprocess.run([go, "build", "-trimpath", "-o", str(built), "."], cwd=SOURCE, env=env, check=True)
        built.replace(target)
    return target


def compute(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """kstatus's answer ({status, message}) for each object, in order."""
    lines = "".join(json.dumps(o) + "\n" for o in objects)
    out = subprocess.run([str(binary())], input=lines, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line]
