"""The Kubernetes reads and writes Parachute makes: one place to look.

The synchronous `kubernetes` client is called from worker threads (`asyncio.to_thread`)
so that a slow API server never blocks kopf's event loop.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


@functools.cache
def api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the current kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def _read_deployment(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj = client.AppsV1Api(api_client()).read_namespaced_deployment(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    result: dict[str, Any] = api_client().sanitize_for_serialization(obj)
    return result


async def read_deployment(namespace: str, name: str) -> dict[str, Any] | None:
    """The Deployment as a plain dict, or None when it does not exist."""
    return await asyncio.to_thread(_read_deployment, namespace, name)


ROLLOUT_API = ("parachute.dev", "v1alpha1")


def _read_rollout(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body = client.CustomObjectsApi(api_client()).get_namespaced_custom_object(
            *ROLLOUT_API, namespace, "rollouts", name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], body)


async def read_rollout(namespace: str, name: str) -> dict[str, Any] | None:
    return await asyncio.to_thread(_read_rollout, namespace, name)


async def patch_rollout_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    """Merge-patch the status subresource (lists such as conditions are replaced whole)."""
    api = client.CustomObjectsApi(api_client())
    await asyncio.to_thread(
        api.patch_namespaced_custom_object_status,
        *ROLLOUT_API,
        namespace,
        "rollouts",
        name,
        {"status": status},
    )
