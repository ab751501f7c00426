"""Kill points: PARACHUTE_KILL_AT names a point, optionally a namespace and which reach of it;
the process dies there and nowhere else, and without the variable a point does nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from parachute import faults
from parachute.faults import Killer, Target, parse


class DiedError(Exception):
    pass


def die() -> None:
    raise DiedError


def test_a_kill_point_is_a_name_with_an_optional_namespace_and_reach() -> None:
    assert parse("status-written") == Target("status-written")
    assert parse("status-written@shop") == Target("status-written", "shop")
    assert parse("status-written#3") == Target("status-written", None, 3)
    assert parse("status-written@shop#2") == Target("status-written", "shop", 2)


@pytest.mark.parametrize("text", ["", "@shop", "#2", "point#0", "point#two", "point@shop#-1"])
def test_a_kill_point_that_names_nothing_or_no_reach_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="PARACHUTE_KILL_AT"):
        parse(text)


def test_the_process_dies_at_the_named_point_the_first_time_it_is_reached() -> None:
    killer = Killer(Target("flags-set"), die)
    killer.point("status-written", "shop")
    with pytest.raises(DiedError):
        killer.point("flags-set", "shop")


def test_only_the_named_namespace_counts() -> None:
    killer = Killer(Target("flags-set", "shop"), die)
    killer.point("flags-set", "billing")
    killer.point("flags-set", "billing")
    with pytest.raises(DiedError):
        killer.point("flags-set", "shop")


def test_the_nth_reach_is_the_one_that_kills() -> None:
    killer = Killer(Target("status-written", "shop", 3), die)
    killer.point("status-written", "shop")
    killer.point("status-written", "billing")
    killer.point("status-written", "shop")
    assert killer.reached == 2
    with pytest.raises(DiedError):
        killer.point("status-written", "shop")


def test_a_point_with_a_detail_is_named_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    killer = Killer(Target("status-written:RollingBack", "shop"), die)
    monkeypatch.setattr(faults, "_KILLER", killer)
    faults.point("status-written", "shop", "Progressing")
    with pytest.raises(DiedError):
        faults.point("status-written", "shop", "RollingBack")


def test_without_the_variable_a_point_does_nothing() -> None:
    assert os.environ.get(faults.KILL_AT_ENV) is None
    faults.point("status-written", "shop")  # still here


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = (
        "from parachute import faults\n"
        "faults.point('status-written', 'shop')\n"
        "faults.point('status-written', 'shop')\n"
        "print('alive')\n"
    )
    return subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip


def test_a_real_process_is_killed_at_its_point_with_a_line_saying_where() -> None:
    done = run({faults.KILL_AT_ENV: "status-written@shop#2"})
    assert done.returncode == -signal.SIGKILL
    assert "alive" not in done.stdout
    assert "killed at status-written in shop (reach 2)" in done.stderr


def test_a_real_process_lives_when_the_point_is_not_reached_often_enough() -> None:
    done = run({faults.KILL_AT_ENV: "status-written@shop#3"})
    assert done.returncode == 0 and "alive" in done.stdout
