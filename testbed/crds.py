"""The published CRDs of the traffic routers Parachute drives, installed into a test cluster.

Gateway API (`sigs.k8s.io/gateway-api`, standard channel) and Istio (`istio.io/api`) CRDs are
obtained by `testbed/install-crds.sh` from their Go modules and cached by the versions in
`testbed/versions.env`; nothing is copied into the repository. Tests install the ones they
need with server-side apply (the HTTPRoute CRD is too large for a client-side apply's
annotation) and wait until the API server serves them, and can remove one to see how
Parachute reports a router whose CRD is missing.
"""

from __future__ import annotations

import functools
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testbed.cluster import REPO, _versions, wait_for

FIELD_MANAGER = "parachute-testbed"

# CRD name -> where it is published: (bundle directory prefix, file inside the bundle)
_GATEWAY = "gateway-api-v{GATEWAY_API_VERSION}"
_ISTIO = "istio-api-v{ISTIO_API_VERSION}"
SOURCES: dict[str, tuple[str, str]] = {
    "gatewayclasses.gateway.networking.k8s.io": (_GATEWAY, "gateway.networking.k8s.io_gatewayclasses.yaml"),
    "gateways.gateway.networking.k8s.io": (_GATEWAY, "gateway.networking.k8s.io_gateways.yaml"),
    "httproutes.gateway.networking.k8s.io": (_GATEWAY, "gateway.networking.k8s.io_httproutes.yaml"),
    "referencegrants.gateway.networking.k8s.io": (_GATEWAY, "gateway.networking.k8s.io_referencegrants.yaml"),
    "virtualservices.networking.istio.io": (_ISTIO, "customresourcedefinitions.gen.yaml"),
    "destinationrules.networking.istio.io": (_ISTIO, "customresourcedefinitions.gen.yaml"),
}
GATEWAY_API = tuple(name for name in SOURCES if name.endswith(".gateway.networking.k8s.io"))
ISTIO = ("virtualservices.networking.istio.io", "destinationrules.networking.istio.io")


@functools.cache
def cache_dir() -> Path:
    """Run the installer (a no-op when cached) and return the directory of versioned bundles."""
    result = subprocess.run(
        ["bash", str(REPO / "testbed" / "install-crds.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(result.stdout.strip().splitlines()[-1])


def document(name: str) -> dict[str, Any]:
    """The published CRD called `name` (e.g. "httproutes.gateway.networking.k8s.io")."""
    bundle, file = SOURCES[name]
    path = cache_dir() / bundle.format(**_versions()) / file
    for found in yaml.safe_load_all(path.read_text()):
        if found and found.get("kind") == "CustomResourceDefinition" and found["metadata"]["name"] == name:
            return dict(found)
    raise LookupError(f"{path} holds no CRD {name}")


def install(api_client: client.ApiClient, *names: str, timeout: float = 60) -> None:
    """Server-side apply each CRD and wait until it is Established."""
    extensions = client.ApiextensionsV1Api(api_client)
    for name in names:
        api_client.call_api(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", "PATCH",
            query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            body=document(name), auth_settings=["BearerToken"], _preload_content=False,
        )  # fmt: skip
    for name in names:
        wait_for(f"CRD {name} Established", functools.partial(_established, extensions, name), timeout)


def uninstall(api_client: client.ApiClient, name: str, timeout: float = 60) -> None:
    """Delete the CRD (and with it every object of its kind) and wait until it is gone."""
    extensions = client.ApiextensionsV1Api(api_client)
    try:
        extensions.delete_custom_resource_definition(name)
    except ApiException as error:
        if error.status != 404:
            raise
    wait_for(f"CRD {name} deleted", functools.partial(_gone, extensions, name), timeout)
    # Discovery lags the deletion by a moment: wait until the kind is no longer served.
    group, plural = name.split(".", 1)[1], name.split(".", 1)[0]
    versions = [v["name"] for v in document(name)["spec"]["versions"]]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _served(api_client, group, versions, plural):
        time.sleep(0.2)


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    status = extensions.read_custom_resource_definition(name).status
    return any(c.type == "Established" and c.status == "True" for c in (status and status.conditions) or [])


def _gone(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    try:
        extensions.read_custom_resource_definition(name)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _served(api_client: client.ApiClient, group: str, versions: list[str], plural: str) -> bool:
    for version in versions:
        try:
            response = api_client.call_api(
                f"/apis/{group}/{version}", "GET", header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False,
            )  # fmt: skip
        except ApiException as error:
            if error.status == 404:
                continue
            raise
        if any(r.get("name") == plural for r in yaml.safe_load(response.data).get("resources", [])):
            return True
    return False
