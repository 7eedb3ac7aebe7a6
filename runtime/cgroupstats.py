"""Resource usage of one cgroup, read from cgroupfs: cgroup v1 (legacy or hybrid) and v2.

One `read()` gives a `CgroupSample` with the numbers the CRI stats and the
cAdvisor-style metrics need, in one unit each (nanoseconds, bytes, counts), so
the callers never care which hierarchy they came from. A counter a kernel does
not offer is None, not 0: "unknown" and "nothing" stay apart.

Where the numbers come from (per kernel documentation of each controller):

    number            v1 file                                   v2 file
    CPU total         cpuacct.usage                             cpu.stat usage_usec
    CPU user/system   cpuacct.stat (USER_HZ ticks)              cpu.stat user_usec/system_usec
    CFS throttling    cpu.stat nr_periods/nr_throttled/...      cpu.stat (same keys, usec)
    memory usage      memory.usage_in_bytes                     memory.current
    working set       usage - total_inactive_file               current - inactive_file
    RSS / cache       memory.stat total_rss / total_cache       memory.stat anon / file
    swap              memory.memsw.usage_in_bytes - usage       memory.swap.current
    OOM kills         memory.oom_control oom_kill               memory.events oom_kill
    tasks             pids.current / pids.max                   pids.current / pids.max
    block I/O         blkio.throttle.io_service*_recursive      io.stat
    pressure (PSI)    unified mount's *.pressure (hybrid)       *.pressure

In hybrid mode the v1 controllers carry the numbers; the unified hierarchy
still has the pressure files of the same cgroup path, which are read from it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from runtime import cgroups

# A v1 limit at or above this (PAGE_COUNTER_MAX rounded to pages) means "no limit".
_UNLIMITED = 1 << 62
_TICK_NS = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)


@dataclass(frozen=True)
class Psi:
    """One line of a pressure file: share of time stalled, and the total in microseconds."""
    total_us: int
    avg10: float
    avg60: float
    avg300: float


@dataclass(frozen=True)
class BlkioEntry:
    major: int
    minor: int
    operation: str        # "Read" or "Write"
    bytes: int
    ios: int


@dataclass
class CgroupSample:
    timestamp_ns: int
    # CPU
    cpu_usage_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_ns: int | None = None
    cpu_shares: int | None = None
    cpu_quota_us: int | None = None         # None: no quota
    cpu_period_us: int | None = None
    # memory
    memory_usage: int | None = None
    memory_working_set: int | None = None
    memory_rss: int | None = None
    memory_cache: int | None = None
    memory_mapped_file: int | None = None
    memory_kernel: int | None = None
    memory_max_usage: int | None = None
    memory_failcnt: int | None = None
    memory_limit: int | None = None         # None: no limit
    memory_reservation: int | None = None
    memory_swap_usage: int | None = None
    memory_swap_limit: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    oom_kills: int | None = None
    # tasks and I/O
    pids_current: int | None = None
    pids_max: int | None = None
    blkio: list[BlkioEntry] = field(default_factory=list)
    # pressure, by resource ("cpu", "memory", "io") and kind ("some", "full")
    psi: dict[str, dict[str, Psi]] = field(default_factory=dict)

    @property
    def memory_available(self) -> int | None:
        if self.memory_limit is None or self.memory_working_set is None:
            return None
        return max(self.memory_limit - self.memory_working_set, 0)


class CgroupReader:
    """Reads samples of cgroups by their path relative to the hierarchy mounts.

    `hierarchies` default to this mount namespace's (read once); tests give fixture
    directories instead.
    """

    def __init__(self, hierarchies: list[cgroups.Hierarchy] | None = None) -> None:
        found = cgroups.hierarchies() if hierarchies is None else hierarchies
        self.v1: dict[str, str] = {}
        self.unified: str | None = None
        for h in found:
            if h.version == 2:
                self.unified = self.unified or h.mountpoint
            else:
                for c in h.controllers:
                    self.v1.setdefault(c, h.mountpoint)
        # Whoever holds the memory controller holds the numbers.
        self.version = 1 if "memory" in self.v1 else 2

    def read(self, cgroups_path: str) -> CgroupSample:
        """A sample of the cgroup of an OCI cgroupsPath (cgroupfs or systemd form), or of a
        plain absolute cgroup directory. FileNotFoundError when the cgroup is gone."""
        rel = cgroups.cgroup_dir(cgroups_path)
        sample = CgroupSample(time.time_ns())
        if self.version == 1:
            self._v1(rel, sample)
        else:
            if self.unified is None or not os.path.isdir(self.unified + rel):
                raise FileNotFoundError(f"cgroup {rel} not found")
            self._v2(self.unified + rel, sample)
        if self.unified is not None:
            _psi(self.unified + rel, sample)
        return sample

    def processes(self, cgroups_path: str) -> list[int]:
        """The process ids in the cgroup (not its children)."""
        rel = cgroups.cgroup_dir(cgroups_path)
        base = (self.v1.get("pids") or self.v1.get("memory")) if self.version == 1 else self.unified
        if base is None:
            return []
        try:
            with open(base + rel + "/cgroup.procs") as f:
                return [int(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    # ---- v1 --------------------------------------------------------------------------

    def _v1_dir(self, controller: str, rel: str) -> str | None:
        mount = self.v1.get(controller)
        return None if mount is None else mount + rel

    def _v1(self, rel: str, s: CgroupSample) -> None:
        memory = self._v1_dir("memory", rel)
        if memory is None or not os.path.isdir(memory):
            raise FileNotFoundError(f"cgroup {rel} not found")
        stat = _kv(memory + "/memory.stat")
        s.memory_usage = _int(memory + "/memory.usage_in_bytes")
        if s.memory_usage is not None:
            s.memory_working_set = max(s.memory_usage - stat.get("total_inactive_file", 0), 0)
        s.memory_rss = stat.get("total_rss")
        s.memory_cache = stat.get("total_cache")
        s.memory_mapped_file = stat.get("total_mapped_file")
        s.page_faults = stat.get("total_pgfault")
        s.major_page_faults = stat.get("total_pgmajfault")
        s.memory_kernel = _int(memory + "/memory.kmem.usage_in_bytes")
        s.memory_max_usage = _int(memory + "/memory.max_usage_in_bytes")
        s.memory_failcnt = _int(memory + "/memory.failcnt")
        s.memory_limit = _limit(_int(memory + "/memory.limit_in_bytes"))
        s.memory_reservation = _limit(_int(memory + "/memory.soft_limit_in_bytes"))
        memsw = _int(memory + "/memory.memsw.usage_in_bytes")
        if memsw is not None and s.memory_usage is not None:
            s.memory_swap_usage = max(memsw - s.memory_usage, 0)
        else:
            s.memory_swap_usage = stat.get("total_swap")
        s.memory_swap_limit = _limit(_int(memory + "/memory.memsw.limit_in_bytes"))
        s.oom_kills = _kv(memory + "/memory.oom_control").get("oom_kill")

        cpuacct = self._v1_dir("cpuacct", rel)
        if cpuacct is not None:
            s.cpu_usage_ns = _int(cpuacct + "/cpuacct.usage")
            ticks = _kv(cpuacct + "/cpuacct.stat")
            if "user" in ticks:
                s.cpu_user_ns = ticks["user"] * _TICK_NS
                s.cpu_system_ns = ticks.get("system", 0) * _TICK_NS
        cpu = self._v1_dir("cpu", rel)
        if cpu is not None:
            cstat = _kv(cpu + "/cpu.stat")
            s.cpu_periods = cstat.get("nr_periods")
            s.cpu_throttled_periods = cstat.get("nr_throttled")
            s.cpu_throttled_ns = cstat.get("throttled_time")
            s.cpu_shares = _int(cpu + "/cpu.shares")
            quota = _int(cpu + "/cpu.cfs_quota_us")
            s.cpu_quota_us = quota if quota is not None and quota > 0 else None
            s.cpu_period_us = _int(cpu + "/cpu.cfs_period_us")

        pids = self._v1_dir("pids", rel)
        if pids is not None:
            s.pids_current = _int(pids + "/pids.current")
            s.pids_max = _int(pids + "/pids.max")

        blkio = self._v1_dir("blkio", rel)
        if blkio is not None:
            s.blkio = _blkio_v1(blkio, "blkio.throttle.io_service_bytes_recursive",
                                "blkio.throttle.io_serviced_recursive")
            if not s.blkio:  # with the BFQ scheduler the throttle files may stay empty
                s.blkio = _blkio_v1(blkio, "blkio.bfq.io_service_bytes_recursive",
                                    "blkio.bfq.io_serviced_recursive")

    # ---- v2 --------------------------------------------------------------------------

    def _v2(self, d: str, s: CgroupSample) -> None:
        cstat = _kv(d + "/cpu.stat")
        if "usage_usec" in cstat:
            s.cpu_usage_ns = cstat["usage_usec"] * 1000
            s.cpu_user_ns = cstat.get("user_usec", 0) * 1000
            s.cpu_system_ns = cstat.get("system_usec", 0) * 1000
        s.cpu_periods = cstat.get("nr_periods")
        s.cpu_throttled_periods = cstat.get("nr_throttled")
        if "throttled_usec" in cstat:
            s.cpu_throttled_ns = cstat["throttled_usec"] * 1000
        weight = _int(d + "/cpu.weight")
        if weight is not None:  # the inverse of the OCI shares -> weight mapping
            s.cpu_shares = 2 + (weight - 1) * 262142 // 9999
        cpu_max = _words(d + "/cpu.max")
        if len(cpu_max) == 2:
            s.cpu_quota_us = None if cpu_max[0] == "max" else int(cpu_max[0])
            s.cpu_period_us = int(cpu_max[1])

        stat = _kv(d + "/memory.stat")
        s.memory_usage = _int(d + "/memory.current")
        if s.memory_usage is not None:
            s.memory_working_set = max(s.memory_usage - stat.get("inactive_file", 0), 0)
        s.memory_rss = stat.get("anon")
        s.memory_cache = stat.get("file")
        s.memory_mapped_file = stat.get("file_mapped")
        s.page_faults = stat.get("pgfault")
        s.major_page_faults = stat.get("pgmajfault")
        if "kernel" in stat:  # Linux 6.1+
            s.memory_kernel = stat["kernel"]
        elif "kernel_stack" in stat:
            s.memory_kernel = sum(stat.get(k, 0) for k in ("kernel_stack", "pagetables", "percpu",
                                                             "sock", "slab"))
        s.memory_max_usage = _int(d + "/memory.peak")
        events = _kv(d + "/memory.events")
        s.memory_failcnt = events.get("max")
        s.oom_kills = events.get("oom_kill")
        s.memory_limit = _int(d + "/memory.max")
        s.memory_reservation = _int(d + "/memory.low")
        s.memory_swap_usage = _int(d + "/memory.swap.current")
        s.memory_swap_limit = _int(d + "/memory.swap.max")

        s.pids_current = _int(d + "/pids.current")
        s.pids_max = _int(d + "/pids.max")
        s.blkio = _blkio_v2(d + "/io.stat")


# ---- file parsing -----------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        # A missing file is a controller or kernel feature this host lacks; EINVAL or
        # ENODEV come from files a kernel lists but cannot answer for this cgroup.
        return None


def _int(path: str) -> int | None:
    """A one-number file; "max" (v2 for no limit) and absent files are None."""
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _words(path: str) -> list[str]:
    text = _read(path)
    return text.split() if text else []


def _kv(path: str) -> dict[str, int]:
    """A flat keyed file: "key value" per line."""
    out: dict[str, int] = {}
    text = _read(path)
    if not text:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= _UNLIMITED else value


def _device(text: str) -> tuple[int, int] | None:
    major, sep, minor = text.partition(":")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def _blkio_v1(d: str, bytes_file: str, ios_file: str) -> list[BlkioEntry]:
    """Lines "MAJ:MIN Op value", per device and operation (Read, Write, Sync, ... Total)."""
    def table(path: str) -> dict[tuple[int, int, str], int]:
        found: dict[tuple[int, int, str], int] = {}
        for line in (_read(path) or "").splitlines():
            parts = line.split()
            dev = _device(parts[0]) if len(parts) == 3 else None
            if dev is not None and parts[1] in ("Read", "Write"):
                found[(*dev, parts[1])] = int(parts[2])
        return found

    nbytes, ios = table(f"{d}/{bytes_file}"), table(f"{d}/{ios_file}")
    return [BlkioEntry(k[0], k[1], k[2], nbytes.get(k, 0), ios.get(k, 0))
            for k in sorted(set(nbytes) | set(ios))]


def _blkio_v2(path: str) -> list[BlkioEntry]:
    """Lines "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N"."""
    out: list[BlkioEntry] = []
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        dev = _device(parts[0]) if parts else None
        if dev is None:
            continue
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        out.append(BlkioEntry(*dev, "Read", int(kv.get("rbytes", 0)), int(kv.get("rios", 0))))
        out.append(BlkioEntry(*dev, "Write", int(kv.get("wbytes", 0)), int(kv.get("wios", 0))))
    return out


def _psi(d: str, s: CgroupSample) -> None:
    """Lines "some avg10=0.00 avg60=0.00 avg300=0.00 total=N" (and "full ...")."""
    for resource in ("cpu", "memory", "io"):
        text = _read(f"{d}/{resource}.pressure")
        if not text:
            continue
        kinds: dict[str, Psi] = {}
        for line in text.splitlines():
            kind, *pairs = line.split()
            kv = dict(p.split("=", 1) for p in pairs if "=" in p)
            try:
                kinds[kind] = Psi(int(kv["total"]), float(kv["avg10"]), float(kv["avg60"]),
                                  float(kv["avg300"]))
            except (KeyError, ValueError):
                continue
        if kinds:
            s.psi[resource] = kinds
