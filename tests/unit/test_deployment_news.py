"""Which Deployment events wake a Rollout: not the echo of the operator's own write, not an event
that repeats what was seen; an answer that shows someone else's change keeps its echo news, and
an echo that arrives before its write's answer is asked about again when the reconcile ends."""

from __future__ import annotations

from typing import Any

from parachute.plan.desired_workload import as_read
from parachute.watched import News, apply_merge_patch


def deployment(
    rv: str, paused: bool = False, ready: int = 1, generation: int = 1, **annotations: str
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "checkout", "resourceVersion": rv,
                     "generation": generation, "annotations": dict(annotations)},
        "spec": {"replicas": 1, "paused": paused},
        "status": {"readyReplicas": ready, "observedGeneration": 1},
    }  # fmt: skip


def is_news(news: News, body: dict[str, Any]) -> bool:
    """An event seen while nothing of this process runs: woken at once, or not at all."""
    question = news.event(body)
    return question is not None and question()


def test_the_first_event_of_a_deployment_is_news() -> None:
    assert is_news(News(), deployment("10"))


def test_an_event_that_changes_nothing_but_its_version_is_no_news() -> None:
    news = News()
    news.event(deployment("10"))
    assert not is_news(news, deployment("11"))
    assert is_news(news, deployment("12", ready=0))


def test_the_echo_of_the_operators_own_pause_wakes_nothing() -> None:
    news = News()
    read = deployment("10")
    news.event(read)
    patch = {"metadata": {"annotations": {"parachute.io/paused-by": "checkout"}}, "spec": {"paused": True}}
    answer = deployment("11", paused=True, generation=2, **{"parachute.io/paused-by": "checkout"})
    news.wrote(answer, apply_merge_patch(read, patch))
    assert not is_news(news, answer)  # its event, after the answer
    assert is_news(news, deployment("12", paused=True, generation=2, ready=0,
                                    **{"parachute.io/paused-by": "checkout"}))  # the controller's  # fmt: skip


def test_an_echo_seen_before_its_writes_answer_is_no_news_once_the_reconcile_has_ended() -> None:
    news = News()
    read = deployment("10")
    news.event(read)
    answer = deployment("11", paused=True, generation=2)
    question = news.event(answer)  # the watch was quicker than the answer: the reconcile still runs
    assert question is not None
    news.wrote(answer, apply_merge_patch(read, {"spec": {"paused": True}}))
    assert not question()  # asked when the reconcile ends


def test_a_change_by_someone_else_inside_the_answer_keeps_the_echo_news() -> None:
    news = News()
    read = deployment("10")
    news.event(read)
    # Someone annotated it between the operator's read and its patch; the patch has no precondition.
    answer = deployment("12", paused=True, generation=2, owner="payments")
    news.wrote(answer, apply_merge_patch(read, {"spec": {"paused": True}}))
    assert is_news(news, deployment("11", owner="payments"))  # theirs
    assert is_news(news, answer)  # ours, with theirs in it


def test_a_change_while_the_reconcile_runs_stays_news_after_the_operators_own_write() -> None:
    news = News()
    read = deployment("10")
    news.event(read)
    theirs = news.event(deployment("11", generation=2, owner="payments"))
    assert theirs is not None
    # Their change arrives while the reconcile that read version 10 writes: the answer shows it.
    answer = deployment("12", paused=True, generation=3, owner="payments")
    news.wrote(answer, apply_merge_patch(read, {"spec": {"paused": True}}))
    assert theirs()


def test_content_like_the_operators_own_write_again_after_another_change_is_news() -> None:
    news = News()
    read = deployment("10")
    news.event(read)
    ours = deployment("11", paused=True, generation=2)
    news.wrote(ours, apply_merge_patch(read, {"spec": {"paused": True}}))
    assert is_news(news, deployment("12", paused=False, generation=3))  # someone unpaused it
    assert is_news(news, deployment("13", paused=True, generation=4))  # and paused it again


def test_a_deleted_deployment_is_forgotten() -> None:
    news = News()
    news.event(deployment("10"))
    news.gone("shop", "checkout")
    assert is_news(news, deployment("10"))  # created again, as it was


def test_a_merge_patch_sets_keys_and_removes_those_set_to_none() -> None:
    base = {"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"paused": False}}
    patched = apply_merge_patch(
        base, {"metadata": {"annotations": {"a": None, "c": "3"}}, "spec": {"paused": True}}
    )
    assert patched == {"metadata": {"annotations": {"b": "2", "c": "3"}}, "spec": {"paused": True}}
    assert base["metadata"]["annotations"] == {"a": "1", "b": "2"}  # the copy is untouched


def test_the_echo_of_an_unpause_is_known_though_the_api_server_leaves_out_paused_false() -> None:
    news = News()
    read = deployment("10", paused=True)
    news.event(read)
    answer = deployment("11", generation=2)
    del answer["spec"]["paused"]  # omitted when false
    news.wrote(answer, apply_merge_patch(read, {"spec": {"paused": False}}))
    assert not is_news(news, answer)


def test_a_change_only_to_what_parachute_never_reads_of_a_deployment_is_no_news() -> None:
    news = News(read=as_read)
    news.event(deployment("10"))
    progressing = deployment("11")
    progressing["status"]["conditions"] = [{"type": "Progressing", "status": "True"}]
    progressing["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    assert not is_news(news, progressing)
    progressing["status"]["readyReplicas"] = 0
    assert is_news(news, progressing)
