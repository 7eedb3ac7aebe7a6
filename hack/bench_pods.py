"""Pod benchmark driver: criservice against containerd over the CRI, in one run.

Run by hack/bench-pods, which sets both runtimes up. Every timing is a gRPC call
made here with the project's stubs (no crictl process start-up on either side),
and both runtimes get the same requests, interleaved so that whatever else runs
on the machine falls on both alike:

  1. sequential start: RunPodSandbox + CreateContainer + StartContainer of a
     busybox `sleep 3600`, one pod after another (median and p95);
  2. parallel start: 10 such pods at once, the time until all ten run;
  3. memory per pod at 20 running pods: the daemon's PSS growth plus the PSS of
     every process the runtime keeps per pod (conmon for criservice; shim and
     pause for containerd), but not the workload, divided by the pod count;
  4. ListContainers and ListPodSandbox latency with 100 pods of one container.

The pod and container configs are what the kubelet sends for a plain pod
(PID namespace mode CONTAINER), without a cgroup parent. One more row measures
the sequential start with the CRI's default PID mode POD (a shared PID
namespace, for which criservice starts an infra process as containerd always does).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from api import api_pb2 as pb  # noqa: E402
from api import api_pb2_grpc as rpc  # noqa: E402

BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
PAUSE = "registry.k8s.io/pause:3.10"
LABEL = "criservice-bench"            # every pod and container made here carries it
NAMESPACE = "bench-pods"
CALL_TIMEOUT = 120.0
RUNNING = pb.ContainerState.CONTAINER_RUNNING

TARGETS = {"sequential_ratio": 0.6, "memory_ratio": 0.3, "list_ms": 2.0}


@dataclass
class Runtime:
    name: str
    endpoint: str
    daemon_pid: int
    monitor_comm: str      # how the per-pod monitor processes are found: their comm starts
    monitor_mark: str      # with this, and their command line contains this
    handler: str = ""      # the RuntimeClass handler its pods ask for ("" = the default)
    pods: list[str] = field(default_factory=list)
    workloads: dict[str, int] = field(default_factory=dict)   # container id -> pid
    count: int = 0

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.endpoint, options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        self.rt = rpc.RuntimeServiceStub(self.channel)
        self.img = rpc.ImageServiceStub(self.channel)

    def next_name(self) -> str:
        self.count += 1
        return f"bench-{self.count}"


# ---- requests -------------------------------------------------------------------------


def pod_config(name: str, log_root: str, run_id: str, pid_mode: int) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace=NAMESPACE, attempt=0),
        hostname=name, log_directory=os.path.join(log_root, name), labels={LABEL: run_id},
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(pid=pid_mode))))


def container_config(run_id: str, pid_mode: int) -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="sleep", attempt=0), image=pb.ImageSpec(image=BUSYBOX),
        command=["sleep", "3600"], log_path="sleep_0.log", labels={LABEL: run_id},
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(pid=pid_mode))))


@dataclass
class Started:
    sandbox_id: str
    container_id: str
    total: float           # seconds, RunPodSandbox called to StartContainer returned
    steps: dict[str, float]


def start_pod(r: Runtime, log_root: str, run_id: str, pid_mode: int) -> Started:
    """One pod with one running container; the log directory is made first, as the kubelet does."""
    cfg = pod_config(r.next_name(), os.path.join(log_root, r.name), run_id, pid_mode)
    os.makedirs(cfg.log_directory, exist_ok=True)
    ccfg = container_config(run_id, pid_mode)
    t0 = time.perf_counter()
    sandbox_id = r.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg, runtime_handler=r.handler),
                                    timeout=CALL_TIMEOUT).pod_sandbox_id
    r.pods.append(sandbox_id)
    t1 = time.perf_counter()
    container_id = r.rt.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=ccfg, sandbox_config=cfg), timeout=CALL_TIMEOUT).container_id
    t2 = time.perf_counter()
    r.rt.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=CALL_TIMEOUT)
    t3 = time.perf_counter()
    status = r.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=container_id, verbose=True),
                                  timeout=CALL_TIMEOUT)
    if status.status.state != RUNNING:
        raise RuntimeError(f"{r.name}: container {container_id} is not running after StartContainer: "
                           f"{status.status}")
    r.workloads[container_id] = int(json.loads(status.info.get("info", "{}")).get("pid", 0))
    return Started(sandbox_id, container_id, t3 - t0,
                   {"run_pod": t1 - t0, "create": t2 - t1, "start": t3 - t2})


def remove_pods(r: Runtime, run_id: str) -> None:
    """Every pod made here (those recorded and any other carrying this run's label), as
    the kubelet removes a pod: its containers killed first (no grace period: the
    workload is PID 1 of its namespace and ignores SIGTERM), then the sandbox."""
    ids = set(r.pods)
    containers: dict[str, list[str]] = {}
    try:
        listed = r.rt.ListPodSandbox(pb.ListPodSandboxRequest(
            filter=pb.PodSandboxFilter(label_selector={LABEL: run_id})), timeout=CALL_TIMEOUT)
        ids |= {p.id for p in listed.items}
        for c in r.rt.ListContainers(pb.ListContainersRequest(), timeout=CALL_TIMEOUT).containers:
            containers.setdefault(c.pod_sandbox_id, []).append(c.id)
    except grpc.RpcError as e:
        print(f"bench-pods: {r.name}: listing pods to remove: {e.details()}", file=sys.stderr)

    def remove(sandbox_id: str) -> None:
        for container_id in containers.get(sandbox_id, []):
            r.rt.StopContainer(pb.StopContainerRequest(container_id=container_id, timeout=0),
                               timeout=CALL_TIMEOUT)
        r.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=CALL_TIMEOUT)
        r.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=CALL_TIMEOUT)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for sandbox_id, fut in [(i, pool.submit(remove, i)) for i in ids]:
            try:
                fut.result()
            except grpc.RpcError as e:
                print(f"bench-pods: {r.name}: removing pod {sandbox_id}: {e.details()}", file=sys.stderr)
    r.pods.clear()
    r.workloads.clear()


def wait_ready(r: Runtime, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while True:
        status = r.rt.Status(pb.StatusRequest(), timeout=CALL_TIMEOUT)
        not_ready = [c.type for c in status.status.conditions if not c.status]
        if not not_ready:
            return
        if time.monotonic() > end:
            raise RuntimeError(f"{r.name}: not ready after {deadline_s:g} s: {', '.join(not_ready)}")
        time.sleep(0.2)


# ---- memory ---------------------------------------------------------------------------


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss line in /proc/{pid}/smaps_rollup")


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, comm, command line) of every process on the host."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        out[int(entry)] = (ppid, comm, cmdline)
    return out


def pod_processes(r: Runtime) -> list[int]:
    """The runtime's per-pod monitors and everything below them, except the workloads."""
    procs = _processes()
    monitors = [pid for pid, (_, comm, cmd) in procs.items()
                if comm.startswith(r.monitor_comm) and r.monitor_mark in cmd]
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    workloads = set(r.workloads.values())
    found, todo = [], list(monitors)
    while todo:
        pid = todo.pop()
        if pid in workloads or pid == r.daemon_pid:
            continue
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def memory_sample(r: Runtime) -> dict[str, Any]:
    pids = pod_processes(r)
    names: dict[str, int] = {}
    procs = _processes()
    for pid in pids:
        names[procs[pid][1]] = names.get(procs[pid][1], 0) + 1
    return {"daemon_pss_kib": pss_kib(r.daemon_pid), "pod_processes": names,
            "pod_processes_pss_kib": sum(pss_kib(p) for p in pids)}


# ---- measurements ---------------------------------------------------------------------


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def interleaved(runtimes: list[Runtime], rounds: int) -> Iterable[tuple[int, Runtime]]:
    """Each round visits every runtime; who goes first alternates."""
    for i in range(rounds):
        for r in (runtimes if i % 2 == 0 else list(reversed(runtimes))):
            yield i, r


def sequential(runtimes: list[Runtime], n: int, log_root: str, run_id: str,
               pid_mode: int) -> dict[str, list[Started]]:
    out: dict[str, list[Started]] = {r.name: [] for r in runtimes}
    for _, r in interleaved(runtimes, n):
        out[r.name].append(start_pod(r, log_root, run_id, pid_mode))
    return out


def parallel(runtimes: list[Runtime], width: int, rounds: int, log_root: str,
             run_id: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {r.name: [] for r in runtimes}
    with concurrent.futures.ThreadPoolExecutor(width) as pool:
        for _, r in interleaved(runtimes, rounds):
            t0 = time.perf_counter()
            futures = [pool.submit(start_pod, r, log_root, run_id, pb.NamespaceMode.CONTAINER)
                       for _ in range(width)]
            for fut in futures:
                fut.result()
            out[r.name].append(time.perf_counter() - t0)
    return out


def fill(r: Runtime, total: int, log_root: str, run_id: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for fut in [pool.submit(start_pod, r, log_root, run_id, pb.NamespaceMode.CONTAINER)
                    for _ in range(total - len(r.workloads))]:
            fut.result()


def list_latency(runtimes: list[Runtime], calls: int, expect: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per call; each RPC warmed up first, the calls alternating between runtimes."""
    rpcs: dict[str, Callable[[Runtime], int | None]] = {
        "ListContainers": lambda r: len(r.rt.ListContainers(pb.ListContainersRequest(),
                                                            timeout=CALL_TIMEOUT).containers),
        "ListPodSandbox": lambda r: len(r.rt.ListPodSandbox(pb.ListPodSandboxRequest(),
                                                            timeout=CALL_TIMEOUT).items),
        # The floor: one round trip through the server that carries no items.
        "Version": lambda r: r.rt.Version(pb.VersionRequest(), timeout=CALL_TIMEOUT) and None,
    }
    out: dict[str, dict[str, list[float]]] = {r.name: {name: [] for name in rpcs} for r in runtimes}
    for name, call in rpcs.items():
        for r in runtimes:
            got = call(r)
            if got is not None and got != expect:
                raise RuntimeError(f"{r.name}: {name} returned {got} items, expected {expect}")
            for _ in range(20):
                call(r)
        for _, r in interleaved(runtimes, calls):
            t0 = time.perf_counter()
            call(r)
            out[r.name][name].append(time.perf_counter() - t0)
    return out


def step_medians(started: list[Started]) -> dict[str, float]:
    """Milliseconds per RPC of the pod starts, median."""
    return {step: statistics.median(s.steps[step] * 1000.0 for s in started) for step in started[0].steps}


def recorded_phases(r: Runtime, sandbox_ids: list[str]) -> dict[str, float]:
    """Median per RunPodSandbox phase where the runtime records them (criservice's
    phasesMs in `crictl inspectp`; containerd has none)."""
    per_phase: dict[str, list[float]] = {}
    for sandbox_id in sandbox_ids:
        status = r.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True),
                                       timeout=CALL_TIMEOUT)
        for phase, ms in json.loads(status.info.get("info", "{}")).get("phasesMs", {}).items():
            per_phase.setdefault(phase, []).append(ms)
    return {phase: round(statistics.median(v), 2) for phase, v in per_phase.items()}


def run(runtimes: list[Runtime], args: argparse.Namespace) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:12]
    ms = 1000.0
    result: dict[str, Any] = {"runtimes": {}, "settings": vars(args).copy(), "load_before": os.getloadavg()}
    for r in runtimes:
        wait_ready(r)
        for image in (BUSYBOX, PAUSE):
            r.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=600)
        result["runtimes"][r.name] = {"version": r.rt.Version(pb.VersionRequest(), timeout=CALL_TIMEOUT).runtime_version}
    try:
        # Warm-up: the first pod makes the bridge and fills caches; it does not count.
        for r in runtimes:
            start_pod(r, args.log_root, run_id, pb.NamespaceMode.CONTAINER)
            remove_pods(r, run_id)
        before = {r.name: memory_sample(r) for r in runtimes}

        seq = sequential(runtimes, args.sequential, args.log_root, run_id, pb.NamespaceMode.CONTAINER)
        time.sleep(1)  # let the last start's transient allocations settle before reading PSS
        after = {r.name: memory_sample(r) for r in runtimes}
        for r in runtimes:
            res = result["runtimes"][r.name]
            totals = [s.total * ms for s in seq[r.name]]
            res["sequential_ms"] = {"median": statistics.median(totals), "p95": p95(totals), "all": totals}
            res["sequential_steps_median_ms"] = step_medians(seq[r.name])
            growth = after[r.name]["daemon_pss_kib"] - before[r.name]["daemon_pss_kib"]
            kept = after[r.name]["pod_processes_pss_kib"] - before[r.name]["pod_processes_pss_kib"]
            pods = args.sequential
            res["memory"] = {
                "pods": pods, "daemon_pss_before_kib": before[r.name]["daemon_pss_kib"],
                "daemon_pss_after_kib": after[r.name]["daemon_pss_kib"],
                "pod_processes": after[r.name]["pod_processes"],
                "pod_processes_pss_kib": after[r.name]["pod_processes_pss_kib"],
                "per_pod_kib": (growth + kept) / pods,
                "daemon_growth_per_pod_kib": growth / pods,
                "pod_processes_per_pod_kib": kept / pods,
            }
            res["phases_median_ms"] = recorded_phases(r, [s.sandbox_id for s in seq[r.name]])

        par = parallel(runtimes, args.parallel, args.parallel_rounds, args.log_root, run_id)
        for r in runtimes:
            result["runtimes"][r.name]["parallel_ms"] = {
                "median": statistics.median(t * ms for t in par[r.name]), "all": [t * ms for t in par[r.name]]}

        if args.pod_mode:
            pod_seq = sequential(runtimes, args.pod_mode, args.log_root, run_id, pb.NamespaceMode.POD)
            for r in runtimes:
                totals = [s.total * ms for s in pod_seq[r.name]]
                result["runtimes"][r.name]["sequential_pid_pod_ms"] = {
                    "median": statistics.median(totals), "p95": p95(totals), "all": totals,
                    "steps_median_ms": step_medians(pod_seq[r.name]),
                    "phases_median_ms": recorded_phases(r, [s.sandbox_id for s in pod_seq[r.name]])}

        if args.list_calls:   # 0: no list latency (two handlers of one daemon would see both)
            for r in runtimes:
                fill(r, args.list_containers, args.log_root, run_id)
            lists = list_latency(runtimes, args.list_calls, args.list_containers)
            for r in runtimes:
                for name, times in lists[r.name].items():
                    result["runtimes"][r.name][name + "_ms"] = {
                        "median": statistics.median(t * ms for t in times), "p95": p95([t * ms for t in times])}
    finally:
        for r in runtimes:
            remove_pods(r, run_id)
    result["load_after"] = os.getloadavg()
    return result


# ---- report ---------------------------------------------------------------------------


def table(result: dict[str, Any], a: str, b: str) -> str:
    ra, rb = result["runtimes"][a], result["runtimes"][b]
    s = result["settings"]
    rows: list[tuple[str, float, float, str]] = []

    def row(label: str, get: Callable[[dict[str, Any]], float], target: str = "") -> None:
        try:
            rows.append((label, get(ra), get(rb), target))
        except KeyError:
            pass

    seq_target = TARGETS["sequential_ratio"]
    mem_target = TARGETS["memory_ratio"]
    row(f"sequential start, median of {s['sequential']} (ms)", lambda r: r["sequential_ms"]["median"],
        f"ratio <= {seq_target}x")
    row(f"sequential start, p95 of {s['sequential']} (ms)", lambda r: r["sequential_ms"]["p95"])
    for step in ("run_pod", "create", "start"):
        row(f"  {step}, median (ms)", lambda r, step=step: r["sequential_steps_median_ms"][step])
    row(f"{s['parallel']} pods in parallel, all running (ms)*", lambda r: r["parallel_ms"]["median"])
    row(f"memory per pod at {s['sequential']} pods (KiB PSS)", lambda r: r["memory"]["per_pod_kib"],
        f"ratio <= {mem_target}x")
    row("  daemon growth per pod (KiB)", lambda r: r["memory"]["daemon_growth_per_pod_kib"])
    row("  per-pod processes per pod (KiB)", lambda r: r["memory"]["pod_processes_per_pod_kib"])
    row(f"ListContainers, {s['list_containers']} containers, median (ms)",
        lambda r: r["ListContainers_ms"]["median"], f"< {TARGETS['list_ms']:g} ms")
    row(f"ListPodSandbox, {s['list_containers']} pods, median (ms)",
        lambda r: r["ListPodSandbox_ms"]["median"], f"< {TARGETS['list_ms']:g} ms")
    row("ListContainers p95 (ms)", lambda r: r["ListContainers_ms"]["p95"])
    row("ListPodSandbox p95 (ms)", lambda r: r["ListPodSandbox_ms"]["p95"])
    row("Version (no items: the per-call floor), median (ms)", lambda r: r["Version_ms"]["median"])
    row(f"sequential start, PID mode POD, median of {s['pod_mode']} (ms)",
        lambda r: r["sequential_pid_pod_ms"]["median"])

    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'':{width}}{a:>12}{b:>12}{'ratio':>9}   target",
             *(f"{label:{width}}{x:12.2f}{y:12.2f}{(x / y if y else float('nan')):8.2f}x   {target}"
               for label, x, y, target in rows)]
    for name, r in result["runtimes"].items():
        procs = ", ".join(f"{n} x{c}" for n, c in sorted(r["memory"]["pod_processes"].items()))
        lines.append(f"{name} {r['version']}: processes kept for {s['sequential']} pods: {procs or 'none'}")
    for name, r in result["runtimes"].items():
        for mode, phases in (("CONTAINER", r.get("phases_median_ms")),
                             ("POD", r.get("sequential_pid_pod_ms", {}).get("phases_median_ms"))):
            if phases:
                lines.append(f"{name} RunPodSandbox phases, PID mode {mode}, median (ms): "
                             + ", ".join(f"{k} {v:g}" for k, v in phases.items()))
        pod_steps = r.get("sequential_pid_pod_ms", {}).get("steps_median_ms")
        if pod_steps:
            lines.append(f"{name} PID mode POD steps, median (ms): "
                         + ", ".join(f"{k} {v:.1f}" for k, v in pod_steps.items()))
    lines.append(f"* median of {s['parallel_rounds']} rounds; each round starts {s['parallel']} pods at once")
    lines.append("load average before / after: " + " ".join(f"{x:.2f}" for x in result["load_before"])
                 + " / " + " ".join(f"{x:.2f}" for x in result["load_after"]))
    lines.append("")
    lines.extend(verdicts(result, a, b))
    return "\n".join(lines)


def verdicts(result: dict[str, Any], a: str, b: str) -> list[str]:
    ra, rb = result["runtimes"][a], result["runtimes"][b]
    seq = ra["sequential_ms"]["median"] / rb["sequential_ms"]["median"]
    mem = ra["memory"]["per_pod_kib"] / rb["memory"]["per_pod_kib"]

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"
    out = [
        f"target sequential start <= {TARGETS['sequential_ratio']}x {b}: {seq:.3f}x, {met(seq <= TARGETS['sequential_ratio'])}",
        f"target memory per pod <= {TARGETS['memory_ratio']}x {b}: {mem:.3f}x, {met(mem <= TARGETS['memory_ratio'])}",
    ]
    if "ListContainers_ms" in ra:   # absent with --list-calls 0
        lists = max(ra["ListContainers_ms"]["median"], ra["ListPodSandbox_ms"]["median"])
        out.append(f"target list calls < {TARGETS['list_ms']:g} ms at {result['settings']['list_containers']} "
                   f"containers: {lists:.2f} ms, {met(lists < TARGETS['list_ms'])}")
    return out


def parse_runtime(text: str) -> Runtime:
    """NAME=ENDPOINT,pid=PID,monitor=COMM:MARK[,handler=HANDLER]"""
    name, _, rest = text.partition("=")
    endpoint, *opts = rest.split(",")
    kv = dict(o.split("=", 1) for o in opts)
    comm, _, mark = kv["monitor"].partition(":")
    return Runtime(name, endpoint, int(kv["pid"]), comm, mark, kv.get("handler", ""))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime", action="append", type=parse_runtime, required=True,
                   help="NAME=ENDPOINT,pid=DAEMON_PID,monitor=COMM:MARK[,handler=HANDLER] "
                        "(twice: the measured one first)")
    p.add_argument("--log-root", required=True, help="where the pods' log directories go")
    p.add_argument("--sequential", type=int, default=20)
    p.add_argument("--parallel", type=int, default=10)
    p.add_argument("--parallel-rounds", type=int, default=3)
    p.add_argument("--pod-mode", type=int, default=10, help="sequential starts with PID mode POD (0: none)")
    p.add_argument("--list-containers", type=int, default=100)
    p.add_argument("--list-calls", type=int, default=300, help="0: no list latency")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = p.parse_args()
    runtimes: list[Runtime] = args.runtime
    args.runtime = [r.name for r in runtimes]
    if len(runtimes) != 2:
        p.error("--runtime is needed twice")
    if args.list_calls and \
            args.list_containers < args.sequential + args.parallel * args.parallel_rounds + args.pod_mode:
        p.error("--list-containers must be at least the number of pods the other measurements start")
    result = run(runtimes, args)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(table(result, runtimes[0].name, runtimes[1].name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
