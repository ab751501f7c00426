"""The Kubernetes calls the workload, recovery, gating and policy adapters make, as a seam.

The adapters take a `KubeApi` as a parameter instead of calling `parachute.kube` directly, so a
unit test hands them the in-memory `parachute.kube_fake.FakeKube` (and injects faults through
it), and the operator hands them `KubeClient`, made once at start-up. `KubeClient` only
delegates: the calls are `kube`'s functions, which declare what they ask of the API server
(`@calls`, from which the RBAC rules are derived). Its Deployment reads are served from the
copies the watch keeps (`parachute.watched`) when it has one.

Not yet through the seam: the Rollout's own reads and status writes and its Events (the
reconcile), the ReplicaSet listings of analysis, the hand-back of a target, and the routers
(which have a seam of their own, `parachute.routing.objects.Client`).

Objects travel as plain dicts. A guarded write (a replace) raises `kube.ConflictError` when the
object changed since it was read; `read_object` raises `kube.NotPermittedError` for a kind the
operator may not read and `LookupError` for a kind the API server does not serve.
"""

from __future__ import annotations

from typing import Any, Protocol

from parachute import kube

Body = dict[str, Any]


class KubeApi(Protocol):
    """What the workload, recovery, gating and policy adapters need of the API server."""

    async def read_deployment(self, namespace: str, name: str) -> Body | None: ...

    async def create_deployment(self, namespace: str, body: Body) -> None: ...

    async def patch_deployment(self, namespace: str, name: str, patch: Body) -> None: ...

    async def replace_deployment(self, namespace: str, name: str, body: Body) -> None: ...

    async def replica_sets_of(self, target: Body) -> list[Body]: ...

    async def list_pods(self, namespace: str, selector: str) -> list[Body]: ...

    async def read_config_map(self, namespace: str, name: str) -> Body | None: ...

    async def create_config_map(self, namespace: str, body: Body) -> bool: ...

    async def patch_config_map(self, namespace: str, name: str, patch: Body) -> None: ...

    async def replace_config_map(self, namespace: str, name: str, body: Body) -> None: ...

    async def read_feature_flag(self, namespace: str, name: str) -> Body | None: ...

    async def replace_feature_flag(self, namespace: str, name: str, body: Body) -> None: ...

    async def read_release_policy(self, name: str) -> Body | None: ...

    async def read_object(self, api_version: str, kind: str, namespace: str, name: str) -> Body | None: ...


class KubeClient:
    """`KubeApi` on the API server: `kube`'s functions (looked up at each call, as before)."""

    async def read_deployment(self, namespace: str, name: str) -> Body | None:
        return await kube.latest_deployment(namespace, name)

    async def create_deployment(self, namespace: str, body: Body) -> None:
        await kube.create_deployment(namespace, body)

    async def patch_deployment(self, namespace: str, name: str, patch: Body) -> None:
        await kube.patch_deployment(namespace, name, patch)

    async def replace_deployment(self, namespace: str, name: str, body: Body) -> None:
        await kube.replace_deployment(namespace, name, body)

    async def replica_sets_of(self, target: Body) -> list[Body]:
        return await kube.replica_sets_of(target)

    async def list_pods(self, namespace: str, selector: str) -> list[Body]:
        return await kube.list_pods(namespace, selector)

    async def read_config_map(self, namespace: str, name: str) -> Body | None:
        return await kube.read_config_map(namespace, name)

    async def create_config_map(self, namespace: str, body: Body) -> bool:
        return await kube.create_config_map(namespace, body)

    async def patch_config_map(self, namespace: str, name: str, patch: Body) -> None:
        await kube.patch_config_map(namespace, name, patch)

    async def replace_config_map(self, namespace: str, name: str, body: Body) -> None:
        await kube.replace_config_map(namespace, name, body)

    async def read_feature_flag(self, namespace: str, name: str) -> Body | None:
        return await kube.read_feature_flag(namespace, name)

    async def replace_feature_flag(self, namespace: str, name: str, body: Body) -> None:
        await kube.replace_feature_flag(namespace, name, body)

    async def read_release_policy(self, name: str) -> Body | None:
        return await kube.read_release_policy(name)

    async def read_object(self, api_version: str, kind: str, namespace: str, name: str) -> Body | None:
        return await kube.read_object(api_version, kind, namespace, name)
