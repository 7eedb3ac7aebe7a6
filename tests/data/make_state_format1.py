"""Records a state database in format 1 (the untyped `details` bag), for
tests/unit/test_state_upgrade.py.

Run it against a criservice of commit 64d1f73, the last one that wrote format 1,
started by `hack/e2e-env.sh up` from a checkout of that commit:

    python tests/data/make_state_format1.py $E2E_DIR/state/state.db > tests/data/state-format1.json

It makes pods and containers that use what the bag held (an infra process, an
image volume, port mappings, sysctls, DNS, a pod security context, updated
resources, a container that exited, one on the host network), records what
PodSandboxStatus and ContainerStatus answered, copies the rows, then removes
everything it made.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import sys
import time

import grpc
from google.protobuf import json_format

from api import api_pb2 as pb, api_pb2_grpc

BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
LOGS = "/var/tmp/state-format1-logs"


def pod(name: str, *, host_network: bool = False) -> pb.PodSandboxConfig:
    ns = pb.NamespaceOption(network=pb.NODE if host_network else pb.POD,
                            pid=pb.CONTAINER if host_network else pb.POD)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="upgrade", uid=f"uid-{name}", attempt=1),
        hostname="" if host_network else name, log_directory=f"{LOGS}/{name}",
        dns_config=pb.DNSConfig(servers=["10.96.0.10"], searches=["upgrade.svc.cluster.local"],
                                options=["ndots:5"]),
        port_mappings=[] if host_network else [pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=0),
                                               pb.PortMapping(protocol=pb.UDP, container_port=53)],
        labels={"app": name}, annotations={"note": "format 1"},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent="", sysctls={} if host_network else {"net.ipv4.ip_forward": "1"},
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=ns, supplemental_groups=[1000],
                seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault))))


def container(name: str, *args: str, **kw: object) -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=BUSYBOX),
                              command=["sh", "-c"], args=list(args), log_path=f"{name}.log", **kw)


def main(db_path: str) -> None:
    channel = grpc.insecure_channel(os.environ["CONTAINER_RUNTIME_ENDPOINT"])
    rt, images = api_pb2_grpc.RuntimeServiceStub(channel), api_pb2_grpc.ImageServiceStub(channel)
    images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=BUSYBOX)), timeout=120)
    image = images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=BUSYBOX))).image
    web_cfg, host_cfg = pod("web"), pod("host", host_network=True)
    web = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=web_cfg), timeout=60).pod_sandbox_id
    host = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=host_cfg), timeout=60).pod_sandbox_id
    made = []
    app = container("app", "sleep 600", mounts=[pb.Mount(container_path="/vol", readonly=True, image=pb.ImageSpec(image=BUSYBOX))],
                    linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(
                        cpu_shares=512, memory_limit_in_bytes=64 << 20)),
                    stop_signal=pb.Signal.SIGNAL_SIGINT)
    made.append(rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=web, config=app, sandbox_config=web_cfg),
                                   timeout=60).container_id)
    rt.StartContainer(pb.StartContainerRequest(container_id=made[-1]), timeout=60)
    rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=made[-1], linux=pb.LinuxContainerResources(
            cpu_shares=256, cpu_period=100000, cpu_quota=50000, memory_limit_in_bytes=96 << 20,
            hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=0)])),
        timeout=60)
    user = container("user", "sleep 600", linux=pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(run_as_user=pb.Int64Value(value=1000),
                                                          run_as_group=pb.Int64Value(value=1000))))
    made.append(rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=web, config=user, sandbox_config=web_cfg),
                                   timeout=60).container_id)
    rt.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=web, overhead=pb.LinuxContainerResources(cpu_shares=10, memory_limit_in_bytes=1 << 20),
        resources=pb.LinuxContainerResources(cpu_period=100000, cpu_quota=150000)), timeout=10)
    done = container("done", "exit 3")
    made.append(rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=host, config=done, sandbox_config=host_cfg),
                                   timeout=60).container_id)
    rt.StartContainer(pb.StartContainerRequest(container_id=made[-1]), timeout=60)
    for _ in range(100):
        if rt.ContainerStatus(pb.ContainerStatusRequest(container_id=made[-1])).status.state == pb.CONTAINER_EXITED:
            break
        time.sleep(0.1)

    def answer(message: object) -> dict[str, object]:
        return json_format.MessageToDict(message)  # type: ignore[arg-type]

    out: dict[str, object] = {
        "image": answer(image),
        "pod_status": {p: answer(rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=p, verbose=True)))
                       for p in (web, host)},
        "container_status": {c: answer(rt.ContainerStatus(pb.ContainerStatusRequest(container_id=c, verbose=True)))
                             for c in made},
    }
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    out["user_version"] = conn.execute("PRAGMA user_version").fetchone()[0]
    for table in ("sandboxes", "containers"):
        cursor = conn.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cursor.description]
        out[table] = [{n: base64.b64encode(v).decode() if isinstance(v, bytes) else v for n, v in zip(names, row)}
                      for row in cursor]
    conn.close()
    for p in (web, host):
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p), timeout=60)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p), timeout=60)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
