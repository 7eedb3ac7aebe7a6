"""Metrics RPCs: ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics.

The set the kubelet serves on /metrics/cadvisor when the runtime provides the
stats: cAdvisor's names, types and labels. Every metric carries the base labels
(container, id, image, name, namespace, pod) and, where cAdvisor has one, its own
(cpu, interface, device, failure_type and scope, ulimit, ...). The CRI carries
values as unsigned integers, so the *_seconds_total metrics are whole seconds, as
with the other runtimes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import grpc

from api import api_pb2 as pb
from criservice.deps import Area
from criservice.listing import chunks
from criservice.stats import pod_usage
from runtime.cgroupstats import CgroupSample
from runtime.netstats import InterfaceStats
from runtime.procstats import ProcessStats, filesystem_device, process_stats
from runtime.stats import ContainerUsage, PodUsage

BASE_LABELS = ("container", "id", "image", "name", "namespace", "pod")
COUNTER, GAUGE = pb.MetricType.COUNTER, pb.MetricType.GAUGE
SECOND = 1_000_000_000


@dataclass(frozen=True)
class Fs:
    device: str
    capacity_bytes: int
    inodes_total: int
    inodes_free: int


@dataclass(frozen=True)
class Inputs:
    """What one container's metrics are computed from."""
    usage: ContainerUsage
    cgroup: CgroupSample
    procs: ProcessStats
    fs: Fs


Values = list[tuple[tuple[str, ...], int]]   # (own label values, value) per series


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    kind: pb.MetricType
    labels: tuple[str, ...]
    values: Callable[[Inputs], Values]


def _one(get: Callable[[Inputs], int | None]) -> Callable[[Inputs], Values]:
    def values(i: Inputs) -> Values:
        v = get(i)
        return [((), v or 0)]
    return values


def _optional(get: Callable[[Inputs], int | None]) -> Callable[[Inputs], Values]:
    """A series only where the host has the number (pressure, quotas, block I/O)."""
    def values(i: Inputs) -> Values:
        v = get(i)
        return [] if v is None else [((), v)]
    return values


def _psi(resource: str, kind: str) -> Callable[[Inputs], int | None]:
    def get(i: Inputs) -> int | None:
        psi = i.cgroup.psi.get(resource, {}).get(kind)
        return None if psi is None else psi.total_us // 1_000_000
    return get


def _blkio(field: str, op: str | None = None) -> Callable[[Inputs], Values]:
    def values(i: Inputs) -> Values:
        totals: dict[tuple[str, ...], int] = {}
        for e in i.cgroup.blkio:
            if op is not None and e.operation != op:
                continue
            key = (f"{e.major}:{e.minor}",) if op is not None else (
                f"{e.major}:{e.minor}", str(e.major), str(e.minor), e.operation)
            totals[key] = totals.get(key, 0) + getattr(e, field)
        return list(totals.items())
    return values


def _faults(i: Inputs) -> Values:
    c = i.cgroup
    return [((kind, scope), value or 0) for scope in ("container", "hierarchy")
            for kind, value in (("pgfault", c.page_faults), ("pgmajfault", c.major_page_faults))]


def _seconds(ns: int | None) -> int | None:
    return None if ns is None else ns // SECOND


def _fs(get: Callable[[Inputs], int | None]) -> Callable[[Inputs], Values]:
    return lambda i: [((i.fs.device,), get(i) or 0)]


FAMILIES: tuple[Family, ...] = (
    # CPU
    Family("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", COUNTER, ("cpu",),
           lambda i: [(("total",), _seconds(i.cgroup.cpu_usage_ns) or 0)]),
    Family("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", COUNTER, (),
           _one(lambda i: _seconds(i.cgroup.cpu_user_ns))),
    Family("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", COUNTER, (),
           _one(lambda i: _seconds(i.cgroup.cpu_system_ns))),
    Family("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", COUNTER, (),
           _one(lambda i: i.cgroup.cpu_periods)),
    Family("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", COUNTER, (),
           _one(lambda i: i.cgroup.cpu_throttled_periods)),
    Family("container_cpu_cfs_throttled_seconds_total",
           "Total time duration the container has been throttled.", COUNTER, (),
           _one(lambda i: _seconds(i.cgroup.cpu_throttled_ns))),
    # memory
    Family("container_memory_cache", "Number of bytes of page cache memory.", GAUGE, (),
           _one(lambda i: i.cgroup.memory_cache)),
    Family("container_memory_rss", "Size of RSS in bytes.", GAUGE, (), _one(lambda i: i.cgroup.memory_rss)),
    Family("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", GAUGE, (),
           _one(lambda i: i.cgroup.memory_kernel)),
    Family("container_memory_mapped_file", "Size of memory mapped files in bytes.", GAUGE, (),
           _one(lambda i: i.cgroup.memory_mapped_file)),
    Family("container_memory_swap", "Container swap usage in bytes.", GAUGE, (),
           _one(lambda i: i.cgroup.memory_swap_usage)),
    Family("container_memory_failcnt", "Number of memory usage hits limits.", COUNTER, (),
           _one(lambda i: i.cgroup.memory_failcnt)),
    Family("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless "
           "of when it was accessed.", GAUGE, (), _one(lambda i: i.cgroup.memory_usage)),
    Family("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", GAUGE, (),
           _one(lambda i: i.cgroup.memory_max_usage)),
    Family("container_memory_working_set_bytes", "Current working set in bytes.", GAUGE, (),
           _one(lambda i: i.cgroup.memory_working_set)),
    Family("container_memory_failures_total", "Cumulative count of memory allocation failures.", COUNTER,
           ("failure_type", "scope"), _faults),
    Family("container_oom_events_total", "Count of out of memory events observed for the container.",
           COUNTER, (), _one(lambda i: i.cgroup.oom_kills)),
    # processes
    Family("container_processes", "Number of processes running inside the container.", GAUGE, (),
           _one(lambda i: i.usage.processes)),
    Family("container_threads", "Number of threads running inside the container.", GAUGE, (),
           _one(lambda i: i.cgroup.pids_current)),
    Family("container_threads_max", "Maximum number of threads allowed inside the container, infinity if "
           "value is zero.", GAUGE, (), _one(lambda i: i.cgroup.pids_max)),
    Family("container_file_descriptors", "Number of open file descriptors for the container.", GAUGE, (),
           _one(lambda i: i.procs.file_descriptors)),
    Family("container_sockets", "Number of open sockets for the container.", GAUGE, (),
           _one(lambda i: i.procs.sockets)),
    Family("container_ulimits_soft", "Soft ulimit values for the container root process. Unlimited if -1, "
           "except priority and nice.", GAUGE, ("ulimit",),
           lambda i: [] if i.procs.max_open_files_soft is None else
           [(("max_open_files",), i.procs.max_open_files_soft)]),
    # filesystem: the writable layer on the containers' filesystem
    Family("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this "
           "filesystem.", GAUGE, ("device",),
           _fs(lambda i: i.usage.writable_layer.bytes_used if i.usage.writable_layer else 0)),
    Family("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this "
           "filesystem.", GAUGE, ("device",), _fs(lambda i: i.fs.capacity_bytes)),
    Family("container_fs_inodes_total", "Number of Inodes.", GAUGE, ("device",),
           _fs(lambda i: i.fs.inodes_total)),
    Family("container_fs_inodes_free", "Number of available Inodes.", GAUGE, ("device",),
           _fs(lambda i: i.fs.inodes_free)),
    Family("container_fs_reads_bytes_total", "Cumulative count of bytes read.", COUNTER, ("device",),
           _blkio("bytes", "Read")),
    Family("container_fs_writes_bytes_total", "Cumulative count of bytes written.", COUNTER, ("device",),
           _blkio("bytes", "Write")),
    Family("container_fs_reads_total", "Cumulative count of reads completed.", COUNTER, ("device",),
           _blkio("ios", "Read")),
    Family("container_fs_writes_total", "Cumulative count of writes completed.", COUNTER, ("device",),
           _blkio("ios", "Write")),
    Family("container_blkio_device_usage_total", "Blkio device bytes usage.", COUNTER,
           ("device", "major", "minor", "operation"), _blkio("bytes")),
    # pressure (PSI), where the kernel offers it
    Family("container_pressure_cpu_stalled_seconds_total",
           "Total time duration no tasks in the container could make progress due to CPU congestion.",
           COUNTER, (), _optional(_psi("cpu", "full"))),
    Family("container_pressure_cpu_waiting_seconds_total",
           "Total time duration tasks in the container have waited due to CPU congestion.",
           COUNTER, (), _optional(_psi("cpu", "some"))),
    Family("container_pressure_memory_stalled_seconds_total",
           "Total time duration no tasks in the container could make progress due to memory congestion.",
           COUNTER, (), _optional(_psi("memory", "full"))),
    Family("container_pressure_memory_waiting_seconds_total",
           "Total time duration tasks in the container have waited due to memory congestion.",
           COUNTER, (), _optional(_psi("memory", "some"))),
    Family("container_pressure_io_stalled_seconds_total",
           "Total time duration no tasks in the container could make progress due to IO congestion.",
           COUNTER, (), _optional(_psi("io", "full"))),
    Family("container_pressure_io_waiting_seconds_total",
           "Total time duration tasks in the container have waited due to IO congestion.",
           COUNTER, (), _optional(_psi("io", "some"))),
    # spec: the limits the container runs with
    Family("container_spec_cpu_period", "CPU period of the container.", GAUGE, (),
           _one(lambda i: i.cgroup.cpu_period_us)),
    Family("container_spec_cpu_quota", "CPU quota of the container.", GAUGE, (),
           _optional(lambda i: i.cgroup.cpu_quota_us)),
    Family("container_spec_cpu_shares", "CPU share of the container.", GAUGE, (),
           _one(lambda i: i.cgroup.cpu_shares)),
    Family("container_spec_memory_limit_bytes", "Memory limit for the container.", GAUGE, (),
           _one(lambda i: i.cgroup.memory_limit)),
    Family("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.",
           GAUGE, (), _one(lambda i: i.cgroup.memory_reservation)),
    Family("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", GAUGE, (),
           _one(lambda i: i.cgroup.memory_swap_limit)),
    # times
    Family("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", GAUGE,
           (), _one(lambda i: (i.usage.record.started_at or i.usage.record.created_at) // SECOND)),
    Family("container_last_seen", "Last time a container was seen by the exporter", GAUGE, (),
           _one(lambda i: i.cgroup.timestamp_ns // SECOND)),
)

# Pod-level: the pod network namespace's interfaces.
NETWORK: tuple[tuple[str, str, Callable[[InterfaceStats], int]], ...] = (
    ("container_network_receive_bytes_total", "Cumulative count of bytes received", lambda n: n.rx_bytes),
    ("container_network_receive_packets_total", "Cumulative count of packets received", lambda n: n.rx_packets),
    ("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving",
     lambda n: n.rx_dropped),
    ("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving",
     lambda n: n.rx_errors),
    ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", lambda n: n.tx_bytes),
    ("container_network_transmit_packets_total", "Cumulative count of packets transmitted",
     lambda n: n.tx_packets),
    ("container_network_transmit_packets_dropped_total",
     "Cumulative count of packets dropped while transmitting", lambda n: n.tx_dropped),
    ("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting",
     lambda n: n.tx_errors),
)


def descriptors() -> list[pb.MetricDescriptor]:
    out = [pb.MetricDescriptor(name=f.name, help=f.help, label_keys=[*BASE_LABELS, *f.labels]) for f in FAMILIES]
    out += [pb.MetricDescriptor(name=name, help=text, label_keys=[*BASE_LABELS, "interface"])
            for name, text, _ in NETWORK]
    return out


def container_metrics(i: Inputs, namespace: str, pod: str) -> Iterator[pb.Metric]:
    r = i.usage.record
    base = (r.name, r.id, r.image_ref, r.name, namespace, pod)
    for f in FAMILIES:
        for own, value in f.values(i):
            yield pb.Metric(name=f.name, timestamp=i.cgroup.timestamp_ns, metric_type=f.kind,
                            label_values=[*base, *own], value=pb.UInt64Value(value=max(int(value), 0)))


def pod_metrics(u: PodUsage) -> Iterator[pb.Metric]:
    if u.network is None:
        return
    s = u.record
    base = ("POD", s.id, "", s.name, s.namespace, s.name)
    for iface in u.network.interfaces:
        for name, _, get in NETWORK:
            yield pb.Metric(name=name, timestamp=u.network.timestamp_ns, metric_type=COUNTER,
                            label_values=[*base, iface.name], value=pb.UInt64Value(value=get(iface)))


class PodMetrics(Area):
    async def ListMetricDescriptors(self, request: pb.ListMetricDescriptorsRequest,
                                    context: grpc.aio.ServicerContext) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(descriptors=descriptors())

    def _metric_inputs(self, pods: list[PodUsage]) -> dict[str, Inputs]:
        """Blocking: /proc reads and statvfs of the containers' filesystem."""
        root = self.deps.snapshots.root
        st = os.statvfs(root)
        fs = Fs(filesystem_device(root) or root, st.f_blocks * st.f_frsize, st.f_files, st.f_favail)
        reader = self.deps.stats.reader
        out = {}
        for pod in pods:
            for u in pod.containers:
                if u.cgroup is None:
                    continue
                pids = reader.processes(u.record.cgroups_path)
                out[u.record.id] = Inputs(u, u.cgroup, process_stats(pids), fs)
        return out

    async def _pod_sandbox_metrics(self) -> list[pb.PodSandboxMetrics]:
        pods = await pod_usage(self.deps, [s for s in self.deps.pod_records.list() if not s.building])
        inputs = await asyncio.to_thread(self._metric_inputs, pods)
        out = []
        for pod in pods:
            s = pod.record
            containers = [pb.ContainerMetrics(container_id=u.record.id, metrics=list(
                container_metrics(inputs[u.record.id], s.namespace, s.name)))
                for u in pod.containers if u.record.id in inputs]
            out.append(pb.PodSandboxMetrics(pod_sandbox_id=s.id, metrics=list(pod_metrics(pod)),
                                            container_metrics=containers))
        return out

    async def ListPodSandboxMetrics(self, request: pb.ListPodSandboxMetricsRequest,
                                    context: grpc.aio.ServicerContext) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse(pod_metrics=await self._pod_sandbox_metrics())

    async def StreamPodSandboxMetrics(self, request: pb.StreamPodSandboxMetricsRequest,
                                      context: grpc.aio.ServicerContext
                                      ) -> AsyncIterator[pb.StreamPodSandboxMetricsResponse]:
        for chunk in chunks(await self._pod_sandbox_metrics(), 10):  # pods carry many metrics each
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=chunk)
