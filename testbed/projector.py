"""Flag and configuration stores projected into files, as a kubelet (for a mounted ConfigMap
volume) or a flagd sidecar (for an OpenFeature FeatureFlag) would.

The local control plane's nodes are fake (kwok), so nothing mounts or serves anything; these
stand in. Each key becomes a file, written atomically (a rename) and updated when the object
changes, so the demo app re-reads its flags or configuration without a restart.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException


class Projection:
    """Poll an object and keep one file per key in `directory`."""

    def __init__(self, directory: Path, period: float = 0.25) -> None:
        self.directory, self.period = directory, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"projector-{directory.name}", daemon=True)

    def files(self) -> dict[str, str] | None:
        """The object's content, key by key; None while it does not exist."""
        raise NotImplementedError

    def path(self, key: str) -> Path:
        return self.directory / key

    def start(self) -> Projection:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sync(self) -> None:
        for key, value in (self.files() or {}).items():
            target = self.path(key)
            if target.exists() and target.read_text() == value:
                continue
            temporary = target.with_name(f".{key}.tmp")
            temporary.write_text(value)
            os.replace(temporary, target)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.sync()
            except Exception:  # a blip of the API server: try again next period
                continue


class ConfigMapVolume(Projection):
    """A mounted ConfigMap: one file per key."""

    def __init__(self, core: client.CoreV1Api, namespace: str, name: str, directory: Path) -> None:
        super().__init__(directory)
        self.core, self.namespace, self.name = core, namespace, name

    def files(self) -> dict[str, str] | None:
        try:
            found = self.core.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(found.data or {})


class FeatureFlagFile(Projection):
    """An OpenFeature FeatureFlag's definitions as flagd reads them: `flags.json`."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str, name: str, directory: Path) -> None:
        super().__init__(directory)
        self.custom, self.namespace, self.name = custom, namespace, name

    def files(self) -> dict[str, str] | None:
        try:
            found = self.custom.get_namespaced_custom_object(
                "core.openfeature.dev", "v1beta1", self.namespace, "featureflags", self.name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return {"flags.json": json.dumps(found.get("spec", {}).get("flagSpec", {}))}
