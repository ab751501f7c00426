"""Which release policy applies to a Rollout, and what its window says now.

The Rollout's own `spec.window` wins; else the ReleasePolicy it names (`spec.policyRef`);
else the operator's default policy (`--default-policy`, a Helm value). With none of them a
release is not held by time, and status says so.
"""

from __future__ import annotations

import functools
import os
from datetime import date, datetime
from typing import Any

import holidays
from pydantic import ValidationError

from parachute.analysis.connect import provider_for
from parachute.api import ReleasePolicySpec, RolloutSpec, Window
from parachute.kube_api import KubeApi
from parachute.plan.metrics import parse_threshold
from parachute.plan.model import WindowView
from parachute.plan.windows import Calendar, no_holidays, problems, state

DEFAULT_POLICY_ENV = "PARACHUTE_DEFAULT_POLICY"


class PolicyError(ValueError):
    """The named policy does not exist; the message names the field."""


@functools.cache
def _country(country: str, subdivision: str | None) -> Any:
    return holidays.country_holidays(country, subdiv=subdivision)


def calendar_for(window: Window) -> Calendar:
    if window.holidays is None:
        return no_holidays
    days = _country(window.holidays.country, window.holidays.subdivision)

    def holiday(day: date) -> str | None:
        name = days.get(day)
        return str(name) if name else None

    return holiday


async def policy_for(cluster: KubeApi, spec: RolloutSpec) -> tuple[str | None, ReleasePolicySpec | None]:
    """(the policy's name, its spec), or (None, None) when nothing holds the release."""
    if spec.window is not None:
        return "spec.window", ReleasePolicySpec(window=spec.window, checklist=spec.checklist)
    name = spec.policy_ref.name if spec.policy_ref else os.environ.get(DEFAULT_POLICY_ENV) or None
    if not name:
        return None, None
    found = await cluster.read_release_policy(name)
    if found is None:
        field = "spec.policyRef.name" if spec.policy_ref else f"the default policy ({DEFAULT_POLICY_ENV})"
        raise PolicyError(f"{field}: ReleasePolicy {name} not found")
    try:
        return name, ReleasePolicySpec.model_validate(found.get("spec") or {})
    except ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(part) for part in ("spec", *problem["loc"]))
        raise PolicyError(f"ReleasePolicy {name}: {field}: {problem['msg']}") from error


def check_window(spec: RolloutSpec, policy: str, window: Window) -> None:
    """Raise PolicyError, naming the field, for a window that cannot work as written.

    An unknown time zone, hours that never open, a holiday calendar that does not exist,
    and a peak-traffic query with no Prometheus to ask (the Rollout's `spec.analysis`).
    """
    where = "spec.window" if policy == "spec.window" else f"ReleasePolicy {policy}: spec.window"
    found = problems(window)
    if found:
        field, message = found[0]
        raise PolicyError(f"{where}.{field}: {message}")
    if window.holidays is not None:
        try:
            _country(window.holidays.country, window.holidays.subdivision)
        except NotImplementedError:
            subdivision = (
                f" subdivision {window.holidays.subdivision!r}" if window.holidays.subdivision else ""
            )
            raise PolicyError(
                f"{where}.holidays: no holiday calendar for {window.holidays.country!r}{subdivision}"
            ) from None
    if window.peak_traffic is not None and spec.analysis is None:
        raise PolicyError(
            f"{where}.peakTraffic: needs a Prometheus to measure it, and this Rollout has no spec.analysis"
        )


async def window_for(
    cluster: KubeApi, spec: RolloutSpec, namespace: str, now: datetime
) -> tuple[WindowView, ReleasePolicySpec | None]:
    name, policy = await policy_for(cluster, spec)
    window = policy.window if policy else None
    if window is None:
        return WindowView(policy=name), policy
    assert name is not None
    check_window(spec, name, window)
    peak = False
    if window.peak_traffic is not None and spec.analysis is not None:
        provider = await provider_for(spec.analysis, namespace)
        sample = await provider.sample(window.peak_traffic.query)
        # An unmeasurable peak does not hold a release: Prometheus being away is no peak.
        peak = sample.value is not None and sample.value > parse_threshold(
            window.peak_traffic.threshold, "number"
        )
    result = state(window, now, calendar_for(window), peak)
    return WindowView(open=result.open, reason=result.reason, next_open=result.next_open, policy=name), policy
