"""Stats, metrics and events through a real daemon: a CPU-burning and a memory-filling
container show numbers that move, the pod's network counters move with its traffic,
and a subscriber sees every lifecycle event (needs root and the local test registry)."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from api import api_pb2 as pb
from tests.integration.test_pods import pod_config
from tests.node import BUSYBOX, Node, running_node
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

BRIDGE, SUBNET, GATEWAY = "crs-stats0", "10.97.0.0/24", "10.97.0.1"
MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(not registry_is_up(),
                                reason=f"needs the test registry on {TEST_REGISTRY} (hack/e2e-env.sh up)")


@pytest.fixture
def node(short_tmp: Path) -> Iterator[Node]:
    with running_node(short_tmp, BRIDGE, SUBNET) as n:
        yield n


def _foreign_sockets(node: Node) -> set[str]:
    """The daemon's sockets that live in another network namespace than the host's: those
    absent from the host's socket tables (fds may vanish while they are counted)."""
    host: set[str] = set()
    for table, column in (("netlink", 9), ("unix", 6), ("tcp", 9), ("tcp6", 9), ("udp", 9), ("udp6", 9),
                          ("raw", 9), ("raw6", 9), ("packet", 8)):
        with open(f"/proc/net/{table}") as f:
            host |= {cols[column] for cols in (ln.split() for ln in list(f)[1:]) if len(cols) > column}
    fd_dir = f"/proc/{node.daemon.proc.pid}/fd"  # type: ignore[union-attr]
    found = set()
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:[") and link[8:-1] not in host:
            found.add(link[8:-1])
    return found


def _container(name: str, script: str) -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=BUSYBOX),
                              command=["sh", "-c", script], labels={"role": name},
                              linux=pb.LinuxContainerConfig())


BURN = "while :; do :; done"
# About 40 MiB held by the shell for as long as it runs.
FILL = "x=$(head -c 41943040 /dev/zero | tr '\\0' a); echo filled; while :; do sleep 1; done"


def _start(node: Node, pod: str, cfg: pb.PodSandboxConfig, ctr: pb.ContainerConfig) -> str:
    cid = node.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=ctr, sandbox_config=cfg),
                                  timeout=60).container_id
    node.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    return cid


def _stats(node: Node, cid: str) -> pb.ContainerStats:
    return node.rt.ContainerStats(pb.ContainerStatsRequest(container_id=cid), timeout=10).stats


def _until(check, deadline: float = 30):  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_burning_and_filling_containers_show_moving_numbers(node: Node) -> None:
    cfg = pod_config("stats")
    pod = node.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    burn = _start(node, pod, cfg, _container("burn", BURN))
    fill = _start(node, pod, cfg, _container("fill", FILL))

    first = _stats(node, burn)
    time.sleep(1.5)
    second = _stats(node, burn)
    elapsed = second.cpu.timestamp - first.cpu.timestamp
    burned = second.cpu.usage_core_nano_seconds.value - first.cpu.usage_core_nano_seconds.value
    assert burned > 0.1 * elapsed, (burned, elapsed)  # a busy loop (on a shared machine)
    assert second.cpu.usage_nano_cores.value > 100_000_000  # the rate over the two samples
    assert second.attributes.metadata.name == "burn" and second.attributes.labels["role"] == "burn"
    assert second.writable_layer.fs_id.mountpoint.endswith("/containers")
    assert second.writable_layer.inodes_used.value >= 1

    filled = _until(lambda: (s := _stats(node, fill)).memory.working_set_bytes.value > 40 * MiB and s)
    assert filled.memory.usage_bytes.value >= filled.memory.working_set_bytes.value
    assert filled.memory.rss_bytes.value > 30 * MiB and filled.memory.page_faults.value > 0
    assert _stats(node, burn).memory.working_set_bytes.value < 20 * MiB

    # Filters: by label, by pod, by id prefix.
    listed = node.rt.ListContainerStats(pb.ListContainerStatsRequest(
        filter=pb.ContainerStatsFilter(label_selector={"role": "fill"}))).stats
    assert [s.attributes.id for s in listed] == [fill]
    listed = node.rt.ListContainerStats(pb.ListContainerStatsRequest(
        filter=pb.ContainerStatsFilter(pod_sandbox_id=pod[:12]))).stats
    assert {s.attributes.id for s in listed} == {burn, fill}

    # The streaming variants list the same.
    streamed = [s for r in node.rt.StreamContainerStats(pb.StreamContainerStatsRequest()) for s in r.container_stats]
    assert {s.attributes.id for s in streamed} == {burn, fill}
    streamed_pods = [s for r in node.rt.StreamPodSandboxStats(pb.StreamPodSandboxStatsRequest())
                     for s in r.pod_sandbox_stats]
    assert [s.attributes.id for s in streamed_pods] == [pod]
    streamed_metrics = [m for r in node.rt.StreamPodSandboxMetrics(pb.StreamPodSandboxMetricsRequest())
                        for m in r.pod_sandbox_metrics]
    assert [m.pod_sandbox_id for m in streamed_metrics] == [pod]

    # The pod: totals of its containers, its processes, its network.
    def pod_stats() -> pb.PodSandboxStats:
        return node.rt.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod), timeout=10).stats
    p1 = pod_stats()
    assert p1.attributes.metadata.name == "stats" and len(p1.linux.containers) == 2
    assert p1.linux.memory.working_set_bytes.value > 40 * MiB
    assert p1.linux.cpu.usage_core_nano_seconds.value >= second.cpu.usage_core_nano_seconds.value
    assert p1.linux.process.process_count.value >= 2
    assert p1.linux.network.default_interface.name == "eth0"
    # Traffic to the gateway moves the counters.
    pinged = node.rt.ExecSync(pb.ExecSyncRequest(container_id=fill, cmd=["ping", "-c", "2", "-W", "2", GATEWAY],
                                                 timeout=10))
    assert pinged.exit_code == 0, pinged.stderr
    p2 = pod_stats()
    assert p2.linux.network.default_interface.tx_bytes.value > p1.linux.network.default_interface.tx_bytes.value
    assert p2.linux.network.default_interface.rx_bytes.value > p1.linux.network.default_interface.rx_bytes.value

    # The cAdvisor-style metrics carry the same numbers.
    metrics = node.rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics
    (mine,) = [m for m in metrics if m.pod_sandbox_id == pod]
    by_ctr = {c.container_id: {m.name: m for m in c.metrics} for c in mine.container_metrics}
    assert by_ctr[fill]["container_memory_working_set_bytes"].value.value > 40 * MiB
    assert by_ctr[burn]["container_cpu_usage_seconds_total"].value.value >= 1
    assert {m.name for m in mine.metrics} >= {"container_network_transmit_bytes_total"}


def test_stopping_a_pod_closes_its_netlink_socket(node: Node) -> None:
    cfg = pod_config("netns")
    rt = node.rt
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    assert not _foreign_sockets(node)
    assert rt.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats.linux.network.interfaces
    kept = _foreign_sockets(node)
    assert len(kept) == 1  # a netlink socket in the pod's namespace, kept for the next call
    rt.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod))
    assert _foreign_sockets(node) == kept
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    _until(lambda: not _foreign_sockets(node), 5)  # closed: it would keep the namespace alive
    assert not rt.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats.linux.HasField("network")


def test_a_subscriber_sees_every_lifecycle_event_with_statuses(node: Node) -> None:
    events: queue.Queue[pb.ContainerEventResponse] = queue.Queue()
    stream = node.rt.GetContainerEvents(pb.GetEventsRequest())

    def pump() -> None:
        try:
            for e in stream:
                events.put(e)
        except grpc.RpcError:
            pass  # cancelled at the end
    threading.Thread(target=pump, daemon=True).start()
    time.sleep(0.3)  # the subscription is made when the call arrives

    cfg = pod_config("events")
    pod = node.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    cid = _start(node, pod, cfg, _container("short", "sleep 600"))
    node.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1), timeout=30)
    node.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=30)
    node.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    node.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)

    got = [events.get(timeout=10) for _ in range(8)]
    stream.cancel()
    T = pb.ContainerEventType
    assert [(e.container_id, e.container_event_type) for e in got] == [
        (pod, T.CONTAINER_CREATED_EVENT), (pod, T.CONTAINER_STARTED_EVENT),
        (cid, T.CONTAINER_CREATED_EVENT), (cid, T.CONTAINER_STARTED_EVENT), (cid, T.CONTAINER_STOPPED_EVENT),
        (cid, T.CONTAINER_DELETED_EVENT), (pod, T.CONTAINER_STOPPED_EVENT), (pod, T.CONTAINER_DELETED_EVENT)]
    assert all(e.created_at > 0 for e in got)
    started = got[3]
    assert started.pod_sandbox_status.id == pod and started.pod_sandbox_status.metadata.name == "events"
    assert [(c.id, c.state) for c in started.containers_statuses] == [(cid, pb.ContainerState.CONTAINER_RUNNING)]
    stopped = got[4]
    assert stopped.containers_statuses[0].state == pb.ContainerState.CONTAINER_EXITED
    assert not got[-1].HasField("pod_sandbox_status")  # deleted: nothing left to describe
    assert events.empty()
