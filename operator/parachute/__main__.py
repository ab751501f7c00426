"""`parachute` / `python -m parachute`: run the operator against the current kubeconfig.

parachute [run] [--namespace NS ...] [--verbose]   the operator (default)
parachute crds                                     print the CRDs it serves
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

# Loggers of the HTTP clients that would print what they send and receive at DEBUG:
# whole Secret bodies from the Kubernetes client, request lines from urllib3. They stay at
# WARNING whatever `--verbose` does to the root logger.
QUIET_LOGGERS = ("kubernetes", "urllib3", "requests")


def quiet_http_clients() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
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
        p.add_argument("--default-policy", default=None, help="ReleasePolicy for Rollouts that name none")
        p.add_argument(
            "--metrics-port", type=int, default=None,
            help="serve the operator's metrics (recovery times) on this port; also PARACHUTE_METRICS_PORT",
        )  # fmt: skip
    sub.add_parser("crds", help="print the CustomResourceDefinitions")
    args = parser.parse_args(argv)

    if args.command == "crds":
        from parachute.crd import all_crds, dump

        sys.stdout.write(dump(all_crds()))
        return 0

    if any(set(ns) & set("*?[]!,") for ns in args.namespace):
        parser.error("--namespace takes exact names, not patterns")

    import os

    import kopf

    if args.default_policy:
        from parachute.policy import DEFAULT_POLICY_ENV

        os.environ[DEFAULT_POLICY_ENV] = args.default_policy

    import parachute.handlers  # noqa: F401  (registers the handlers)

    metrics_port = args.metrics_port or int(os.environ.get("PARACHUTE_METRICS_PORT", "0") or 0)
    if metrics_port:
        from parachute.telemetry import serve

        serve(metrics_port)

    kopf.configure(verbose=args.verbose, log_prefix=True)
    quiet_http_clients()
    settings = kopf.OperatorSettings()
    # With exact namespace names kopf needs to observe neither namespaces nor CRDs, so the
    # namespaced install grants neither (`parachute.rbac`); CRDs are found at start-up.
    settings.scanning.disabled = bool(args.namespace)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            settings=settings,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
