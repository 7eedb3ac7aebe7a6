"""cgroup v2 with both cgroup drivers, where real nodes run: systemd as PID 1 and
the unified hierarchy only. This host is v1 hybrid without systemd, so these run
in the guest (`hack/vm.sh test`) and are skipped here.

Each driver gets a daemon of its own and a pod under the parent the kubelet
would give it (`kubepods-burstable-pod<uid>.slice`, or `/kubepods/burstable/pod<uid>`):
its container and its conmon land where that driver puts them, limits reach
the v2 files and updates change them, stats come from the v2 files, an OOM
kill is reported from memory.events, and nothing is left afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import api_pb2 as pb
from tests.node import BUSYBOX, Node, running_node
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

V2 = Path("/sys/fs/cgroup")
ON_SYSTEMD_V2 = (V2 / "cgroup.controllers").exists() and Path("/run/systemd/system").is_dir() \
    and Path("/proc/1/comm").read_text().strip() == "systemd"
pytestmark = [
    pytest.mark.skipif(not ON_SYSTEMD_V2, reason="needs cgroup v2 with systemd as PID 1 (hack/vm.sh test)"),
    pytest.mark.skipif(not registry_is_up(), reason=f"needs the test registry on {TEST_REGISTRY}"),
]
BRIDGE, SUBNET = "crs-v2", "10.101.0.0/16"
POD_UID = "0a1b2c3d-v2"
MiB = 1 << 20


def _parent(driver: str) -> tuple[str, str]:
    """The pod's cgroup_parent as the kubelet sends it, and its directory under /sys/fs/cgroup."""
    if driver == "systemd":
        pod_slice = f"kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice"
        path = f"/kubepods.slice/kubepods-burstable.slice/{pod_slice}"
        return path, path
    path = f"/kubepods/burstable/pod{POD_UID}"
    return path, path


@pytest.fixture(params=["systemd", "cgroupfs"])
def node(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[tuple[Node, str]]:
    driver: str = request.param

    def configure(config: Path) -> None:
        config.write_text(config.read_text() + f'\n[runtime]\ncgroup_driver = "{driver}"\n')

    with running_node(short_tmp, BRIDGE, SUBNET, configure=configure) as n:
        yield n, driver
    # The parents the kubelet would own: what the test made of them goes too.
    if driver == "systemd":
        subprocess.run(["systemctl", "stop", "kubepods.slice"], check=False)
    elif (V2 / "kubepods").is_dir():
        for top, _, _ in sorted(os.walk(V2 / "kubepods"), key=lambda w: len(w[0]), reverse=True):
            os.rmdir(top)


def _pod(n: Node, driver: str) -> tuple[str, pb.PodSandboxConfig]:
    parent, _ = _parent(driver)
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="v2", namespace="it", uid=POD_UID),
                              linux=pb.LinuxPodSandboxConfig(cgroup_parent=parent))
    return n.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=120).pod_sandbox_id, cfg


def _container(n: Node, pod: str, cfg: pb.PodSandboxConfig, name: str, script: str,
               resources: pb.LinuxContainerResources) -> str:
    config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=BUSYBOX),
                                command=["sh", "-c", script], linux=pb.LinuxContainerConfig(resources=resources))
    ctr = n.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=cfg),
                               timeout=120).container_id
    n.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=120)
    return ctr


def _cgroup_of(pid: int) -> str:
    return next(ln[3:] for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ln.startswith("0::"))


def _conmons(ctr: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if p.name.isdigit() and os.path.basename(argv[0]) == b"conmon" and ctr.encode() in argv:
            found.append(int(p.name))
    return found


def _where(driver: str, ctr: str) -> tuple[str, str]:
    """The cgroups of a container and of its conmon, as the driver names them."""
    _, pod_dir = _parent(driver)
    if driver == "systemd":
        return f"{pod_dir}/cri-criservice-{ctr}.scope", f"{pod_dir}/cri-criservice-conmon-{ctr}.scope"
    return f"{pod_dir}/{ctr}", f"{pod_dir}/conmon-{ctr}"


def _wait(check: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.2)


def test_containers_and_their_conmon_land_where_the_driver_puts_them(node: tuple[Node, str]) -> None:
    n, driver = node
    pod, cfg = _pod(n, driver)
    ctr = _container(n, pod, cfg, "app", "while true; do sleep 1; done", pb.LinuxContainerResources(
        memory_limit_in_bytes=64 * MiB, cpu_period=100000, cpu_quota=50000, cpu_shares=1024))
    info = json.loads(n.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True)).info["info"])
    mine, monitor = _where(driver, ctr)
    assert _cgroup_of(info["pid"]) == mine
    assert [_cgroup_of(p) for p in _conmons(ctr)] == [monitor]
    d = V2 / mine.lstrip("/")
    assert (d / "memory.max").read_text().strip() == str(64 * MiB)
    assert (d / "cpu.max").read_text().split() == ["50000", "100000"]

    # UpdateContainerResources: memory, swap, CPU quota and weight, pids, cpuset.
    n.rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(container_id=ctr, linux=pb.LinuxContainerResources(
        memory_limit_in_bytes=96 * MiB, memory_swap_limit_in_bytes=128 * MiB, cpu_period=100000, cpu_quota=20000,
        cpu_shares=512, cpuset_cpus="0", unified={"pids.max": "50"})), timeout=60)
    assert (d / "memory.max").read_text().strip() == str(96 * MiB)
    assert (d / "memory.swap.max").read_text().strip() == str(32 * MiB)   # v1's memsw is memory + swap
    assert (d / "cpu.max").read_text().split() == ["20000", "100000"]
    assert (d / "cpu.weight").read_text().strip() == str(1 + (512 - 2) * 9999 // 262142)
    assert (d / "pids.max").read_text().strip() == "50"
    assert (d / "cpuset.cpus").read_text().strip() == "0"
    status = n.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
    assert status.resources.linux.memory_limit_in_bytes == 96 * MiB

    n.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=120)
    n.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120)
    _wait(lambda: not (V2 / monitor.lstrip("/")).exists())
    assert not d.exists() and not (V2 / monitor.lstrip("/")).exists()
    if driver == "systemd":
        units = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "cri-criservice*"],
                               capture_output=True, text=True, check=True).stdout
        assert units.strip() == ""


def test_stats_come_from_the_v2_files(node: tuple[Node, str]) -> None:
    n, driver = node
    pod, cfg = _pod(n, driver)
    ctr = _container(n, pod, cfg, "busy", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 600",
                     pb.LinuxContainerResources(memory_limit_in_bytes=64 * MiB))
    d = V2 / _where(driver, ctr)[0].lstrip("/")

    def used_cpu() -> bool:
        usage = n.rt.ContainerStats(pb.ContainerStatsRequest(container_id=ctr)).stats
        return usage.cpu.usage_core_nano_seconds.value > 0 and usage.memory.working_set_bytes.value > 0

    _wait(used_cpu)
    stats = n.rt.ContainerStats(pb.ContainerStatsRequest(container_id=ctr)).stats
    usage_usec = int(next(ln.split()[1] for ln in (d / "cpu.stat").read_text().splitlines()
                          if ln.startswith("usage_usec")))
    assert 0 < stats.cpu.usage_core_nano_seconds.value <= usage_usec * 1000 + 10**9
    # One sample: what is left below memory.max is the limit less the working set.
    assert 0 < stats.memory.working_set_bytes.value <= stats.memory.usage_bytes.value
    assert stats.memory.available_bytes.value + stats.memory.working_set_bytes.value == \
        int((d / "memory.max").read_text()) == 64 * MiB
    pods = n.rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()).stats
    assert [p.attributes.id for p in pods] == [pod] and pods[0].linux.cpu.usage_core_nano_seconds.value > 0


def test_an_oom_kill_is_read_from_memory_events(node: tuple[Node, str]) -> None:
    """As critest's OOM spec: killed at once, so with systemd the scope and its
    memory.events are gone before the exit is recorded."""
    n, driver = node
    pod, cfg = _pod(n, driver)
    # dd's 20 MiB block buffer is filled from /dev/zero: beyond the 15 MiB limit.
    ctr = _container(n, pod, cfg, "hog", "exec dd if=/dev/zero of=/dev/null bs=20971520",
                     pb.LinuxContainerResources(memory_limit_in_bytes=15 * MiB,
                                                memory_swap_limit_in_bytes=15 * MiB))

    def exited() -> bool:
        return n.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status.state == pb.CONTAINER_EXITED

    _wait(exited)
    status = n.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
    assert (status.state, status.reason, status.exit_code) == (pb.CONTAINER_EXITED, "OOMKilled", 137)
