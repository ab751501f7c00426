"""The plugin's window on the cluster: the user's kubeconfig, as kubectl reads it.

`--kubeconfig`, `--context` and `-n` mean what they mean to kubectl; the default namespace is
the context's. Objects travel as plain dicts, serialised by the client exactly as the operator
serialises them, so a revision computed here is the one the operator computes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from parachute import api


class NotFoundError(LookupError):
    """The Rollout does not exist."""


class Cluster:
    """Reads and the few writes the plugin makes, through one kubeconfig context."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
        self.namespace = "default"
        in_cluster = not kubeconfig and not os.environ.get("KUBECONFIG") and not Path(path).exists()
        if in_cluster and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            self.api = client.ApiClient()
            namespace_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            if namespace_file.exists():
                self.namespace = namespace_file.read_text().strip() or "default"
        else:
            self.api = config.new_client_from_config(config_file=path, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=path)
            chosen = next((c for c in contexts if c["name"] == context), active) if context else active
            self.namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        self.custom = client.CustomObjectsApi(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def _plain(self, obj: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self.api.sanitize_for_serialization(obj))

    # ------------------------------------------------------------------ Rollouts

    def rollout(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name),
            )
        except ApiException as error:
            if error.status == 404:
                raise NotFoundError(f"Rollout {namespace}/{name} not found") from error
            raise

    def rollouts(self, namespace: str | None) -> list[dict[str, Any]]:
        """Every Rollout in `namespace`, or in all namespaces when it is None."""
        if namespace is None:
            found = self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL)
        else:
            found = self.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)
        items = cast(list[dict[str, Any]], found.get("items") or [])
        return sorted(items, key=lambda r: (r["metadata"]["namespace"], r["metadata"]["name"]))

    def patch_rollout(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of the Rollout's spec or metadata (never its status)."""
        try:
            return cast(
                dict[str, Any],
                self.custom.patch_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name, patch
                ),
            )
        except ApiException as error:
            if error.status == 404:
                raise NotFoundError(f"Rollout {namespace}/{name} not found") from error
            raise

    def follow(self, namespace: str, name: str, refresh: float) -> Iterator[dict[str, Any]]:
        """The Rollout now, then again at every change, and at least every `refresh` seconds."""
        body = self.rollout(namespace, name)
        yield body
        version = body["metadata"]["resourceVersion"]
        while True:
            # A read bound as well as the server's: a connection that stops answering (a
            # dropped network, a proxy that holds it) ends in a fresh read, not a frozen view.
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object, api.GROUP, api.VERSION, namespace, api.PLURAL,
                field_selector=f"metadata.name={name}", resource_version=version,
                timeout_seconds=max(1, round(refresh)), _request_timeout=(10, max(1, round(refresh)) + 10),
            )  # fmt: skip
            changed = False
            try:
                for event in stream:
                    if event["type"] == "DELETED":
                        raise NotFoundError(f"Rollout {namespace}/{name} was deleted")
                    if event["type"] in ("ADDED", "MODIFIED"):
                        body = event["object"]
                        version = body["metadata"]["resourceVersion"]
                        changed = True
                        yield body
            except (ApiException, urllib3.exceptions.HTTPError) as error:
                if isinstance(error, ApiException) and error.status != 410:  # expired: read afresh below
                    raise
                body = self.rollout(namespace, name)  # or the watch's read ran out: the same
                version = body["metadata"]["resourceVersion"]
            if not changed:  # nothing happened: refresh what depends on the time
                yield body

    # ------------------------------------------------------------------ what a Rollout points at

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            # As the API server sent it, as the operator reads it: a field this client's models
            # do not know would otherwise be dropped, and the revision hashed differently.
            answer = self.apps.read_namespaced_deployment(name, namespace, _preload_content=False)
            return cast(dict[str, Any], json.loads(answer.data))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(self.core.read_namespaced_config_map(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Events about one Rollout that the API server still keeps, oldest first."""
        found = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={api.KIND}"
        )
        events = [self._plain(e) for e in found.items]
        return sorted(events, key=event_time)


def event_time(event: dict[str, Any]) -> str:
    """When an Event last happened, as RFC 3339 text (Events carry it in one of three fields)."""
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )
