"""The testbed's apps export what real apps do (no version label, no series for a code never
served), and the hand-made data-plane series have the names and labels the sources read."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from testbed.demoapp import Behaviour, Version
from testbed.sources import SHAPES, SourceExporter, Stream


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_a_data_plane_app_knows_no_version_and_has_no_series_for_a_code_it_never_served() -> None:
    version = Version("canary", behaviour=Behaviour(latency_ms=0), code_label="status", labelled=False,
                      every_code=False).start()  # fmt: skip
    try:
        assert "http_requests_total{" not in fetch(f"{version.url}/metrics")
        fetch(version.url)
        metrics = fetch(f"{version.url}/metrics")
        assert 'http_requests_total{status="200"} 1.0' in metrics
        assert 'status="500"' not in metrics and "version=" not in metrics
        assert 'http_request_duration_seconds_bucket{le="0.005"} 1.0' in metrics
    finally:
        version.stop()


def test_the_demo_s_versions_still_say_which_they_are() -> None:
    version = Version("stable", behaviour=Behaviour(latency_ms=0)).start()
    try:
        metrics = fetch(f"{version.url}/metrics")
        assert 'http_requests_total{code="500",version="stable"} 0.0' in metrics
    finally:
        version.stop()


def test_hand_made_istio_series_count_both_reporters_as_istio_does() -> None:
    canary = {"destination_workload_namespace": "shop", "destination_workload": "checkout-canary"}
    exporter = SourceExporter(SHAPES["istio"], [Stream(canary, rate=100, error_rate=0.1, latency_ms=120)],
                              tick=0.05).start()  # fmt: skip
    try:
        time.sleep(0.5)
        text = fetch(f"http://{exporter.address}/metrics")
    finally:
        exporter.stop()
    lines = [line for line in text.splitlines() if line.startswith("istio_requests_total{")]
    destination = [line for line in lines if 'reporter="destination"' in line]
    assert destination and len(lines) == 2 * len(destination)  # the source reporter's beside them
    assert any('response_code="503"' in line for line in destination)
    assert 'istio_request_duration_milliseconds_bucket{destination_workload="checkout-canary"' in text
    assert 'le="250"' in text and 'le="+Inf"' in text
