"""Prometheus metrics of the gRPC face, in a registry owned by one daemon."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, CounterMetricFamily
from prometheus_client.registry import Collector

# Most CRI calls finish in well under a second; pulls and stops can take minutes.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1, 2.5, 5, 10, 30, 60, 120, 300)

PHASE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# runtime.pods.Phases names -> the phase label; "cgroup" is the pod cgroup the kubelet makes.
POD_PHASES = {"files": "files", "namespaces": "namespaces", "network": "cni", "infra": "infra",
              "cgroup": "cgroup"}
# The rest of a pod's start timeline comes from the RPCs the kubelet calls for it.
RPC_PHASES = {"PullImage": "image", "CreateContainer": "create", "StartContainer": "start"}


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterator[GaugeMetricFamily | CounterMetricFamily]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return self._collect()


# Server streams that last as long as their client listens: no latency to speak of.
SUBSCRIPTIONS = frozenset({"GetContainerEvents"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.operations = Counter(
            "criservice_grpc_operations", "CRI requests handled, by method and status code.",
            ["method", "code"], registry=self.registry)
        self.errors = Counter(
            "criservice_grpc_errors", "CRI requests that failed, by method and status code.",
            ["method", "code"], registry=self.registry)
        self.latency = Histogram(
            "criservice_grpc_operation_duration_seconds", "Time to answer a CRI request, by method.",
            ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)

        self.pulls = Counter(
            "criservice_image_pulls", "Image pulls, by result (success or failure).",
            ["result"], registry=self.registry)
        self.pull_bytes = Counter(
            "criservice_image_pull_bytes", "Compressed layer bytes received from registries.",
            registry=self.registry)
        self.pull_duration = Histogram(
            "criservice_image_pull_duration_seconds", "Time to pull an image, shared pulls counted once.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600), registry=self.registry)
        self.layers = Counter(
            "criservice_image_pull_layers", "Layers a pull needed: fetched, or reused from the store.",
            ["source"], registry=self.registry)

        self.phases = Histogram(
            "criservice_pod_start_phase_duration_seconds",
            "Time of each phase of starting a pod: image pull, namespaces, CNI, cgroup, infra, "
            "container create and start.", ["phase"], buckets=PHASE_BUCKETS, registry=self.registry)
        self.oom_kills = Counter(
            "criservice_container_oom_kills", "Containers whose exit the kernel's OOM killer caused.",
            registry=self.registry)

    def observe_pod_phases(self, phases_ms: dict[str, float]) -> None:
        """The phase timings of one RunPodSandbox (runtime.pods.Phases), by our phase names."""
        for name, ms in phases_ms.items():
            self.phases.labels(POD_PHASES.get(name, name)).observe(ms / 1000)

    def observe_oom(self, *_: object) -> None:
        self.oom_kills.inc()

    def watch(self, collect: Callable[[], Iterator[GaugeMetricFamily | CounterMetricFamily]]) -> None:
        """Metrics computed at scrape time (states of records, event subscribers)."""
        self.registry.register(_Callback(collect))

    def observe_pull(self, seconds: float, nbytes: int, fetched: int, reused: int, ok: bool) -> None:
        self.pulls.labels("success" if ok else "failure").inc()
        self.pull_bytes.inc(nbytes)
        self.pull_duration.observe(seconds)
        self.layers.labels("fetched").inc(fetched)
        self.layers.labels("reused").inc(reused)

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.operations.labels(method, code).inc()
        if code == "OK" and method in RPC_PHASES:
            self.phases.labels(RPC_PHASES[method]).observe(seconds)
        if code != "OK":
            self.errors.labels(method, code).inc()
        if method not in SUBSCRIPTIONS:
            self.latency.labels(method).observe(seconds)

    def serve(self, address: str) -> None:
        """Serve /metrics on HOST:PORT from a background thread."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry)
