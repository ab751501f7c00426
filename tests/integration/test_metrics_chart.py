"""The chart's PodMonitor example: off by default, and when on, a PodMonitor that scrapes the
app's pods in their namespaces (the Prometheus Operator then labels every series with its
namespace and pod, which is what the built-in metrics select versions by)."""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.test_chart import rendered


def test_no_pod_monitor_unless_asked() -> None:
    assert not [d for d in rendered() if d["kind"] == "PodMonitor"]


def test_the_pod_monitor_scrapes_the_app_s_pods_where_they_run() -> None:
    documents = rendered("appPodMonitor.enabled=true", "appPodMonitor.name=checkout",
                         "appPodMonitor.selector.matchLabels.app=checkout", "appPodMonitor.namespaces={shop}",
                         "appPodMonitor.labels.release=kube-prometheus-stack", "appPodMonitor.port=http")  # fmt: skip
    (monitor,) = [d for d in documents if d["kind"] == "PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] == "checkout"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"] == {"matchLabels": {"app": "checkout"}}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["shop"]}
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]


def test_a_pod_monitor_without_a_selector_is_refused() -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        rendered("appPodMonitor.enabled=true")
    assert "appPodMonitor.selector must select the app's pods" in refused.value.stderr
