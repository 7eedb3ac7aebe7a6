"""Usage of containers and pods: cgroups, writable layers, pod networks, in one place.

A list call reads every cgroup it needs in one hop to a thread (a sample is a
dozen small reads of cgroupfs); writable layers are walked in the background and
served from a cache, so a stats call never waits on a large upper directory
twice; pod networks come from a netlink socket kept per pod (runtime.netstats).

A pod's own totals come from its cgroup when it has one of its own (the
kubelet gives each pod a cgroup parent); without one (crictl, critest: every
container in the daemon's default parent) they are the sum of its containers.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from runtime import cgroups, fsusage
from runtime.cgroupstats import CgroupReader, CgroupSample
from runtime.netstats import NetStats, NetworkSample
from runtime.records import CONTAINER_EXITED, SANDBOX_READY, ContainerRecord, SandboxRecord

LAYER_TTL = 10.0          # seconds a writable layer's measured usage is served before a new walk
RATE_MIN_INTERVAL = 1.0   # seconds between the two samples a CPU rate is computed from

# Fields that add up over the containers of a pod without a cgroup of its own.
_ADDITIVE = ("cpu_usage_ns", "cpu_user_ns", "cpu_system_ns", "cpu_periods", "cpu_throttled_periods",
             "cpu_throttled_ns", "memory_usage", "memory_working_set", "memory_rss", "memory_cache",
             "memory_mapped_file", "memory_kernel", "memory_failcnt", "memory_swap_usage", "page_faults",
             "major_page_faults", "oom_kills", "pids_current")


@dataclass(frozen=True)
class ContainerUsage:
    record: ContainerRecord
    cgroup: CgroupSample | None        # None: no cgroup (not created yet, or removed)
    nano_cores: int | None             # CPU rate since an earlier sample, if there is one
    processes: int | None
    writable_layer: fsusage.Usage | None


@dataclass(frozen=True)
class PodUsage:
    record: SandboxRecord
    cgroup: CgroupSample | None
    nano_cores: int | None
    processes: int | None
    network: NetworkSample | None
    containers: list[ContainerUsage]


class _Rates:
    """CPU usage rate (nanocores) per cgroup, from two samples at least a second apart."""

    def __init__(self) -> None:
        self._base: dict[str, tuple[int, int, int | None]] = {}  # key -> (time ns, usage ns, rate)

    def update(self, key: str, sample: CgroupSample | None) -> int | None:
        if sample is None or sample.cpu_usage_ns is None:
            return None
        base = self._base.get(key)
        if base is None:
            self._base[key] = (sample.timestamp_ns, sample.cpu_usage_ns, None)
            return None
        then, usage, rate = base
        elapsed = sample.timestamp_ns - then
        if elapsed >= RATE_MIN_INTERVAL * 1e9:
            rate = max(sample.cpu_usage_ns - usage, 0) * 1_000_000_000 // elapsed
            self._base[key] = (sample.timestamp_ns, sample.cpu_usage_ns, rate)
        return rate

    def forget(self, key: str) -> None:
        self._base.pop(key, None)


class LayerUsage:
    """Writable layer usage: measured once, then refreshed in the background when stale."""

    def __init__(self, ttl: float = LAYER_TTL) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, fsusage.Usage]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def get(self, path: str) -> fsusage.Usage:
        hit = self._cache.get(path)
        if hit is None:
            usage = await asyncio.to_thread(fsusage.measure, path)
            self._cache[path] = (time.monotonic(), usage)
            return usage
        if time.monotonic() - hit[0] >= self.ttl and path not in self._refreshing:
            task = asyncio.ensure_future(self._refresh(path))
            self._refreshing[path] = task
            task.add_done_callback(lambda _t: self._refreshing.pop(path, None))
        return hit[1]

    async def _refresh(self, path: str) -> None:
        usage = await asyncio.to_thread(fsusage.measure, path)
        if path in self._cache:  # not forgotten meanwhile
            self._cache[path] = (time.monotonic(), usage)

    def forget(self, path: str) -> None:
        self._cache.pop(path, None)


class Stats:
    def __init__(self, snapshots_root: str, *, reader: CgroupReader | None = None,
                 net: NetStats | None = None, layers: LayerUsage | None = None) -> None:
        self.snapshots_root = snapshots_root
        self._reader = reader
        self.net = net or NetStats()
        self.layers = layers or LayerUsage()
        self.rates = _Rates()

    @property
    def reader(self) -> CgroupReader:
        if self._reader is None:  # the mounts are read at the first use, not at import
            self._reader = CgroupReader()
        return self._reader

    def upper_dir(self, container_id: str) -> str:
        return os.path.join(self.snapshots_root, container_id, "upper")

    # ---- containers ---------------------------------------------------------------------

    def _sample(self, cgroups_path: str | None) -> tuple[CgroupSample | None, int | None]:
        if not cgroups_path:
            return None, None
        try:
            return self.reader.read(cgroups_path), len(self.reader.processes(cgroups_path))
        except (FileNotFoundError, ValueError):
            return None, None

    def _read_containers(self, records: list[ContainerRecord]) -> list[tuple[CgroupSample | None, int | None]]:
        return [self._sample(r.cgroups_path) if r.state != CONTAINER_EXITED else (None, None)
                for r in records]

    async def containers(self, records: list[ContainerRecord]) -> list[ContainerUsage]:
        samples = await asyncio.to_thread(self._read_containers, records)
        layers = await asyncio.gather(*(self.layers.get(self.upper_dir(r.id)) for r in records))
        return [ContainerUsage(r, cg, self.rates.update(r.id, cg), procs, layer)
                for r, (cg, procs), layer in zip(records, samples, layers)]

    # ---- pods ---------------------------------------------------------------------------

    def _read_pod_cgroup(self, sandbox: SandboxRecord) -> CgroupSample | None:
        parent = sandbox.pod.cgroup_parent
        if not parent:
            return None
        try:
            return self.reader.read(parent if parent.startswith("/") else cgroups.slice_dir(parent))
        except (FileNotFoundError, ValueError):
            return None

    async def pods(self, sandboxes: list[SandboxRecord],
                   containers_of: dict[str, list[ContainerRecord]]) -> list[PodUsage]:
        own = await asyncio.to_thread(lambda: [self._read_pod_cgroup(s) for s in sandboxes])
        netns = {s.id: s.netns for s in sandboxes if s.netns and s.state == SANDBOX_READY}
        networks = await self.net.read(netns.values()) if netns else {}
        everything = [c for s in sandboxes for c in containers_of.get(s.id, [])]
        by_id = {u.record.id: u for u in await self.containers(everything)}
        out = []
        for sandbox, cgroup in zip(sandboxes, own):
            usages = [by_id[c.id] for c in containers_of.get(sandbox.id, [])]
            if cgroup is None:
                cgroup = sum_samples([u.cgroup for u in usages if u.cgroup is not None])
            processes = sum(u.processes or 0 for u in usages)
            network = networks.get(netns[sandbox.id]) if sandbox.id in netns else None
            out.append(PodUsage(sandbox, cgroup, self.rates.update("pod:" + sandbox.id, cgroup),
                                processes, network, usages))
        return out

    # ---- lifecycle --------------------------------------------------------------------------

    def forget(self, ident: str, *, netns: str | None = None) -> None:
        """A container or pod went away: drop what is kept for it."""
        self.rates.forget(ident)
        self.rates.forget("pod:" + ident)
        self.layers.forget(self.upper_dir(ident))
        if netns:
            self.net.forget(netns)

    def close(self) -> None:
        self.net.close()


def sum_samples(samples: list[CgroupSample]) -> CgroupSample | None:
    """The totals of several cgroups (limits are not summed: they stay unknown)."""
    if not samples:
        return None
    total = CgroupSample(max(s.timestamp_ns for s in samples))
    for name in _ADDITIVE:
        values = [getattr(s, name) for s in samples if getattr(s, name) is not None]
        if values:
            setattr(total, name, sum(values))
    total.blkio = [e for s in samples for e in s.blkio]
    return total
