"""Stats RPCs: ContainerStats, ListContainerStats, StreamContainerStats, PodSandboxStats,
ListPodSandboxStats, StreamPodSandboxStats."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from api import api_pb2 as pb
from criservice.deps import Area, Deps
from criservice.listing import chunks, labels_match
from runtime.cgroupstats import CgroupSample, Psi
from runtime.netstats import InterfaceStats, NetworkSample
from runtime.records import ContainerRecord, SandboxRecord
from runtime.stats import ContainerUsage, PodUsage


def u64(value: int | None) -> pb.UInt64Value | None:
    return None if value is None else pb.UInt64Value(value=max(value, 0))


def _psi(kinds: dict[str, Psi] | None) -> pb.PsiStats | None:
    if not kinds:
        return None

    def data(p: Psi | None) -> pb.PsiData | None:
        return None if p is None else pb.PsiData(Total=p.total_us * 1000, Avg10=p.avg10, Avg60=p.avg60,
                                                 Avg300=p.avg300)
    return pb.PsiStats(Full=data(kinds.get("full")), Some=data(kinds.get("some")))


def cpu_usage(s: CgroupSample, nano_cores: int | None) -> pb.CpuUsage:
    return pb.CpuUsage(timestamp=s.timestamp_ns, usage_core_nano_seconds=u64(s.cpu_usage_ns),
                       usage_nano_cores=u64(nano_cores), psi=_psi(s.psi.get("cpu")))


def memory_usage(s: CgroupSample) -> pb.MemoryUsage:
    return pb.MemoryUsage(
        timestamp=s.timestamp_ns, working_set_bytes=u64(s.memory_working_set),
        available_bytes=u64(s.memory_available), usage_bytes=u64(s.memory_usage), rss_bytes=u64(s.memory_rss),
        page_faults=u64(s.page_faults), major_page_faults=u64(s.major_page_faults),
        psi=_psi(s.psi.get("memory")))


def _swap_usage(s: CgroupSample) -> pb.SwapUsage:
    available = None
    if s.memory_swap_limit is not None and s.memory_swap_usage is not None:
        available = s.memory_swap_limit - s.memory_swap_usage
    return pb.SwapUsage(timestamp=s.timestamp_ns, swap_usage_bytes=u64(s.memory_swap_usage),
                        swap_available_bytes=u64(available))


def _interface(i: InterfaceStats) -> pb.NetworkInterfaceUsage:
    return pb.NetworkInterfaceUsage(name=i.name, rx_bytes=u64(i.rx_bytes), rx_errors=u64(i.rx_errors),
                                    tx_bytes=u64(i.tx_bytes), tx_errors=u64(i.tx_errors))


def _network(n: NetworkSample) -> pb.NetworkUsage:
    default = n.default
    return pb.NetworkUsage(timestamp=n.timestamp_ns,
                           default_interface=_interface(default) if default is not None else None,
                           interfaces=[_interface(i) for i in n.interfaces])


def container_attributes(r: ContainerRecord) -> pb.ContainerAttributes:
    return pb.ContainerAttributes(id=r.id, metadata=pb.ContainerMetadata(name=r.name, attempt=r.attempt),
                                  labels=r.labels, annotations=r.annotations)


def sandbox_attributes(r: SandboxRecord) -> pb.PodSandboxAttributes:
    return pb.PodSandboxAttributes(id=r.id, metadata=pb.PodSandboxMetadata(
        name=r.name, uid=r.uid, namespace=r.namespace, attempt=r.attempt),
        labels=r.labels, annotations=r.annotations)


def container_stats(u: ContainerUsage, mountpoint: str) -> pb.ContainerStats:
    out = pb.ContainerStats(attributes=container_attributes(u.record))
    if u.cgroup is not None:
        out.cpu.CopyFrom(cpu_usage(u.cgroup, u.nano_cores))
        out.memory.CopyFrom(memory_usage(u.cgroup))
        out.swap.CopyFrom(_swap_usage(u.cgroup))
        io_psi = _psi(u.cgroup.psi.get("io"))
        out.io.CopyFrom(pb.IoUsage(timestamp=u.cgroup.timestamp_ns, psi=io_psi))
    if u.writable_layer is not None:
        out.writable_layer.CopyFrom(pb.FilesystemUsage(
            timestamp=u.writable_layer.timestamp_ns, fs_id=pb.FilesystemIdentifier(mountpoint=mountpoint),
            used_bytes=u64(u.writable_layer.bytes_used), inodes_used=u64(u.writable_layer.inodes_used)))
    return out


def pod_stats(u: PodUsage, mountpoint: str) -> pb.PodSandboxStats:
    linux = pb.LinuxPodSandboxStats(containers=[container_stats(c, mountpoint) for c in u.containers])
    if u.cgroup is not None:
        linux.cpu.CopyFrom(cpu_usage(u.cgroup, u.nano_cores))
        linux.memory.CopyFrom(memory_usage(u.cgroup))
        linux.io.CopyFrom(pb.IoUsage(timestamp=u.cgroup.timestamp_ns, psi=_psi(u.cgroup.psi.get("io"))))
        linux.process.CopyFrom(pb.ProcessUsage(timestamp=u.cgroup.timestamp_ns,
                                               process_count=u64(u.processes)))
    if u.network is not None:
        linux.network.CopyFrom(_network(u.network))
    return pb.PodSandboxStats(attributes=sandbox_attributes(u.record), linux=linux)


async def pod_usage(deps: Deps, sandboxes: list[SandboxRecord]) -> list[PodUsage]:
    """Usage of these pods and their containers (ListPodSandboxMetrics reads it too)."""
    wanted = {s.id for s in sandboxes}
    containers_of: dict[str, list[ContainerRecord]] = {}
    for c in deps.container_records.list():
        if c.sandbox_id in wanted and not c.building:
            containers_of.setdefault(c.sandbox_id, []).append(c)
    return await deps.stats.pods(sandboxes, containers_of)


class ResourceStats(Area):
    @property
    def _layer_mountpoint(self) -> str:
        return self.deps.snapshots.root

    def _stats_containers(self, flt: pb.ContainerStatsFilter) -> list[ContainerRecord]:
        return [r for r in self.deps.container_records.list()
                if not r.building and r.id.startswith(flt.id)
                and r.sandbox_id.startswith(flt.pod_sandbox_id) and labels_match(r.labels, flt.label_selector)]

    async def _container_stats(self, records: list[ContainerRecord]) -> list[pb.ContainerStats]:
        return [container_stats(u, self._layer_mountpoint) for u in await self.deps.stats.containers(records)]

    async def ContainerStats(self, request: pb.ContainerStatsRequest,
                             context: grpc.aio.ServicerContext) -> pb.ContainerStatsResponse:
        record = self.deps.container_records.get(request.container_id)
        (stats,) = await self._container_stats([record])
        return pb.ContainerStatsResponse(stats=stats)

    async def ListContainerStats(self, request: pb.ListContainerStatsRequest,
                                 context: grpc.aio.ServicerContext) -> pb.ListContainerStatsResponse:
        return pb.ListContainerStatsResponse(
            stats=await self._container_stats(self._stats_containers(request.filter)))

    async def StreamContainerStats(self, request: pb.StreamContainerStatsRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> AsyncIterator[pb.StreamContainerStatsResponse]:
        stats = await self._container_stats(self._stats_containers(request.filter))
        for chunk in chunks(stats):
            yield pb.StreamContainerStatsResponse(container_stats=chunk)

    async def _pod_stats(self, sandboxes: list[SandboxRecord]) -> list[pb.PodSandboxStats]:
        return [pod_stats(u, self._layer_mountpoint) for u in await pod_usage(self.deps, sandboxes)]

    def _stats_sandboxes(self, flt: pb.PodSandboxStatsFilter) -> list[SandboxRecord]:
        return [s for s in self.deps.pod_records.list()
                if not s.building and s.id.startswith(flt.id)
                and labels_match(s.labels, flt.label_selector)]

    async def PodSandboxStats(self, request: pb.PodSandboxStatsRequest,
                              context: grpc.aio.ServicerContext) -> pb.PodSandboxStatsResponse:
        (stats,) = await self._pod_stats([self.deps.pod_records.get(request.pod_sandbox_id)])
        return pb.PodSandboxStatsResponse(stats=stats)

    async def ListPodSandboxStats(self, request: pb.ListPodSandboxStatsRequest,
                                  context: grpc.aio.ServicerContext) -> pb.ListPodSandboxStatsResponse:
        return pb.ListPodSandboxStatsResponse(
            stats=await self._pod_stats(self._stats_sandboxes(request.filter)))

    async def StreamPodSandboxStats(self, request: pb.StreamPodSandboxStatsRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> AsyncIterator[pb.StreamPodSandboxStatsResponse]:
        stats = await self._pod_stats(self._stats_sandboxes(request.filter))
        for chunk in chunks(stats):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=chunk)
