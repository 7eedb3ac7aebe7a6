"""Stats benchmark driver: ListContainerStats and ListPodSandboxStats latency with N
running containers (one per pod), criservice against containerd, over the CRI.

Run by hack/bench-stats, which sets both runtimes up; the runtimes, pod removal
and interleaving are hack/bench_pods.py's. Each pod gets a cgroup parent of its
own, as the kubelet gives it (containerd 1.6 refuses pod stats without one).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import uuid
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_pods as bp  # noqa: E402
from bench_pods import pb  # noqa: E402

CALLS: dict[str, Callable[[bp.Runtime], int]] = {
    "ListContainerStats": lambda r: len(r.rt.ListContainerStats(pb.ListContainerStatsRequest(),
                                                                timeout=bp.CALL_TIMEOUT).stats),
    "ListPodSandboxStats": lambda r: len(r.rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(),
                                                                  timeout=bp.CALL_TIMEOUT).stats),
}


def start(r: bp.Runtime, run_id: str) -> None:
    name = r.next_name()
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="bench-stats"),
        labels={bp.LABEL: run_id}, linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=f"/bench-stats/{r.name}-{run_id}-{name}",
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER))))
    pod = r.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=bp.CALL_TIMEOUT).pod_sandbox_id
    r.pods.append(pod)
    ctr = r.rt.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=bp.container_config(run_id, pb.NamespaceMode.CONTAINER), sandbox_config=cfg),
        timeout=bp.CALL_TIMEOUT).container_id
    r.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=bp.CALL_TIMEOUT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime", action="append", type=bp.parse_runtime, required=True,
                   help="NAME=ENDPOINT,pid=DAEMON_PID,monitor=COMM:MARK (twice: the measured one first)")
    p.add_argument("--containers", type=int, default=100)
    p.add_argument("--calls", type=int, default=30)
    args = p.parse_args()
    runtimes: list[bp.Runtime] = args.runtime
    run_id = uuid.uuid4().hex[:8]
    try:
        for r in runtimes:
            bp.wait_ready(r)
            r.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=bp.BUSYBOX)), timeout=bp.CALL_TIMEOUT)
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                for fut in [pool.submit(start, r, run_id) for _ in range(args.containers)]:
                    fut.result()
        ms: dict[tuple[str, str], list[float]] = {}
        for rpc, call in CALLS.items():
            for r in runtimes:  # warm-up, and every pod is there
                if call(r) < args.containers:
                    raise RuntimeError(f"{r.name}: {rpc} returned fewer than {args.containers} items")
            for _, r in bp.interleaved(runtimes, args.calls):
                t0 = bp.time.perf_counter()
                call(r)
                ms.setdefault((r.name, rpc), []).append((bp.time.perf_counter() - t0) * 1000)
    finally:
        for r in runtimes:
            bp.remove_pods(r, run_id)
    a, b = runtimes[0].name, runtimes[1].name
    print(f"{args.containers} running containers, one per pod; {args.calls} calls each, interleaved")
    print(f"{'':22}{a + ' median/p95 ms':>26}{b + ' median/p95 ms':>26}{'ratio':>8}")
    ok = True
    for rpc in CALLS:
        x, y = ms[(a, rpc)], ms[(b, rpc)]
        ratio = statistics.median(x) / statistics.median(y)
        ok &= ratio <= 1.0
        print(f"{rpc:22}{statistics.median(x):>17.1f} / {bp.p95(x):<6.1f}{statistics.median(y):>17.1f} / "
              f"{bp.p95(y):<6.1f}{ratio:>8.2f}")
    print(f"target (no slower than {b}): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
