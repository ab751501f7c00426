"""The demo application behaves as a test sets it, and reads its flag the three ways flags are stored."""

from __future__ import annotations

import itertools
import json
import urllib.request
from pathlib import Path

import pytest

from testbed.demoapp import Behaviour, FlagSource, Version, flag_value

FLAGD = json.dumps(
    {
        "flags": {
            "new-code-path": {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "on",
            }
        }
    }
)


@pytest.mark.parametrize(
    ("text", "on"),
    [
        pytest.param("true", True, id="bare-true"),
        pytest.param("false", False, id="bare-false"),
        pytest.param("other=true\nnew-code-path=false\n", False, id="key-lines-off"),
        pytest.param("new-code-path=true", True, id="key-lines-on"),
        pytest.param(FLAGD, True, id="flagd-default-on"),
        pytest.param(
            FLAGD.replace('"defaultVariant": "on"', '"defaultVariant": "off"'), False, id="flagd-default-off"
        ),
        pytest.param(FLAGD.replace("ENABLED", "DISABLED"), False, id="flagd-disabled"),
    ],
)
def test_flag_values(text: str, on: bool) -> None:
    assert flag_value(text, "new-code-path") is on


def test_a_version_follows_its_flag_file_without_restart(tmp_path: Path) -> None:
    flag_file = tmp_path / "flags"
    flag_file.write_text("new-code-path=true")
    version = Version("canary", behaviour=Behaviour(error_rate=0.0))
    version.follow_flag(FlagSource(flag_file, "new-code-path"), Behaviour(error_rate=1.0, latency_ms=0))
    assert version.behaviour().error_rate == 1.0
    flag_file.write_text("new-code-path=false")
    assert version.behaviour().error_rate == 0.0
    version.server.server_close()


def test_a_version_serves_requests_and_exports_its_metrics() -> None:
    version = Version("canary", behaviour=Behaviour(error_rate=1.0, latency_ms=1)).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(version.url, timeout=5)
        assert failure.value.code == 500
        failure.value.close()
        with urllib.request.urlopen(f"{version.url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'http_requests_total{code="500",version="canary"} 1.0' in metrics
        assert 'http_requests_total{code="200",version="canary"} 0.0' in metrics
        assert "http_request_duration_seconds_bucket" in metrics
    finally:
        version.stop()


@pytest.mark.parametrize(
    ("random_errors", "longest_clean_run"),
    [pytest.param(False, 99, id="evenly-spaced"), pytest.param(True, None, id="by-chance")],
)
def test_errors_are_evenly_spaced_unless_asked_for_at_random(
    random_errors: bool, longest_clean_run: int | None
) -> None:
    version = Version(
        "canary", behaviour=Behaviour(error_rate=0.01, latency_ms=0, random_errors=random_errors)
    )
    try:
        codes = [version.serve_one() for _ in range(5_000)]
    finally:
        version.server.server_close()
    failed = [i for i, code in enumerate(codes) if code == 500]
    gaps = [b - a - 1 for a, b in itertools.pairwise(failed)]
    if longest_clean_run is not None:
        assert len(failed) == 50 and max(gaps) == longest_clean_run
    else:
        # About 1%, in bunches and droughts: some gaps far shorter, some far longer than 99 (odds against: one in 10^5).
        assert 20 <= len(failed) <= 90 and min(gaps) < 30 and max(gaps) > 150
