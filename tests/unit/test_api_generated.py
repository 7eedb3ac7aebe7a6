"""The committed api/ must be exactly what hack/update-api generates."""

import os
import shutil
import subprocess

import pytest

from api import api_pb2
from tests.conftest import REPO

GO_PATH = "/usr/local/go/bin:" + os.environ.get("PATH", "")


@pytest.mark.skipif(shutil.which("go", path=GO_PATH) is None,
                    reason="needs go to fetch k8s.io/cri-api from the module proxy")
def test_api_matches_a_fresh_regeneration() -> None:
    res = subprocess.run([str(REPO / "hack/update-api"), "--check"], capture_output=True, text=True,
                         env={**os.environ, "PATH": GO_PATH}, timeout=300)
    assert res.returncode == 0, res.stderr


def test_pinned_version_is_recorded() -> None:
    assert (REPO / "api/VERSION").read_text().split()[:2] == ["k8s.io/cri-api", "v0.37.2"]
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
