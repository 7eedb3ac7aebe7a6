"""The cAdvisor-style metric set: descriptors and values agree, names match cAdvisor's."""

from __future__ import annotations

from api import api_pb2 as pb
from criservice.pod_metrics import BASE_LABELS, Fs, Inputs, container_metrics, descriptors, pod_metrics
from runtime.cgroupstats import BlkioEntry, CgroupSample, Psi
from runtime.fsusage import Usage
from runtime.netstats import InterfaceStats, NetworkSample
from runtime.procstats import ProcessStats
from runtime.records import ContainerRecord, SandboxRecord
from runtime.stats import ContainerUsage, PodUsage

# What cAdvisor serves for a container and critest (v1.37) asks every runtime for.
CADVISOR = {
    "container_cpu_usage_seconds_total", "container_cpu_user_seconds_total", "container_cpu_system_seconds_total",
    "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total", "container_memory_cache", "container_memory_rss",
    "container_memory_kernel_usage", "container_memory_mapped_file", "container_memory_swap",
    "container_memory_failcnt", "container_memory_usage_bytes", "container_memory_max_usage_bytes",
    "container_memory_working_set_bytes", "container_memory_failures_total", "container_oom_events_total",
    "container_processes", "container_threads", "container_threads_max", "container_file_descriptors",
    "container_sockets", "container_fs_usage_bytes", "container_fs_limit_bytes", "container_fs_inodes_total",
    "container_fs_inodes_free", "container_fs_reads_bytes_total", "container_fs_writes_bytes_total",
    "container_fs_reads_total", "container_fs_writes_total", "container_blkio_device_usage_total",
    "container_network_receive_bytes_total", "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total", "container_network_receive_packets_total",
    "container_network_transmit_bytes_total", "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total", "container_network_transmit_packets_total",
    "container_spec_cpu_period", "container_spec_cpu_shares", "container_spec_memory_limit_bytes",
    "container_spec_memory_swap_limit_bytes", "container_start_time_seconds", "container_last_seen",
}


def _inputs() -> tuple[Inputs, PodUsage]:
    psi = {"some": Psi(3_000_000, 1, 1, 1), "full": Psi(2_000_000, 1, 1, 1)}
    cg = CgroupSample(10 * 10**9, cpu_usage_ns=7_500_000_000, cpu_user_ns=5 * 10**9, cpu_system_ns=2 * 10**9,
                      cpu_periods=1, cpu_throttled_periods=0, cpu_throttled_ns=0, cpu_shares=1024,
                      cpu_quota_us=20000, cpu_period_us=100000, memory_usage=100, memory_working_set=90,
                      memory_rss=50, memory_cache=40, memory_mapped_file=1, memory_kernel=2, memory_max_usage=200,
                      memory_failcnt=0, memory_limit=1 << 26, page_faults=9, major_page_faults=1, oom_kills=0,
                      pids_current=2, pids_max=None, blkio=[BlkioEntry(8, 0, "Read", 4096, 1), BlkioEntry(8, 0, "Write", 512, 2)],
                      psi={"cpu": psi, "memory": psi, "io": psi})
    rec = ContainerRecord("c" * 64, "s" * 64, "app", 0, "running", 10**9, "sha256:x", "busybox", b"",
                          started_at=2 * 10**9)
    usage = ContainerUsage(rec, cg, None, 1, Usage("/x", 4096, 3, 1))
    pod = PodUsage(SandboxRecord("s" * 64, "web", "ns", "uid", 0, "ready", 1, "runc", b""), cg, None, 1,
                   NetworkSample(5, [InterfaceStats("eth0", 10, 1, 0, 0, 20, 2, 0, 0)]), [usage])
    return Inputs(usage, cg, ProcessStats(5, 1, 1024), Fs("/dev/vda", 10**9, 1000, 900)), pod


def test_descriptors_cover_cadvisor_with_help_and_labels() -> None:
    descs = {d.name: d for d in descriptors()}
    assert CADVISOR <= set(descs)
    for d in descs.values():
        assert d.help and list(d.label_keys[:len(BASE_LABELS)]) == list(BASE_LABELS)
    assert list(descs["container_cpu_usage_seconds_total"].label_keys)[-1] == "cpu"
    assert list(descs["container_network_receive_bytes_total"].label_keys)[-1] == "interface"


def test_every_value_has_one_label_value_per_key_and_every_descriptor_a_value() -> None:
    inputs, pod = _inputs()
    keys = {d.name: len(d.label_keys) for d in descriptors()}
    metrics = list(container_metrics(inputs, "ns", "web")) + list(pod_metrics(pod))
    for m in metrics:
        assert len(m.label_values) == keys[m.name], m.name
    assert {m.name for m in metrics} == set(keys)
    by_name = {m.name: m for m in metrics}
    cpu = by_name["container_cpu_usage_seconds_total"]
    assert cpu.value.value == 7 and cpu.metric_type == pb.MetricType.COUNTER  # whole seconds, as the CRI carries
    assert list(cpu.label_values) == ["app", "c" * 64, "busybox", "app", "ns", "web", "total"]
    assert by_name["container_memory_working_set_bytes"].value.value == 90
    assert by_name["container_pressure_cpu_waiting_seconds_total"].value.value == 3
    assert by_name["container_start_time_seconds"].value.value == 2
    assert by_name["container_network_transmit_bytes_total"].value.value == 20


def test_values_missing_on_a_host_are_left_out_not_invented() -> None:
    inputs, _ = _inputs()
    bare = Inputs(inputs.usage, CgroupSample(1), ProcessStats(0, 0, None), inputs.fs)
    names = {m.name for m in container_metrics(bare, "ns", "web")}
    assert not any(n.startswith("container_pressure_") for n in names)
    assert "container_spec_cpu_quota" not in names and "container_fs_reads_total" not in names
    assert "container_memory_usage_bytes" in names  # the usual ones report 0, as cAdvisor does
