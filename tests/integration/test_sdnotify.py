"""The daemon as a systemd `Type=notify` service (deploy/systemd/criservice.service):
READY=1 once its socket serves, STOPPING=1 on shutdown, and none of its children
inherits NOTIFY_SOCKET (runc would take it as its own and `runc start` would wait for
the container to send READY=1)."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import api_pb2 as pb
from tests.node import BUSYBOX, running_node
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

pytestmark = pytest.mark.skipif(not registry_is_up(),
                                reason=f"needs the test registry on {TEST_REGISTRY} (hack/e2e-env.sh up)")


@pytest.fixture
def notify_socket(short_tmp: Path) -> Iterator[tuple[socket.socket, Path]]:
    """A datagram socket where systemd's would be."""
    path = short_tmp / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.settimeout(30)
        yield s, path


def messages(s: socket.socket) -> list[str]:
    return s.recv(4096).decode().split("\n")


def test_ready_once_serving_stopping_on_shutdown_and_children_never_see_the_socket(
        short_tmp: Path, notify_socket: tuple[socket.socket, Path]) -> None:
    s, path = notify_socket
    with running_node(short_tmp, "crs-notify0", "10.93.0.0/24", env={"NOTIFY_SOCKET": str(path)}) as n:
        ready = messages(s)
        assert n.daemon.proc is not None
        assert "READY=1" in ready and f"MAINPID={n.daemon.proc.pid}" in ready, ready
        rt = n.rt
        pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="notify", namespace="sdnotify", uid="uid-notify"))), timeout=60)
        cid = rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod.pod_sandbox_id, sandbox_config=pb.PodSandboxConfig(
                metadata=pb.PodSandboxMetadata(name="notify", namespace="sdnotify", uid="uid-notify")),
            config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="sleeper"),
                                      image=pb.ImageSpec(image=BUSYBOX), command=["sleep", "300"])),
            timeout=60).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)
        assert rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status.state == pb.CONTAINER_RUNNING
        conmons = subprocess.run(["pgrep", "-f", f"conmon .*{short_tmp}/"], capture_output=True,
                                 text=True).stdout.split()
        assert conmons
        for pid in conmons:
            assert b"NOTIFY_SOCKET=" not in Path(f"/proc/{pid}/environ").read_bytes(), pid

        assert n.daemon.stop(signal.SIGTERM) == 0
        assert "STOPPING=1" in messages(s)
        n.daemon.start()   # the node's teardown removes the pod through the daemon
        assert "READY=1" in messages(s)
        assert rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status.state == pb.CONTAINER_RUNNING
