"""The kubelet's log rotation against a chatty container: rename the file, call
ReopenContainerLog, repeat; every line lands exactly once, in order, across the
files (needs root and the local test registry)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import api_pb2 as pb
from tests.node import BUSYBOX, Node, running_node
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

pytestmark = pytest.mark.skipif(not registry_is_up(),
                                reason=f"needs the test registry on {TEST_REGISTRY} (hack/e2e-env.sh up)")

LINES = 20000


@pytest.fixture
def node(short_tmp: Path) -> Iterator[Node]:
    with running_node(short_tmp, "crs-logs0", "10.96.0.0/24") as n:
        yield n


def test_rotation_under_steady_output_loses_no_line(node: Node, short_tmp: Path) -> None:
    rt = node.rt
    logs = short_tmp / "logs"
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="chatty", namespace="it", uid="uid-chatty"),
                              log_directory=str(logs), linux=pb.LinuxPodSandboxConfig())
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    ctr = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, sandbox_config=cfg, config=pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="chatty"), image=pb.ImageSpec(image=BUSYBOX), log_path="chatty.log",
        # About 2 s of output in bursts, so that the rotations below fall in the middle of it.
        command=["sh", "-c", f"i=0; while [ $i -lt {LINES} ]; do echo line-$i; i=$((i+1)); "
                             "[ $((i % 500)) -eq 0 ] && sleep 0.05; done; sleep 3600"],
        linux=pb.LinuxContainerConfig())), timeout=60).container_id
    rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)
    log = logs / "chatty.log"
    rotated = []
    for n in range(5):  # the kubelet's way: rename, then ask the runtime to reopen
        time.sleep(0.3)
        target = logs / f"chatty.log.{n}"
        os.rename(log, target)
        rotated.append(target)
        rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=ctr), timeout=30)
        assert log.exists()
    deadline = time.monotonic() + 60
    while (seen := _lines([*rotated, log]))[-1:] != [f"line-{LINES - 1}"]:
        assert time.monotonic() < deadline, f"the container did not finish writing: {seen[-3:]}"
        time.sleep(0.2)
    assert seen == [f"line-{i}" for i in range(LINES)]
    assert sum(1 for f in rotated if f.stat().st_size) >= 3, "the rotations missed the output"


def _lines(files: list[Path]) -> list[str]:
    return [ln.split(" ", 3)[3] for f in files for ln in f.read_text().splitlines()]
