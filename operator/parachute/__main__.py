"""`parachute` / `python -m parachute`: run the operator against the current kubeconfig.

parachute [run] [--namespace NS ...] [--selector SEL] [--leader-election] [--no-fast-lane]
                [--reports-port PORT --reports-token-file FILE] [--app-proxy URL] [--verbose]
                                                   the operator (default)
parachute crds                                     print the CRDs it serves
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from parachute.handlers import Options
    from parachute.reports.server import Settings as ReportsSettings

# Loggers of the HTTP clients that would print what they send and receive at DEBUG:
# whole Secret bodies from the Kubernetes client, request lines from urllib3. They stay at
# WARNING whatever `--verbose` does to the root logger.
QUIET_LOGGERS = ("kubernetes", "urllib3", "requests")


def quiet_http_clients() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parachute", description="Parachute: safe, reversible releases.")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the operator (the default)")
    for p in (parser, run):
        p.add_argument("--namespace", "-n", action="append", default=[],
                       help="watch only these namespaces (exact names)")  # fmt: skip
        p.add_argument("--verbose", "-v", action="store_true")
        p.add_argument(
            "--liveness", default=None, help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz"
        )
        p.add_argument("--readiness", default=None,
                       help="serve a readiness probe, e.g. http://0.0.0.0:8081/readyz")  # fmt: skip
        p.add_argument("--default-policy", default=None, help="ReleasePolicy for Rollouts that name none")
        p.add_argument("--app-proxy", default=None,
                       help="reach pods through this HTTP proxy (an operator outside the cluster network), "
                       "e.g. http://proxy:3128; also PARACHUTE_APP_PROXY")  # fmt: skip
        p.add_argument(
            "--metrics-port", type=int, default=None,
            help="serve the operator's metrics on this port; also PARACHUTE_METRICS_PORT",
        )  # fmt: skip
        p.add_argument("--selector", "-l", default="",
                       help="serve only the Rollouts this label selector selects (sharding), e.g. shard=a")  # fmt: skip
        p.add_argument("--leader-election", action="store_true",
                       help="act only while holding a Lease: one active replica out of several")  # fmt: skip
        p.add_argument("--leader-election-id", default="parachute", help="the Lease's name (one per shard)")
        p.add_argument("--leader-election-namespace", default=None,
                       help="the Lease's namespace (default: the pod's, from POD_NAMESPACE)")  # fmt: skip
        p.add_argument("--lease-duration", type=float, default=15.0,
                       help="seconds a standby waits on an unrenewed Lease before taking it")  # fmt: skip
        p.add_argument("--renew-deadline", type=float, default=10.0,
                       help="seconds the leader keeps acting without a renewal (less than the duration)")  # fmt: skip
        p.add_argument("--retry-period", type=float, default=2.0, help="seconds between renewals or attempts")
        p.add_argument("--no-fast-lane", action="store_true",
                       help="judge only in analysis rounds: no watcher of critical conditions between "
                       "them; also PARACHUTE_FAST_LANE=off")  # fmt: skip
        p.add_argument("--fast-lane-cadence", type=float, default=None,
                       help="seconds between the fast lane's looks (at least 1; default: the scrape "
                       "interval Prometheus reports)")  # fmt: skip
        p.add_argument("--fast-lane-window", type=float, default=None,
                       help="seconds of requests the fast lane judges (default: 3 looks, at least 3s)")  # fmt: skip
        p.add_argument("--reports-port", type=int, default=None,
                       help="serve the user reports endpoint (POST /reports) on this port; off by default")  # fmt: skip
        p.add_argument("--reports-token-file", default=None,
                       help="the file holding the bearer token reports must carry (a mounted Secret's key)")  # fmt: skip
    sub.add_parser("crds", help="print the CustomResourceDefinitions")
    return parser


def _options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    """What the handlers are told (`parachute.handlers.Options`); a usage error for what cannot work."""
    from parachute import handlers, sharding
    from parachute.analysis import fastlane
    from parachute.leadership import Timing, lease_namespace

    if any(set(ns) & set("*?[]!,") for ns in args.namespace):
        parser.error("--namespace takes exact names, not patterns")
    try:
        selector = sharding.parse(args.selector)
        election = None
        if args.leader_election:
            timing = Timing(args.lease_duration, args.renew_deadline, args.retry_period)
            namespace = lease_namespace(args.leader_election_namespace)
            election = handlers.Election(namespace, args.leader_election_id, timing)
    except ValueError as error:
        parser.error(str(error))
    if args.fast_lane_cadence is not None and args.fast_lane_cadence < fastlane.FLOOR:
        parser.error(f"--fast-lane-cadence: at least {fastlane.FLOOR:g} second")
    if args.fast_lane_window is not None and args.fast_lane_window < fastlane.FLOOR:
        parser.error(f"--fast-lane-window: at least {fastlane.FLOOR:g} second")
    lane = fastlane.Settings.from_env(not args.no_fast_lane, args.fast_lane_cadence, args.fast_lane_window)
    return handlers.Options(tuple(args.namespace), selector, election, args.readiness, lane,
                            _reports(args, parser))  # fmt: skip


def _reports(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ReportsSettings | None:
    """The reports endpoint's settings; a usage error when it could accept no report."""
    from pathlib import Path

    from parachute.reports.server import Settings, TokenFile

    if args.reports_port is None:
        if args.reports_token_file is not None:
            parser.error("--reports-token-file needs --reports-port")
        return None
    if not 0 < args.reports_port < 65536:
        parser.error("--reports-port: a TCP port, 1 to 65535")
    if args.reports_token_file is None:
        parser.error("--reports-port needs --reports-token-file: reports are accepted only with its token")
    path = Path(args.reports_token_file)
    if TokenFile(path)() is None:
        parser.error(f"--reports-token-file: {path} is missing, unreadable or empty")
    return Settings(args.reports_port, path)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    if args.command == "crds":
        from parachute.crd import all_crds, dump

        sys.stdout.write(dump(all_crds()))
        return 0

    import os

    import kopf

    if args.default_policy:
        from parachute.policy import DEFAULT_POLICY_ENV

        os.environ[DEFAULT_POLICY_ENV] = args.default_policy

    if args.app_proxy:
        from parachute.recovery.verify import PROXY_ENV

        os.environ[PROXY_ENV] = args.app_proxy

    options = _options(args, parser)  # imports the handlers, which registers them

    metrics_port = args.metrics_port or int(os.environ.get("PARACHUTE_METRICS_PORT", "0") or 0)
    if metrics_port:
        from parachute.telemetry import serve

        serve(metrics_port)

    kopf.configure(verbose=args.verbose, log_prefix=True)
    quiet_http_clients()
    if not args.verbose:
        # kopf says "Handler ... succeeded" for every watch event of every Deployment: at 10,000
        # Rollouts nine lines of ten. Parachute logs what it decides and does; kopf's failures
        # are still logged.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings = kopf.OperatorSettings()
    # With exact namespace names kopf needs to observe neither namespaces nor CRDs, so the
    # namespaced install grants neither (`parachute.rbac`); CRDs are found at start-up.
    settings.scanning.disabled = bool(args.namespace)
    if options.reports is not None:
        from parachute.handlers import watch_user_reports

        watch_user_reports(settings)
    from parachute.leadership import identity

    asyncio.run(
        kopf.operator(
            # kopf names itself after the user otherwise, and a uid with no passwd entry (any
            # runAsUser the image does not know, as on OpenShift) ends the process at start-up.
            identity=cast(Any, identity()),  # kopf's Identity type is not exported
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            settings=settings,
            memo=kopf.Memo(options=options),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
