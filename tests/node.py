"""A criservice node for integration tests: the daemon as a real process with a CNI
bridge, IPAM data and network namespaces of its own, images from the test registry
through a mirror, and a count of everything a pod could leave on the host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from api import api_pb2 as pb, api_pb2_grpc
from tests.conftest import write_config
from tests.daemon import DaemonProcess
from tests.registry_helpers import TEST_REGISTRY

BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
NETWORK = "crs-node"


@dataclass
class Node:
    daemon: DaemonProcess
    base: Path

    @property
    def rt(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel("unix:" + self.daemon.socket))

    @property
    def images(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(grpc.insecure_channel("unix:" + self.daemon.socket))

    def restart(self, sig: int = signal.SIGTERM) -> None:
        if sig == signal.SIGKILL:
            self.daemon.kill()
        else:
            self.daemon.stop(sig)
        self.daemon.start()


def node_config(base: Path, bridge: str, subnet: str) -> Path:
    """Pods on `bridge` with `subnet` (no default route, IPAM data in `base`)."""
    cni = base / "cni"
    cni.mkdir(parents=True)
    (cni / "10-node.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": NETWORK, "plugins": [
            {"type": "bridge", "bridge": bridge, "ipMasq": False, "isGateway": True,
             "ipam": {"type": "host-local", "dataDir": str(base / "ipam"), "ranges": [[{"subnet": subnet}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    cfg = write_config(base, f"""
[image.registries."registry.k8s.io"]
mirrors = ["http://{TEST_REGISTRY}"]
[image.registries."{TEST_REGISTRY}"]
insecure = true
""", cni_dir=cni)
    # The namespaces of this node live in its directory, away from the host's /var/run/netns.
    cfg.write_text(cfg.read_text().replace("[paths]\n", f'[paths]\nnetns_dir = "{base}/netns"\n', 1))
    return cfg


def host_view(base: Path) -> dict[str, object]:
    """What a pod can leave on the host, counted."""
    # The namespace directory itself is made a shared mount once, as `ip netns` does.
    mounts = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if ln.split()[4].startswith(str(base) + "/") and ln.split()[4] != f"{base}/netns"]
    conmons = subprocess.run(["pgrep", "-f", f"conmon .*{base}/"], capture_output=True, text=True).stdout.split()
    ipam = base / "ipam" / NETWORK
    leases = sorted(p.name for p in ipam.iterdir() if p.name[0].isdigit()) if ipam.exists() else []
    netns = sorted(os.listdir(base / "netns")) if (base / "netns").exists() else []
    return {"mounts": sorted(mounts), "conmons": len(conmons), "ipam": leases, "netns": netns}


@contextmanager
def running_node(base: Path, bridge: str, subnet: str) -> Iterator[Node]:
    """A started node with busybox pulled; afterwards every pod is removed through the
    daemon and nothing may be left on the host, then the rest is torn down by force."""
    n = Node(DaemonProcess(node_config(base, bridge, subnet)).start(), base)
    try:
        n.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=BUSYBOX)), timeout=120)
        before = host_view(base)
        yield n
        for sb in n.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items:
            n.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sb.id), timeout=60)
            n.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sb.id), timeout=60)
        after = host_view(base)
        problems = [ln for ln in n.daemon.log.read_text().splitlines()
                    if "level=error" in ln or "Traceback" in ln or "Error" in ln][-20:]
        assert after == before, f"leaked: {after} (before: {before}); daemon errors:\n" + "\n".join(problems)
    finally:
        n.daemon.kill()
        subprocess.run(["pkill", "-KILL", "-f", f"conmon .*{base}/"], check=False)
        # Containers the daemon could not remove (a failed test): runc kills them and
        # removes their cgroups. The daemon's runc root is <run_dir>/runc.
        root = str(base / "run" / "runc")
        listed = subprocess.run(["runc", "--root", root, "list", "-q"], capture_output=True, text=True)
        for container_id in listed.stdout.split():
            subprocess.run(["runc", "--root", root, "delete", "-f", container_id], capture_output=True)
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            target = line.split()[4]
            if target.startswith(str(base) + "/"):
                subprocess.run(["umount", "-l", target], check=False)
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
