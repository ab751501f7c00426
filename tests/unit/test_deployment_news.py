"""Which Deployment events wake a Rollout: not the echo of the operator's own write, not an event
that changes nothing Parachute reads; an answer that shows someone else's change keeps its echo
news, and an echo that arrives before its write's answer is asked about again when the
reconcile ends. Versions decide what is newer, so an answer never hides a later event."""

from __future__ import annotations

from typing import Any

from parachute.kube import apply_merge_patch
from parachute.plan.desired_workload import as_news
from parachute.watched import News

PAUSE = {"metadata": {"annotations": {"parachute.dev/paused-by": "checkout"}}, "spec": {"paused": True}}


def deployment(rv: str, paused: bool = False, ready: int = 1, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "checkout", "resourceVersion": rv, "generation": 1,
                     "annotations": dict(annotations)},
        "spec": {"replicas": 1, "paused": paused, "template": {"spec": {"containers": [{"name": "app"}]}}},
        "status": {"readyReplicas": ready, "observedGeneration": 1},
    }  # fmt: skip


def paused(rv: str, ready: int = 1, **annotations: str) -> dict[str, Any]:
    return deployment(rv, paused=True, ready=ready, **{"parachute.dev/paused-by": "checkout", **annotations})


def news() -> News:
    """As the operator keeps it for Deployments."""
    return News(read=as_news)


def is_news(kept: News, body: dict[str, Any]) -> bool:
    """An event seen while no reconcile of its Rollout runs: woken at once, or not at all."""
    question = kept.event(body)
    return question is not None and question()


def test_the_first_event_of_a_deployment_is_news() -> None:
    assert is_news(news(), deployment("10"))


def test_an_event_that_changes_nothing_but_its_version_is_no_news() -> None:
    kept = news()
    kept.event(deployment("10"))
    assert not is_news(kept, deployment("11"))
    assert is_news(kept, deployment("12", ready=0))


def test_a_change_only_to_what_parachute_never_reads_of_a_deployment_is_no_news() -> None:
    kept = news()
    kept.event(deployment("10"))
    progressing = deployment("11", **{"deployment.kubernetes.io/revision": "2"})
    progressing["status"]["conditions"] = [{"type": "Progressing", "status": "True"}]
    assert not is_news(kept, progressing)
    assert is_news(kept, deployment("12", ready=0, **{"deployment.kubernetes.io/revision": "2"}))


def seen_by_the_controller(body: dict[str, Any], rv: str) -> dict[str, Any]:
    """The Deployment controller's status write after a spec write: it has seen the generation."""
    seen = {**body, "metadata": {**body["metadata"], "resourceVersion": rv}}
    seen["status"] = {**body["status"], "observedGeneration": body["metadata"]["generation"]}
    return seen


def written(body: dict[str, Any], rv: str) -> dict[str, Any]:
    """`body` as a spec write leaves it: a new generation the controller has not seen yet."""
    meta = {**body["metadata"], "resourceVersion": rv, "generation": body["metadata"]["generation"] + 1}
    return {**body, "metadata": meta}


def test_the_controllers_word_that_it_saw_the_operators_pause_wakes_nothing() -> None:
    # Every adoption pauses its target: a thousand Rollouts adopted were a thousand looks in vain.
    kept = news()
    read = deployment("10")
    kept.event(read)
    answer = written(paused("11"), "11")
    kept.wrote(answer, apply_merge_patch(written(read, "11"), PAUSE))
    assert not is_news(kept, answer)
    assert not is_news(kept, seen_by_the_controller(answer, "12"))
    fewer = seen_by_the_controller(answer, "13")
    fewer["status"]["readyReplicas"] = 0
    assert is_news(kept, fewer)  # the counts of its pods are


def test_someone_elses_spec_change_is_news_and_the_controllers_word_that_it_saw_it_is_not() -> None:
    kept = news()
    kept.event(deployment("10"))
    edited = written(deployment("11"), "11")
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "checkout:2"
    assert is_news(kept, edited)
    assert not is_news(kept, seen_by_the_controller(edited, "12"))


def test_a_new_field_in_the_pod_template_is_news_even_when_false_or_empty() -> None:
    kept = news()
    kept.event(deployment("10"))
    hardened = deployment("11")
    hardened["spec"]["template"]["spec"]["automountServiceAccountToken"] = False
    assert is_news(kept, hardened)
    context = deployment("12")
    context["spec"]["template"]["spec"]["securityContext"] = {}
    assert is_news(kept, context)


def test_the_echo_of_the_operators_own_pause_wakes_nothing() -> None:
    kept = news()
    read = deployment("10")
    kept.event(read)
    kept.wrote(paused("11"), apply_merge_patch(read, PAUSE))
    assert not is_news(kept, paused("11"))  # its event, after the answer
    assert is_news(kept, paused("12", ready=0))  # the controller's, after it


def test_the_echo_of_an_unpause_is_known_though_the_api_server_leaves_out_paused_false() -> None:
    kept = news()
    read = paused("10")
    kept.event(read)
    answer = deployment("11")
    del answer["spec"]["paused"]
    answer["metadata"]["annotations"] = {}
    patch = {"metadata": {"annotations": {"parachute.dev/paused-by": None}}, "spec": {"paused": False}}
    kept.wrote(answer, apply_merge_patch(read, patch))
    assert not is_news(kept, answer)


def test_the_canary_created_by_the_operator_wakes_nothing_when_it_appears() -> None:
    kept = news()
    created = deployment("20")
    kept.wrote(created, created)  # a create's answer has nothing of anyone else's in it
    assert not is_news(kept, created)  # the watch's ADDED


def test_an_echo_seen_before_its_writes_answer_is_no_news_once_the_reconcile_has_ended() -> None:
    kept = news()
    read = deployment("10")
    kept.event(read)
    echo = kept.event(paused("11"))  # the watch was quicker than the answer: the reconcile still runs
    assert echo is not None
    kept.wrote(paused("11"), apply_merge_patch(read, PAUSE))
    assert not echo()  # asked when the reconcile ends


def test_an_answer_that_comes_after_later_events_does_not_hide_the_next_one() -> None:
    kept = news()
    read = deployment("10", ready=3)
    kept.event(read)
    echo = kept.event(paused("11", ready=3))
    fewer = kept.event(paused("12", ready=2))  # the controller's, before the answer too
    kept.wrote(paused("11", ready=3), apply_merge_patch(read, PAUSE))
    assert echo is not None and not echo()
    assert fewer is not None and fewer()
    assert is_news(kept, paused("13", ready=3))  # like the echo, but later: the pods came back


def test_a_change_by_someone_else_inside_the_answer_keeps_the_echo_news() -> None:
    kept = news()
    read = deployment("10")
    kept.event(read)
    # Someone annotated it between the operator's read and its patch; the patch has no precondition.
    answer = paused("12", owner="payments")
    kept.wrote(answer, apply_merge_patch(read, PAUSE))
    assert is_news(kept, deployment("11", owner="payments"))  # theirs
    assert is_news(kept, answer)  # ours, with theirs in it


def test_a_change_while_the_reconcile_runs_stays_news_after_the_operators_own_write() -> None:
    kept = news()
    kept.event(deployment("10"))
    theirs = kept.event(deployment("11", owner="payments"))
    assert theirs is not None
    # The patch is made on the newest copy, which has their change: its echo is known, theirs is not.
    kept.wrote(paused("12", owner="payments"), apply_merge_patch(deployment("11", owner="payments"), PAUSE))
    assert theirs()
    assert not is_news(kept, paused("12", owner="payments"))


def test_content_like_the_operators_own_write_again_after_another_change_is_news() -> None:
    kept = news()
    read = deployment("10")
    kept.event(read)
    kept.wrote(paused("11"), apply_merge_patch(read, PAUSE))
    assert is_news(kept, deployment("12"))  # someone unpaused it
    assert is_news(kept, paused("13"))  # and paused it again


def test_a_deleted_deployment_is_forgotten() -> None:
    kept = news()
    kept.event(deployment("10"))
    kept.gone("shop", "checkout")
    assert is_news(kept, deployment("14"))  # created again, as it was


def test_a_merge_patch_sets_keys_and_removes_those_set_to_none() -> None:
    base = {"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"paused": False}}
    patched = apply_merge_patch(
        base, {"metadata": {"annotations": {"a": None, "c": "3"}}, "spec": {"paused": True}}
    )
    assert patched == {"metadata": {"annotations": {"b": "2", "c": "3"}}, "spec": {"paused": True}}
    assert base["metadata"]["annotations"] == {"a": "1", "b": "2"}  # the copy is untouched
