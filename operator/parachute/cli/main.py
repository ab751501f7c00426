"""`kubectl parachute`: list, get, status and the commands that steer a release.

kubectl finds the `kubectl-parachute` command on the PATH (it is installed with the package)
and passes it the arguments. The flags that choose the cluster mean what they mean to kubectl.
Every command that prints also prints JSON with `-o json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel
from rich.console import Console
from rich.live import Live

from parachute import clock
from parachute.api import parse_duration
from parachute.cli import actions, postmortem, progress, render, view
from parachute.cli.cluster import Cluster, NotFoundError, event_time
from parachute.cli.progress import Exit

# Output width when not on a terminal and COLUMNS is unset: a log or a pipe gets whole lines.
PIPE_WIDTH = 160


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def _json(value: Any, indent: int | None = 2) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_none=True, mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(by_alias=True, exclude_none=True, mode="json") if isinstance(v, BaseModel) else v
                 for v in value]  # fmt: skip
    return json.dumps(value, indent=indent)


def _seconds(text: str) -> float:
    """`90` (seconds) or a duration like `30m`, `1h30m`."""
    return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text).total_seconds()


class Context:
    """One invocation: its arguments, its cluster, its clock and where it writes."""

    def __init__(self, args: argparse.Namespace, connect: Callable[[argparse.Namespace], Cluster]) -> None:
        self.args = args
        self._connect = connect
        self._cluster: Cluster | None = None
        self.console = _console()
        self.json = args.output == "json"

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = self._connect(self.args)
        return self._cluster

    @property
    def namespace(self) -> str:
        return str(self.args.namespace or self.cluster.namespace)

    def now(self) -> datetime:
        return clock.now()

    def print_json(self, value: Any) -> None:
        sys.stdout.write(_json(value) + "\n")
        sys.stdout.flush()

    def view(self, body: dict[str, Any]) -> view.RolloutView:
        namespace = body["metadata"]["namespace"]
        target_name, canary_name = view.target_name(body), view.canary_deployment(body)
        target = self.cluster.deployment(namespace, target_name) if target_name else None
        canary = self.cluster.deployment(namespace, canary_name) if canary_name else None
        return view.build(body, target, canary)


# ---------------------------------------------------------------------------- commands


def cmd_list(ctx: Context) -> int:
    namespace = ctx.args.namespace if ctx.args.namespace and not ctx.args.all_namespaces else None
    rows = [view.row(body, ctx.now()) for body in ctx.cluster.rollouts(namespace)]
    if ctx.json:
        ctx.print_json(rows)
    elif not rows:
        ctx.console.print("No Rollouts found" + (f" in namespace {namespace}." if namespace else "."))
    else:
        ctx.console.print(render.rows_table(rows, all_namespaces=namespace is None))
    return 0


def cmd_get(ctx: Context) -> int:
    name = ctx.args.name
    if not ctx.args.watch:
        shown = ctx.view(ctx.cluster.rollout(ctx.namespace, name))
        if ctx.json:
            ctx.print_json(shown)
        else:
            ctx.console.print(render.rollout_tree(shown, ctx.now()))
        return 0
    updates = ctx.cluster.follow(ctx.namespace, name, refresh=ctx.args.interval)
    if ctx.json:  # one document per line per change, for tools that follow it
        for body in updates:
            sys.stdout.write(_json(ctx.view(body), indent=None) + "\n")
            sys.stdout.flush()
        return 0
    with Live(console=ctx.console, auto_refresh=False, transient=False) as live:
        for body in updates:
            live.update(render.rollout_tree(ctx.view(body), ctx.now()), refresh=True)
    return 0


def _expected_revision(ctx: Context, body: dict[str, Any]) -> str | None:
    namespace = body["metadata"]["namespace"]
    target_name = view.target_name(body)
    target = ctx.cluster.deployment(namespace, target_name) if target_name else None
    maps = {name: ctx.cluster.config_map(namespace, name) for name in view.config_ref_names(body)}
    return view.expected_revision(body, target, maps)


def cmd_status(ctx: Context) -> int:
    """Block until the release the target asks for is released (0), or fails, or time runs out."""
    name = ctx.args.name
    deadline = time.monotonic() + _seconds(ctx.args.timeout)
    first = ctx.cluster.rollout(ctx.namespace, name)
    revision = _expected_revision(ctx, first)
    last: tuple[Any, ...] | None = None
    result = progress.Outcome(False, Exit.timeout, "")
    for body in ctx.cluster.follow(ctx.namespace, name, refresh=ctx.args.interval):
        result = progress.outcome(body, revision)
        st = view.status_of(body)
        point = (st.phase, st.stage, st.canary_weight, st.last_verdict, result.reason)
        if point != last:
            last = point
            _progress_line(ctx, body, result, revision)
        if result.done or time.monotonic() >= deadline:
            break
    code = result.exit if result.done else Exit.timeout
    reason = result.reason if result.done else f"timed out after {ctx.args.timeout}: {result.reason}"
    if ctx.json:
        sys.stdout.write(json.dumps({"result": code.name, "exitCode": int(code), "revision": revision,
                                     "message": reason}) + "\n")  # fmt: skip
    else:
        words = {Exit.released: "released", Exit.rolled_back: "rolled back", Exit.aborted: "aborted",
                 Exit.invalid: "invalid", Exit.timeout: "timed out"}  # fmt: skip
        # One line whatever its length: pipelines read the outcome from the last line.
        ctx.console.print(f"{words.get(code, code.name)}: {reason}", soft_wrap=True)
    return int(code)


def _progress_line(
    ctx: Context, body: dict[str, Any], result: progress.Outcome, revision: str | None
) -> None:
    st = view.status_of(body)
    now = ctx.now()
    if ctx.json:
        sys.stdout.write(json.dumps({
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "revision": revision, "phase": str(st.phase or ""),
            "stage": st.stage or "", "weight": st.canary_weight, "verdict": str(st.last_verdict or ""),
            "message": result.reason,
        }) + "\n")  # fmt: skip
        sys.stdout.flush()
        return
    weight = "" if st.canary_weight is None else f"{st.canary_weight}%"
    ctx.console.print(
        f"{now.strftime('%H:%M:%SZ')}  {st.phase or '-':<12} {st.stage or '-':<5} {weight:>4}  "
        f"{st.last_verdict or '':<12} {result.reason}"
    )


def _act(ctx: Context, action: str, patch: dict[str, Any], said: str) -> int:
    body = ctx.cluster.patch_rollout(ctx.namespace, ctx.args.name, patch)
    if ctx.json:
        ctx.print_json({"namespace": body["metadata"]["namespace"], "name": body["metadata"]["name"],
                        "action": action, "patch": patch})  # fmt: skip
    else:
        ctx.console.print(f"rollout {body['metadata']['namespace']}/{body['metadata']['name']}: {said}")
    return 0


def cmd_annotate(ctx: Context) -> int:
    action = ctx.args.command
    patch = actions.annotate(action, ctx.now())
    ((key, value),) = patch["metadata"]["annotations"].items()
    return _act(ctx, action, patch, f"{action} requested ({key}={value})")


def cmd_pause(ctx: Context) -> int:
    paused = ctx.args.command == "pause"
    said = "paused (spec.paused=true)" if paused else "resumed (spec.paused=false)"
    return _act(ctx, ctx.args.command, actions.pause(paused), said)


def cmd_resolve(ctx: Context) -> int:
    body = ctx.cluster.rollout(ctx.namespace, ctx.args.name)
    patch = actions.resolve(body, ctx.args.revision)
    return _act(ctx, "resolve", patch, f"root cause of {ctx.args.revision} marked fixed")


def cmd_history(ctx: Context) -> int:
    body = ctx.cluster.rollout(ctx.namespace, ctx.args.name)
    events = ctx.cluster.events(body["metadata"]["namespace"], ctx.args.name)
    shown = view.history(body, events, [event_time(e) for e in events])
    if ctx.json:
        ctx.print_json(shown)
    else:
        ctx.console.print(render.history_view(shown, ctx.now()))
    return 0


def cmd_postmortem(ctx: Context) -> int:
    body = ctx.cluster.rollout(ctx.namespace, ctx.args.name)
    events = ctx.cluster.events(body["metadata"]["namespace"], ctx.args.name)
    text = postmortem.draft(body, events, ctx.args.incident, ctx.now())
    if ctx.json:
        incident = postmortem.pick(view.status_of(body), ctx.args.incident)
        ctx.print_json({"incident": incident.model_dump(by_alias=True, exclude_none=True, mode="json"),
                        "markdown": text})  # fmt: skip
    else:
        sys.stdout.write(text + "\n")
    return 0


# ---------------------------------------------------------------------------- arguments


def _cluster_flags(p: argparse.ArgumentParser, defaults: argparse.Namespace | None) -> None:
    """The flags that choose the cluster and the output, with their defaults on the top parser
    only, so that a subcommand's parser never overwrites a value given before the command."""

    def default(name: str) -> Any:
        return getattr(defaults, name) if defaults is not None else argparse.SUPPRESS

    p.add_argument(
        "--kubeconfig",
        default=default("kubeconfig"),
        help="path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)",
    )
    p.add_argument("--context", default=default("context"), help="the kubeconfig context to use")
    p.add_argument(
        "-n", "--namespace", default=default("namespace"), help="the namespace (default: the context's)"
    )
    p.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        default=default("all_namespaces"),
        help="list: every namespace (the default without -n)",
    )
    p.add_argument(
        "-o", "--output", choices=("text", "json"), default=default("output"), help="text (default) or json"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl parachute",
        description="Read and steer Parachute Rollouts. Commands act through the Rollout's spec and "
        "annotations, as the operator honours them; none writes status.",
    )
    _cluster_flags(top, argparse.Namespace(kubeconfig=None, context=None, namespace=None,
                                           all_namespaces=False, output="text"))  # fmt: skip
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[Context], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        # kubectl's flags are accepted before or after the command; given after it, they win.
        _cluster_flags(p, None)
        p.set_defaults(run=run)
        return p

    command("list", cmd_list, "Rollouts (all namespaces unless -n) and what each waits on a person for")
    get = command(
        "get", cmd_get, "one Rollout as a tree: stages, versions, routing, metrics, gates, window, incidents"
    )
    get.add_argument("name")
    get.add_argument("-w", "--watch", action="store_true", help="keep it on screen, refreshed as it changes")
    get.add_argument("--interval", type=float, default=2.0, help="refresh at least this often, seconds")
    status = command(
        "status", cmd_status,
        "wait for the release: exit 0 released, 3 rolled back, 4 aborted, 5 invalid, 6 timed out (1: error)",
    )  # fmt: skip
    status.add_argument("name")
    status.add_argument("--timeout", default="30m", help="give up after this long (30m, 1h, or seconds)")
    status.add_argument("--interval", type=float, default=5.0, help="look at least this often, seconds")
    for name, help_ in (
        ("promote", "end the current stage's wait now"),
        ("abort", "stop the release: all traffic back to stable"),
        ("retry", "start an aborted or rolled-back release again"),
    ):
        command(name, cmd_annotate, help_).add_argument("name")
    command(
        "pause", cmd_pause, "hold the release where it is (spec.paused); rollbacks still happen"
    ).add_argument("name")
    command("resume", cmd_pause, "let a paused release go on").add_argument("name")
    resolve = command(
        "resolve", cmd_resolve, "mark a blocked revision's root cause fixed, so it may be released"
    )
    resolve.add_argument("name")
    resolve.add_argument("revision", help="a blocked revision, or all")
    command("history", cmd_history, "releases (from Events) and incidents (from status)").add_argument("name")
    pm = command("postmortem", cmd_postmortem, "a Markdown postmortem draft from an incident's record")
    pm.add_argument("name")
    pm.add_argument("--incident", help="the incident's id or number (1 is the oldest); default: the latest")
    return top


def main(
    argv: Sequence[str] | None = None, connect: Callable[[argparse.Namespace], Cluster] | None = None
) -> int:
    args = parser().parse_args(argv)
    ctx = Context(args, connect or (lambda a: Cluster(a.kubeconfig, a.context)))
    try:
        return int(args.run(ctx))
    except (NotFoundError, actions.ActionError, postmortem.NoIncidentError) as problem:
        sys.stderr.write(f"error: {problem}\n")
    except ApiException as error:
        sys.stderr.write(f"error: the API server answered {error.status} {error.reason}\n")
    except KeyboardInterrupt:
        return 130
    return int(Exit.error)


if __name__ == "__main__":
    sys.exit(main())
