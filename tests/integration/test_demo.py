"""`make demo`, Parachute's main job, runs end to end: its own control plane, Prometheus, the
operator under its ServiceAccount, a healthy release, and a bad one recovered by the flag level."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]


def test_the_demo_releases_and_recovers() -> None:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    workdir = Path(tempfile.mkdtemp(prefix="parachute-demo-", dir=base))
    try:
        result = subprocess.run([sys.executable, "-m", "testbed.demo", "--dir", str(workdir), "--once"],
                                capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    finally:
        subprocess.run([sys.executable, "-m", "testbed.cluster", "down", "--dir", str(workdir)],
                       capture_output=True, timeout=120, check=False)  # fmt: skip
        shutil.rmtree(workdir, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "released: the Deployment runs the new image" in result.stdout
    assert "recovered by the flag level" in result.stdout
    assert "flags now {'new-checkout': 'false'}" in result.stdout
