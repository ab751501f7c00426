"""The leader's listings confirm the copies of each kind: in each namespace it serves (or once
for all), only for a kind with something kept, and a listing that fails confirms nothing and
stops nothing."""

from __future__ import annotations

import asyncio

from parachute import confirmation
from parachute.kube import Versions
from parachute.watched import Copies


def deployment(namespace: str, name: str, rv: str) -> dict[str, object]:
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": rv}}


class Lister:
    def __init__(self, answers: dict[str | None, Versions | Exception]) -> None:
        self.answers = answers
        self.asked: list[str | None] = []

    async def __call__(self, namespace: str | None) -> Versions | None:
        self.asked.append(namespace)
        answer = self.answers[namespace]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_each_served_namespace_is_listed_and_its_copies_judged_by_its_listing() -> None:
    copies = Copies()
    copies.seen(deployment("shop", "checkout", "10"))
    copies.seen(deployment("bank", "ledger", "11"))
    lister = Lister({"shop": Versions({("shop", "checkout"): 10}, 40), "bank": Versions({}, 40)})
    asyncio.run(confirmation.confirm(["shop", "bank"], [("Deployments", copies, lister)]))
    assert lister.asked == ["shop", "bank"]
    assert copies.get("shop", "checkout") is not None
    assert copies.get("bank", "ledger") is None  # deleted while the watch was away


def test_all_namespaces_are_one_listing() -> None:
    copies = Copies()
    copies.seen(deployment("shop", "checkout", "10"))
    lister = Lister({None: Versions({("shop", "checkout"): 10}, 40)})
    asyncio.run(confirmation.confirm([], [("Deployments", copies, lister)]))
    assert lister.asked == [None]


def test_a_kind_with_nothing_kept_is_not_listed() -> None:
    lister = Lister({})
    asyncio.run(confirmation.confirm([], [("Rollouts", Copies(), lister)]))
    assert lister.asked == []


def test_a_listing_that_fails_confirms_nothing_and_the_next_namespace_is_still_listed() -> None:
    copies = Copies()
    copies.seen(deployment("shop", "checkout", "10"))
    copies.seen(deployment("bank", "ledger", "11"))
    lister = Lister({"shop": TimeoutError("the API server did not answer"), "bank": Versions({}, 40)})
    asyncio.run(confirmation.confirm(["shop", "bank"], [("Deployments", copies, lister)]))
    assert copies.get("shop", "checkout") is not None  # kept as it was: read when its time is up
    assert copies.get("bank", "ledger") is None


def test_a_pass_that_fails_is_logged_and_the_next_one_still_runs() -> None:
    passes: list[int] = []

    def leading() -> bool:
        passes.append(1)
        if len(passes) == 1:
            raise RuntimeError("the elector's state could not be read")
        return False  # a standby: nothing listed

    async def story() -> None:
        task = asyncio.create_task(confirmation.keep_confirming([], leading, every=0.01))
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(story())
    assert len(passes) >= 2
