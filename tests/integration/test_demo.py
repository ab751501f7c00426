"""`make demo`, Parachute's main job, runs end to end: its own control plane, Prometheus, the
operator under its ServiceAccount, a healthy release, and a bad one recovered by the flag level."""

from __future__ import annotations

import re
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
        result = subprocess.run([sys.executable, "-m", "testbed.demo", "--dir", str(workdir)],
                                capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    finally:
        subprocess.run([sys.executable, "-m", "testbed.cluster", "down", "--dir", str(workdir)],
                       capture_output=True, timeout=120, check=False)  # fmt: skip
        shutil.rmtree(workdir, ignore_errors=True)
    # It ends by itself, with a summary of its three acts.
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "released: the Deployment runs the new image" in result.stdout
    assert "recovered by the flag level" in result.stdout
    assert "flags now {'new-checkout': 'false'}" in result.stdout
    # What an SRE reads: the plugin's tree mid-release and after the rollback, then the postmortem.
    assert "Rollout shop/checkout  Progressing" in result.stdout
    assert "Rollout shop/checkout  RolledBack" in result.stdout
    assert "# Postmortem: shop/checkout, revision" in result.stdout
    summary = result.stdout.split("==> summary", 1)[1].splitlines()[1:4]
    assert [line.split()[0] for line in summary] == ["1.", "2.", "3."]
    assert all(" ok " in line for line in summary), summary
    assert "recovered by the flag level in" in summary[2]
    # Every line of the Rollout's table has its columns where the header has them.
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("NAME"))
    starts = [m.start() for m in re.finditer(r"\S+", header)][1:]  # PHASE ... MESSAGE
    rows = [line for line in lines if line.startswith("checkout ")]
    assert len(rows) >= 6
    for row in rows:  # PHASE and AGE are never empty; MESSAGE may be
        phase, age, message = starts[0], starts[-2], starts[-1]
        assert row[phase - 1] == row[age - 1] == row[message - 1] == " ", row
        assert row[phase] != " " and row[age] != " ", row
