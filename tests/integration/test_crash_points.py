"""The daemon killed (SIGKILL, no grace) at every step boundary of every state-changing
RPC, through the crash points of runtime/crashpoints.py; after each restart every
record must match the host (runc, conmon, mounts, network namespaces, IPAM, cgroups,
image store), the request's object must be whole or gone, and removing everything
must leave nothing behind (the node fixture checks that last part).

Each case sets up what its RPC needs with an unarmed daemon, restarts it with one
point armed, sends the RPC (which the crash cuts off), and starts it again unarmed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from api import api_pb2 as pb, api_pb2_grpc
from runtime.crashpoints import POINTS
from tests.node import BUSYBOX, Node, disagreements, running_node
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

pytestmark = pytest.mark.skipif(not registry_is_up(),
                                reason=f"needs the test registry on {TEST_REGISTRY} (hack/e2e-env.sh up)")

CGROUP_PARENT = "/crs-crash"
FRESH_IMAGE = f"{TEST_REGISTRY}/k8s-staging-cri-tools/test-image-1:latest"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="crs-crash-", dir="/tmp"))
    try:
        with running_node(base, "crs-crash0", "10.96.0.0/24") as n:
            yield n
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for parent in Path("/sys/fs/cgroup").glob(f"*{CGROUP_PARENT}"):
            with contextlib.suppress(FileNotFoundError):   # cpu and cpuacct are one hierarchy
                parent.rmdir()   # runc made it; each container's own cgroup went with the container


@dataclass
class Made:
    """What a case's set-up made: a pod, and maybe a container in it."""
    pod: str = ""
    config: pb.PodSandboxConfig | None = None
    container: str = ""


def pod_config(name: str) -> pb.PodSandboxConfig:
    # The CRI's default PID mode (POD) gives the pod an infra container: its steps count too.
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="crash", uid=f"uid-{name}"),
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=CGROUP_PARENT))


def sleeper() -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name="sleeper"), image=pb.ImageSpec(image=BUSYBOX),
                              command=["sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.2; done"],
                              linux=pb.LinuxContainerConfig())


def make_pod(rt: api_pb2_grpc.RuntimeServiceStub, name: str) -> Made:
    cfg = pod_config(name)
    return Made(rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id, cfg)


def make_container(rt: api_pb2_grpc.RuntimeServiceStub, name: str, *, start: bool = True,
                   stop: bool = False) -> Made:
    made = make_pod(rt, name)
    made.container = rt.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=made.pod, config=sleeper(), sandbox_config=made.config), timeout=60).container_id
    if start:
        rt.StartContainer(pb.StartContainerRequest(container_id=made.container), timeout=60)
    if stop:
        rt.StopContainer(pb.StopContainerRequest(container_id=made.container, timeout=10), timeout=60)
    return made


@dataclass
class Case:
    setup: Callable[[api_pb2_grpc.RuntimeServiceStub, str], Made]
    rpc: Callable[[Node, Made, str], object]


def _run_pod(node: Node, made: Made, name: str) -> object:
    return node.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config(name)), timeout=60)


def _stop_pod(node: Node, made: Made, name: str) -> object:
    return node.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=made.pod), timeout=60)


def _remove_pod(node: Node, made: Made, name: str) -> object:
    return node.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=made.pod), timeout=60)


def _create(node: Node, made: Made, name: str) -> object:
    return node.rt.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=made.pod, config=sleeper(), sandbox_config=made.config), timeout=60)


def _start(node: Node, made: Made, name: str) -> object:
    return node.rt.StartContainer(pb.StartContainerRequest(container_id=made.container), timeout=60)


def _stop(node: Node, made: Made, name: str) -> object:
    return node.rt.StopContainer(pb.StopContainerRequest(container_id=made.container, timeout=10), timeout=60)


def _remove(node: Node, made: Made, name: str) -> object:
    return node.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=made.container), timeout=60)


def _pull(node: Node, made: Made, name: str) -> object:
    return node.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=FRESH_IMAGE)), timeout=120)


def _nothing(rt: api_pb2_grpc.RuntimeServiceStub, name: str) -> Made:
    return Made()


CASES: dict[str, Case] = {
    "pod.run.": Case(_nothing, _run_pod),
    "pod.stop.": Case(make_container, _stop_pod),
    "pod.remove.": Case(make_container, _remove_pod),
    "container.create.": Case(lambda rt, name: make_pod(rt, name), _create),
    "container.start.": Case(lambda rt, name: make_container(rt, name, start=False), _start),
    "container.stop.": Case(make_container, _stop),
    "container.remove.": Case(lambda rt, name: make_container(rt, name, stop=True), _remove),
    "image.pull.": Case(_nothing, _pull),
}


def case_of(point: str) -> Case:
    return next(case for prefix, case in CASES.items() if point.startswith(prefix))


def test_every_point_has_a_case() -> None:
    assert [p for p in POINTS if not any(p.startswith(prefix) for prefix in CASES)] == []


def _pods_named(rt: api_pb2_grpc.RuntimeServiceStub, name: str) -> list[pb.PodSandbox]:
    return [s for s in rt.ListPodSandbox(pb.ListPodSandboxRequest()).items if s.metadata.name == name]


def _container(rt: api_pb2_grpc.RuntimeServiceStub, cid: str) -> pb.ContainerStatus | None:
    try:
        return rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        return None


def _image_listed(node: Node) -> bool:
    return any(FRESH_IMAGE in i.repo_tags for i in node.images.ListImages(pb.ListImagesRequest()).images)


def _wait_exited(rt: api_pb2_grpc.RuntimeServiceStub, cid: str) -> pb.ContainerStatus:
    deadline = time.monotonic() + 15
    while True:
        status = _container(rt, cid)
        assert status is not None
        if status.state == pb.ContainerState.CONTAINER_EXITED or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def check_outcome(node: Node, point: str, made: Made, name: str) -> None:
    """The object the cut-off request was about is whole, or gone, as that point allows."""
    rt = node.rt
    if point.startswith("pod.run."):
        pods = _pods_named(rt, name)
        if point == "pod.run.ready":   # recorded ready before the crash: a whole pod
            assert [p.state for p in pods] == [pb.PodSandboxState.SANDBOX_READY]
        else:
            assert pods == [], "a half-built pod survived the restart"
    elif point.startswith("pod.stop."):
        assert [p.state for p in _pods_named(rt, name)] == [pb.PodSandboxState.SANDBOX_NOTREADY]
        status = _container(rt, made.container)
        assert status is not None and status.state == pb.ContainerState.CONTAINER_EXITED
    elif point.startswith("pod.remove."):
        assert _pods_named(rt, name) == [] and _container(rt, made.container) is None
    elif point.startswith("container.create."):
        assert rt.ListContainers(pb.ListContainersRequest(
            filter=pb.ContainerFilter(pod_sandbox_id=made.pod))).containers == []
    elif point == "container.start.started":
        # runc started it before the crash: it is adopted as RUNNING and watched, and a
        # second start changes nothing.
        status = _container(rt, made.container)
        assert status is not None and status.state == pb.ContainerState.CONTAINER_RUNNING
        assert status.started_at > 0
        with pytest.raises(grpc.RpcError) as e:
            rt.StartContainer(pb.StartContainerRequest(container_id=made.container))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = json.loads(rt.ContainerStatus(pb.ContainerStatusRequest(
            container_id=made.container, verbose=True)).info["info"])
        os.kill(int(info["pid"]), signal.SIGKILL)
        status = _wait_exited(rt, made.container)
        assert (status.state, status.exit_code) == (pb.ContainerState.CONTAINER_EXITED, 137)
    elif point.startswith("container.stop."):
        status = _container(rt, made.container)
        assert status is not None
        assert (status.state, status.exit_code) == (pb.ContainerState.CONTAINER_EXITED, 3)
    elif point.startswith("container.remove."):
        assert _container(rt, made.container) is None
    elif point == "image.pull.layer":
        assert not _image_listed(node)
    elif point == "image.pull.committed":
        assert _image_listed(node)


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_each_step_loses_nothing(node: Node, point: str) -> None:
    name = point.replace(".", "-")
    case = case_of(point)
    made = case.setup(node.rt, name)
    node.daemon.stop()
    node.daemon.start(crash_at=point)
    with pytest.raises(grpc.RpcError) as cut:
        case.rpc(node, made, name)
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE, cut.value
    node.daemon.wait_crashed()
    node.daemon.start()

    assert disagreements(node, CGROUP_PARENT) == []
    check_outcome(node, point, made, name)
    # The request can be made again, or its object removed, and the host agrees.
    rt = node.rt
    for sb in rt.ListPodSandbox(pb.ListPodSandboxRequest()).items:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sb.id), timeout=60)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sb.id), timeout=60)
    if point.startswith("image.pull."):
        node.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=FRESH_IMAGE)), timeout=60)
    assert disagreements(node, CGROUP_PARENT) == []
