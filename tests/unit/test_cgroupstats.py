"""cgroup v1 and v2 readers against fixture trees shaped like the kernel's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.cgroupstats import CgroupReader
from runtime.cgroups import Hierarchy
from runtime.stats import _Rates, sum_samples

CG = "/criservice/abc123"
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")

PSI = ("some avg10=1.50 avg60=0.50 avg300=0.10 total=2000\n"
       "full avg10=1.00 avg60=0.25 avg300=0.05 total=1000\n")


def _files(root: Path, files: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)


@pytest.fixture
def v1(tmp_path: Path) -> CgroupReader:
    """A hybrid host: v1 controllers each in their own hierarchy, and the unified one."""
    m = tmp_path / "v1"
    _files(m / "memory" / CG.lstrip("/"), {
        "memory.usage_in_bytes": "10485760\n",
        "memory.max_usage_in_bytes": "20971520\n",
        "memory.limit_in_bytes": "67108864\n",
        "memory.soft_limit_in_bytes": "9223372036854771712\n",
        "memory.memsw.usage_in_bytes": "11534336\n",
        "memory.memsw.limit_in_bytes": "9223372036854771712\n",
        "memory.kmem.usage_in_bytes": "524288\n",
        "memory.failcnt": "3\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "memory.stat": ("cache 999\nrss 999\ntotal_cache 4194304\ntotal_rss 5242880\n"
                        "total_mapped_file 1048576\ntotal_pgfault 730\ntotal_pgmajfault 5\n"
                        "total_inactive_file 2097152\ntotal_swap 0\n"),
    })
    _files(m / "cpuacct" / CG.lstrip("/"), {
        "cpuacct.usage": "2761255312\n", "cpuacct.stat": "user 275\nsystem 10\n"})
    _files(m / "cpu" / CG.lstrip("/"), {
        "cpu.stat": "nr_periods 100\nnr_throttled 7\nthrottled_time 123456\nnr_bursts 0\n",
        "cpu.shares": "512\n", "cpu.cfs_quota_us": "20000\n", "cpu.cfs_period_us": "100000\n"})
    _files(m / "pids" / CG.lstrip("/"), {"pids.current": "4\n", "pids.max": "max\n", "cgroup.procs": "10\n11\n"})
    _files(m / "blkio" / CG.lstrip("/"), {
        "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 1\n"
                                                      "8:0 Total 12288\nTotal 12288\n",
        "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n"})
    _files(m / "unified" / CG.lstrip("/"), {"cpu.pressure": PSI, "memory.pressure": PSI})
    return CgroupReader([
        Hierarchy(str(m / "memory"), 1, ("memory",)), Hierarchy(str(m / "cpuacct"), 1, ("cpuacct",)),
        Hierarchy(str(m / "cpu"), 1, ("cpu",)), Hierarchy(str(m / "pids"), 1, ("pids",)),
        Hierarchy(str(m / "blkio"), 1, ("blkio",)), Hierarchy(str(m / "unified"), 2, ())])


@pytest.fixture
def v2(tmp_path: Path) -> CgroupReader:
    m = tmp_path / "v2"
    _files(m / CG.lstrip("/"), {
        "cpu.stat": "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 10\n"
                    "nr_throttled 1\nthrottled_usec 40\n",
        "cpu.weight": "100\n", "cpu.max": "max 100000\n",
        "memory.current": "10485760\n", "memory.max": "max\n", "memory.low": "0\n", "memory.peak": "30000000\n",
        "memory.swap.current": "4096\n", "memory.swap.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
        "memory.stat": "anon 5242880\nfile 4194304\nkernel 65536\nfile_mapped 1024\n"
                       "inactive_file 1048576\npgfault 100\npgmajfault 2\n",
        "pids.current": "3\n", "pids.max": "1024\n", "cgroup.procs": "7\n",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        "cpu.pressure": PSI, "memory.pressure": PSI, "io.pressure": PSI})
    return CgroupReader([Hierarchy(str(m), 2, ())])


def test_v1_numbers(v1: CgroupReader) -> None:
    assert v1.version == 1
    s = v1.read(CG)
    assert s.timestamp_ns > 0
    assert s.cpu_usage_ns == 2761255312
    assert (s.cpu_user_ns, s.cpu_system_ns) == (275 * TICK_NS, 10 * TICK_NS)
    assert (s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_ns) == (100, 7, 123456)
    assert (s.cpu_shares, s.cpu_quota_us, s.cpu_period_us) == (512, 20000, 100000)
    assert s.memory_usage == 10485760
    assert s.memory_working_set == 10485760 - 2097152       # usage less inactive file pages
    assert (s.memory_rss, s.memory_cache, s.memory_mapped_file) == (5242880, 4194304, 1048576)
    assert (s.page_faults, s.major_page_faults) == (730, 5)
    assert s.memory_limit == 67108864 and s.memory_available == 67108864 - s.memory_working_set
    assert s.memory_reservation is None and s.memory_swap_limit is None  # "unlimited" in v1 spelling
    assert s.memory_swap_usage == 11534336 - 10485760
    assert (s.memory_kernel, s.memory_max_usage, s.memory_failcnt, s.oom_kills) == (524288, 20971520, 3, 2)
    assert (s.pids_current, s.pids_max) == (4, None)
    assert [(e.major, e.minor, e.operation, e.bytes, e.ios) for e in s.blkio] == [
        (8, 0, "Read", 4096, 1), (8, 0, "Write", 8192, 2)]
    # Pressure comes from the unified hierarchy of a hybrid host, in its own units.
    assert s.psi["cpu"]["some"].total_us == 2000 and s.psi["cpu"]["full"].avg10 == 1.0
    assert "io" not in s.psi
    assert v1.processes(CG) == [10, 11]


def test_v2_numbers(v2: CgroupReader) -> None:
    assert v2.version == 2
    s = v2.read(CG)
    assert (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns) == (5_000_000, 3_000_000, 2_000_000)
    assert (s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_ns) == (10, 1, 40_000)
    assert s.cpu_shares == 2 + 99 * 262142 // 9999            # weight 100 is about 1024 shares
    assert s.cpu_quota_us is None and s.cpu_period_us == 100000
    assert s.memory_usage == 10485760 and s.memory_working_set == 10485760 - 1048576
    assert (s.memory_rss, s.memory_cache, s.memory_mapped_file, s.memory_kernel) == (5242880, 4194304, 1024, 65536)
    assert s.memory_limit is None and s.memory_available is None
    assert (s.memory_max_usage, s.memory_failcnt, s.oom_kills) == (30000000, 9, 1)
    assert (s.memory_swap_usage, s.memory_swap_limit, s.memory_reservation) == (4096, None, 0)
    assert (s.page_faults, s.major_page_faults) == (100, 2)
    assert (s.pids_current, s.pids_max) == (3, 1024)
    assert [(e.operation, e.bytes, e.ios) for e in s.blkio] == [("Read", 4096, 1), ("Write", 8192, 2)]
    assert set(s.psi) == {"cpu", "memory", "io"}
    assert v2.processes(CG) == [7]


def test_systemd_paths_resolve_to_the_scope(tmp_path: Path) -> None:
    m = tmp_path / "v2"
    _files(m / "kubepods.slice/kubepods-pod1.slice/cri-criservice-abc.scope",
           {"cpu.stat": "usage_usec 7\n", "memory.current": "1\n"})
    s = CgroupReader([Hierarchy(str(m), 2, ())]).read("kubepods-pod1.slice:cri-criservice:abc")
    assert s.cpu_usage_ns == 7000 and s.memory_usage == 1


@pytest.mark.parametrize("fixture", ["v1", "v2"])
def test_a_missing_cgroup_is_file_not_found(fixture: str, request: pytest.FixtureRequest) -> None:
    reader: CgroupReader = request.getfixturevalue(fixture)
    with pytest.raises(FileNotFoundError):
        reader.read("/criservice/gone")
    assert reader.processes("/criservice/gone") == []


def test_missing_files_are_unknown_not_zero(tmp_path: Path) -> None:
    m = tmp_path / "bare"
    _files(m / "c", {"memory.usage_in_bytes": "5\n"})
    s = CgroupReader([Hierarchy(str(m), 1, ("memory",))]).read("/c")
    assert s.memory_usage == 5 and s.memory_working_set == 5
    assert s.cpu_usage_ns is None and s.oom_kills is None and s.pids_current is None and s.psi == {}


def test_pod_totals_are_sums_and_limits_stay_unknown(v1: CgroupReader, v2: CgroupReader) -> None:
    a, b = v1.read(CG), v2.read(CG)
    total = sum_samples([a, b])
    assert total is not None
    assert total.cpu_usage_ns == a.cpu_usage_ns + b.cpu_usage_ns  # type: ignore[operator]
    assert total.memory_working_set == a.memory_working_set + b.memory_working_set  # type: ignore[operator]
    assert total.memory_limit is None and len(total.blkio) == 4
    assert sum_samples([]) is None


def test_cpu_rate_needs_two_samples_a_second_apart(v2: CgroupReader) -> None:
    rates = _Rates()
    s = v2.read(CG)
    assert rates.update("c", s) is None
    s.timestamp_ns += 500_000_000
    assert rates.update("c", s) is None        # too close to the first
    s.timestamp_ns += 1_500_000_000
    s.cpu_usage_ns += 1_000_000_000  # type: ignore[operator]
    assert rates.update("c", s) == 500_000_000  # one CPU-second in two seconds: half a core
