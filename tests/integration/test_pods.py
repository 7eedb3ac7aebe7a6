"""Pods and containers through a real daemon process: lifecycle, bad input, restarts
and a SIGKILL in the middle of parallel pod starts, with everything the host could
leak counted before and after (needs root and the local test registry).

Images come from the registry of `hack/e2e-env.sh up` (127.0.0.1:5000) through a
mirror; the pods join a bridge of this test's own (crs-pods0, 10.98.0.0/24, no
default route), whose IPAM data lives in the test directory.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from api import api_pb2 as pb, api_pb2_grpc
from runtime import cgroups
from tests.node import BUSYBOX, Node, host_view, running_node
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

pytestmark = pytest.mark.skipif(not registry_is_up(),
                                reason=f"needs the test registry on {TEST_REGISTRY} (hack/e2e-env.sh up)")


@pytest.fixture
def node(short_tmp: Path) -> Iterator[Node]:
    with running_node(short_tmp, "crs-pods0", "10.98.0.0/24") as n:
        yield n


def cgroup_dirs(cgroups_path: str) -> list[str]:
    """The directories of a cgroupfs-driver cgroups path that exist, over every hierarchy."""
    root = Path("/sys/fs/cgroup")
    found = []
    candidates = [root / cgroups_path.lstrip("/")] + [d / cgroups_path.lstrip("/") for d in root.iterdir()]
    for c in candidates:
        if c.is_dir():
            found.append(str(c))
    return found


def daemon_fds(node: Node) -> list[str]:
    fd_dir = f"/proc/{node.daemon.proc.pid}/fd"  # type: ignore[union-attr]
    return sorted(os.readlink(f"{fd_dir}/{fd}").split("[")[0] for fd in os.listdir(fd_dir))


def pod_config(name: str, **kw: object) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, namespace="it", uid=f"uid-{name}"),
                               linux=pb.LinuxPodSandboxConfig(), **kw)


def sleeper(name: str = "sleeper") -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=BUSYBOX),
                              command=["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
                              linux=pb.LinuxContainerConfig())


def run_pod(rt: api_pb2_grpc.RuntimeServiceStub, name: str) -> tuple[str, str]:
    cfg = pod_config(name)
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    ctr = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=sleeper(),
                                                       sandbox_config=cfg), timeout=60).container_id
    rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)
    return pod, ctr


def container_pid(rt: api_pb2_grpc.RuntimeServiceStub, ctr: str) -> int:
    info = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True)).info["info"]
    return int(json.loads(info)["pid"])


def code_of(call: object, *args: object, **kw: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kw)  # type: ignore[operator]
    return e.value.code()  # type: ignore[no-any-return]


def test_lifecycle_through_the_daemon(node: Node) -> None:
    rt = node.rt
    pod, ctr = run_pod(rt, "life")
    status = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True))
    assert status.status.state == pb.PodSandboxState.SANDBOX_READY
    assert status.status.network.ip.startswith("10.98.0.")
    phases = json.loads(status.info["info"])["phasesMs"]
    assert {"namespaces", "network"} <= set(phases)
    cs = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True))
    assert cs.status.state == pb.ContainerState.CONTAINER_RUNNING
    cgroups_path = json.loads(cs.info["info"])["cgroupsPath"]
    assert cgroup_dirs(cgroups_path), cgroups_path
    r = rt.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["sh", "-c", "echo out; echo err >&2; exit 4"],
                                       timeout=10))
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 4)
    assert code_of(rt.ExecSync, pb.ExecSyncRequest(container_id=ctr, cmd=["sleep", "30"], timeout=1)) \
        == grpc.StatusCode.DEADLINE_EXCEEDED
    assert b"sleep 30" not in rt.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["ps"])).stdout

    rt.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=10))
    cs = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
    assert (cs.state, cs.exit_code, cs.reason) == (pb.ContainerState.CONTAINER_EXITED, 0, "Completed")
    rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
    rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))  # idempotent
    assert not cgroup_dirs(cgroups_path)
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert not rt.ListPodSandbox(pb.ListPodSandboxRequest()).items


def test_bad_input_gets_precise_codes_and_leaks_nothing(node: Node) -> None:
    rt = node.rt
    # One whole pod first: the daemon opens some descriptors once, at first use.
    warm, _ = run_pod(rt, "warm-up")
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=warm))
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=warm))
    fds_before = daemon_fds(node)
    assert code_of(rt.RunPodSandbox, pb.RunPodSandboxRequest()) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(rt.RunPodSandbox, pb.RunPodSandboxRequest(
        config=pod_config("h"), runtime_handler="nope")) in (grpc.StatusCode.NOT_FOUND,
                                                             grpc.StatusCode.INVALID_ARGUMENT)
    # Refused once its network namespace is recorded and on its way: nothing of it stays.
    bad_host = pod_config("badhost")
    bad_host.hostname = "-no spaces"
    with pytest.raises(grpc.RpcError) as e:
        rt.RunPodSandbox(pb.RunPodSandboxRequest(config=bad_host))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "hostname" in e.value.details()
    assert not rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert not os.listdir(node.base / "netns")
    assert code_of(rt.PodSandboxStatus, pb.PodSandboxStatusRequest(pod_sandbox_id="f00d")) \
        == grpc.StatusCode.NOT_FOUND
    assert code_of(rt.ContainerStatus, pb.ContainerStatusRequest(container_id="f00d")) \
        == grpc.StatusCode.NOT_FOUND
    cfg = pod_config("bad")
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    assert code_of(rt.RunPodSandbox, pb.RunPodSandboxRequest(config=cfg)) == grpc.StatusCode.ALREADY_EXISTS
    missing = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="m"),
                                 image=pb.ImageSpec(image="registry.k8s.io/not-pulled:1"))
    with pytest.raises(grpc.RpcError) as e:
        rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=missing, sandbox_config=cfg))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "registry.k8s.io/not-pulled:1" in e.value.details()
    assert code_of(rt.CreateContainer, pb.CreateContainerRequest(pod_sandbox_id=pod, sandbox_config=cfg)) \
        == grpc.StatusCode.INVALID_ARGUMENT
    # A command that does not exist fails at create or start, and leaves no container behind.
    broken = sleeper("broken")
    broken.command[:] = ["/no/such/binary"]
    try:
        ctr = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=broken,
                                                           sandbox_config=cfg)).container_id
        assert code_of(rt.StartContainer, pb.StartContainerRequest(container_id=ctr)) != grpc.StatusCode.OK
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
    except grpc.RpcError as err:
        assert "no/such/binary" in err.details()
    ctr = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=sleeper(),
                                                       sandbox_config=cfg)).container_id
    assert code_of(rt.CreateContainer, pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=sleeper(), sandbox_config=cfg)) == grpc.StatusCode.ALREADY_EXISTS
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    assert code_of(rt.StartContainer, pb.StartContainerRequest(container_id=ctr)) \
        == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(rt.CreateContainer, pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=sleeper("late"), sandbox_config=cfg)) == grpc.StatusCode.FAILED_PRECONDITION
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert not rt.ListContainers(pb.ListContainersRequest()).containers
    time.sleep(0.5)  # let the daemon drop finished subprocess pipes
    assert daemon_fds(node) == fds_before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_containers_outlive_the_daemon_and_exits_meanwhile_are_recorded(node: Node, sig: int) -> None:
    rt = node.rt
    pod, keep = run_pod(rt, "outlive")
    cfg = pod_config("outlive")
    dies = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=sleeper("dies"),
                                                        sandbox_config=cfg)).container_id
    rt.StartContainer(pb.StartContainerRequest(container_id=dies))
    keep_pid, dies_pid = container_pid(rt, keep), container_pid(rt, dies)

    if sig == signal.SIGKILL:
        node.daemon.kill()
    else:
        node.daemon.stop(sig)
    os.kill(dies_pid, signal.SIGKILL)  # exits while nobody watches: conmon writes it down
    time.sleep(0.5)
    os.kill(keep_pid, 0)  # still running without the daemon
    node.daemon.start()

    rt = node.rt
    assert rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status.state \
        == pb.PodSandboxState.SANDBOX_READY
    kept = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=keep)).status
    assert kept.state == pb.ContainerState.CONTAINER_RUNNING and container_pid(rt, keep) == keep_pid
    died = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=dies)).status
    assert (died.state, died.exit_code, died.reason) == (pb.ContainerState.CONTAINER_EXITED, 137, "Error")
    # The restarted daemon watches the survivor again: its exit is seen without a call.
    os.kill(keep_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while rt.ContainerStatus(pb.ContainerStatusRequest(container_id=keep)).status.state \
            != pb.ContainerState.CONTAINER_EXITED:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # The pod still takes new containers after the restart.
    again = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=sleeper("again"),
                                                         sandbox_config=cfg)).container_id
    rt.StartContainer(pb.StartContainerRequest(container_id=again))
    assert rt.ExecSync(pb.ExecSyncRequest(container_id=again, cmd=["true"])).exit_code == 0


def test_sigkill_during_parallel_pod_starts_leaves_whole_pods_or_nothing(node: Node) -> None:
    rt = node.rt
    started = threading.Event()

    def start(i: int) -> None:
        started.set()
        try:
            run_pod(rt, f"par-{i}")
        except grpc.RpcError:
            pass  # the daemon died under it

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(start, i) for i in range(10)]
        started.wait()
        time.sleep(0.4)  # well inside the starts: namespaces, CNI and conmons are on their way
        node.daemon.kill()
        for f in futures:
            f.result()
    node.daemon.start()
    rt = node.rt

    pods = rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
    view = host_view(node.base)
    assert len(view["netns"]) == len(pods), view  # type: ignore[arg-type]
    assert len(view["ipam"]) == len(pods), view  # type: ignore[arg-type]
    for sb in pods:
        status = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sb.id)).status
        assert status.state == pb.PodSandboxState.SANDBOX_READY and status.network.ip
    containers = rt.ListContainers(pb.ListContainersRequest()).containers
    for c in containers:
        # Created ones were created whole: they start now; running ones kept running.
        if c.state == pb.ContainerState.CONTAINER_CREATED:
            rt.StartContainer(pb.StartContainerRequest(container_id=c.id))
        assert rt.ExecSync(pb.ExecSyncRequest(container_id=c.id, cmd=["true"])).exit_code == 0
    assert view["conmons"] >= len(containers)
    # The fixture removes every pod and then checks that nothing is left on the host.


def test_cgroup_paths_are_removed_with_their_pods(node: Node) -> None:
    rt = node.rt
    pod, ctr = run_pod(rt, "cg")
    info = json.loads(rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True)).info["info"])
    assert cgroup_dirs(info["cgroupsPath"])
    # conmon sits in a cgroup of its own beside its container's, in the same parent.
    monitor = info["cgroupsPath"].rsplit("/", 1)[0] + f"/conmon-{ctr}"
    conmons = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p)[:1] == ["conmon"]
               and ctr in _cmdline(p)]
    assert conmons and all(monitor in (p / "cgroup").read_text() for p in conmons)
    assert cgroup_dirs(monitor)
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert not cgroup_dirs(info["cgroupsPath"]) and not cgroup_dirs(monitor)
    assert cgroups.cgroups_path("cgroupfs", "", ctr).endswith(ctr)


def _cmdline(proc: Path) -> list[str]:
    try:
        return [os.path.basename(a) if i == 0 else a
                for i, a in enumerate((proc / "cmdline").read_bytes().decode(errors="replace").split("\0"))]
    except OSError:
        return []


def test_container_status_names_the_image_as_its_user_did(node: Node) -> None:
    """The kubelet creates containers by image id and puts the pod spec's name in
    user_specified_image; ContainerStatus.image is what it shows as the pod's
    containerStatuses[].image (node conformance checks it after an image update)."""
    rt = node.rt
    image_id = node.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=BUSYBOX))).image.id
    cfg = pod_config("named")
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    shown = {}
    for name, spec in {"kubelet": pb.ImageSpec(image=image_id, user_specified_image=BUSYBOX),
                       "by-id": pb.ImageSpec(image=image_id),
                       "by-name": pb.ImageSpec(image=BUSYBOX)}.items():
        config = sleeper(name)
        config.image.CopyFrom(spec)
        ctr = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=cfg),
                                 timeout=60).container_id
        status = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
        assert status.image_id == image_id, name
        shown[name] = (status.image.image, status.image.user_specified_image)
    # By id without a name: the image's first tag, as containerd shows it.
    assert shown == {"kubelet": (BUSYBOX, BUSYBOX), "by-id": (BUSYBOX, ""), "by-name": (BUSYBOX, "")}


def test_a_container_that_exits_at_once_did_not_finish_before_it_started(node: Node) -> None:
    """`true` can exit before `runc start` returns; its start time was taken after that
    call, so ContainerStatus could say it finished before it started."""
    rt = node.rt
    cfg = pod_config("quick")
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    for i in range(5):
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=f"quick-{i}"),
                                    image=pb.ImageSpec(image=BUSYBOX), command=["true"])
        ctr = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=cfg),
                                 timeout=60).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)
        deadline = time.monotonic() + 15
        while (status := rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status).state \
                != pb.CONTAINER_EXITED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0 < status.started_at <= status.finished_at, (i, status.started_at - status.finished_at)


def test_update_pod_sandbox_resources_is_kept_and_shown(node: Node) -> None:
    rt = node.rt
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config("sized")), timeout=60).pod_sandbox_id
    rt.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=pod, overhead=pb.LinuxContainerResources(cpu_shares=10),
        resources=pb.LinuxContainerResources(cpu_quota=150000, cpu_period=100000)), timeout=10)
    info = json.loads(rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info["info"])
    assert info["details"]["overhead"]["cpu_shares"] == 10
    assert (info["details"]["resources"]["cpu_quota"], info["details"]["resources"]["cpu_period"]) == (150000, 100000)
    with pytest.raises(grpc.RpcError) as err:
        rt.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="f" * 64), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
