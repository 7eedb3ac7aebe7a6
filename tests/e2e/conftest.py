"""End-to-end tests drive the daemon of `hack/e2e-env.sh up` only through real clients."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

CRICTL = str(REPO / ".tools/bin/crictl")
CRITEST = str(REPO / ".tools/bin/critest")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("CONTAINER_RUNTIME_ENDPOINT"):
        return
    skip = pytest.mark.skip(reason="needs the e2e environment: run hack/test.sh, or "
                                   "`set -a; source <(hack/e2e-env.sh up); set +a` first")
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def endpoint() -> str:
    return os.environ["CONTAINER_RUNTIME_ENDPOINT"]


@pytest.fixture(scope="session")
def registry() -> str:
    return os.environ.get("CRISERVICE_REGISTRY", "127.0.0.1:5000")


def crictl(endpoint: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # crictl's own per-call deadline is 2 s: too short on a loaded 2-core machine.
    return subprocess.run([CRICTL, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
                           "--timeout", f"{int(timeout)}s", *args],
                          capture_output=True, text=True, timeout=timeout + 10)


BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
NGINX = "registry.k8s.io/e2e-test-images/nginx:1.14-2"
LABEL = "criservice-e2e"


class Crictl:
    """crictl with the endpoint bound; every call must succeed unless `check=False`."""

    def __init__(self, endpoint: str, workdir: Path, name: str) -> None:
        self.endpoint, self.workdir, self.name = endpoint, workdir, name

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        res = crictl(self.endpoint, *args, timeout=timeout)
        if check:
            assert res.returncode == 0, f"crictl {' '.join(args)}: {res.stderr}"
        return res.stdout.strip() if check else res.stdout + res.stderr

    def json_file(self, name: str, doc: dict) -> str:
        path = self.workdir / name
        path.write_text(json.dumps(doc))
        return str(path)

    def pod_config(self, **extra: object) -> str:
        return self.json_file(f"pod-{self.name}.json", {
            "metadata": {"name": self.name, "namespace": "e2e", "uid": f"uid-{self.name}", "attempt": 0},
            "labels": {LABEL: self.name}, "log_directory": str(self.workdir / "logs"),
            "linux": {}, **extra})

    def container_config(self, name: str, image: str, **extra: object) -> str:
        return self.json_file(f"ctr-{name}.json", {
            "metadata": {"name": name}, "image": {"image": image}, "log_path": f"{name}.log",
            "labels": {LABEL: self.name}, "linux": {}, **extra})

    def inspect(self, kind: str, ident: str) -> dict:
        return json.loads(self(kind, ident))


@pytest.fixture
def cri(endpoint: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Crictl]:
    # Pods are named after the test: made a valid hostname, parameters included.
    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.removeprefix("test_").replace("_", "-"))[:40].strip("-")
    c = Crictl(endpoint, tmp_path, name)
    for image in (BUSYBOX, NGINX):
        c("pull", image)
    yield c
    for pod in c("pods", "-q", "--label", f"{LABEL}={name}").split():
        c("rmp", "-f", pod, check=False)
    assert not c("pods", "-q", "--label", f"{LABEL}={name}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str, deadline: float = 20) -> int:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return int(r.status)
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
