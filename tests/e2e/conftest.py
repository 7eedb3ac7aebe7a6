"""End-to-end tests drive the daemon of `hack/e2e-env.sh up` only through real clients."""

from __future__ import annotations

import os
import subprocess

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
    return subprocess.run([CRICTL, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint, *args],
                          capture_output=True, text=True, timeout=timeout)
