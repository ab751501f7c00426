"""The operator's own metrics: recovery times and objective breaches, for Prometheus.

`parachute_recovery_seconds` is the time from the first critical verdict to health restored,
labelled by the level that restored it; `parachute_recovery_objective_breaches_total` counts
recoveries slower than the Rollout's objective (5 minutes by default).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RECOVERY_SECONDS = Histogram(
    "parachute_recovery_seconds",
    "First critical verdict to health restored, per rollback.",
    ["namespace", "rollout", "level"],
    buckets=(5, 15, 30, 60, 120, 180, 300, 600, 900, 1800),
)
ROLLBACKS = Counter("parachute_rollbacks_total", "Rollbacks started.", ["namespace", "rollout"])
OBJECTIVE_BREACHES = Counter(
    "parachute_recovery_objective_breaches_total",
    "Recoveries that took longer than their objective.",
    ["namespace", "rollout"],
)


def serve(port: int) -> None:
    start_http_server(port)


def rollback_started(namespace: str, rollout: str) -> None:
    ROLLBACKS.labels(namespace, rollout).inc()


def recovered(namespace: str, rollout: str, level: str, seconds: float, objective_met: bool) -> None:
    RECOVERY_SECONDS.labels(namespace, rollout, level).observe(seconds)
    if not objective_met:
        OBJECTIVE_BREACHES.labels(namespace, rollout).inc()
