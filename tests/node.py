"""A criservice node for integration tests: the daemon as a real process with a CNI
bridge, IPAM data and network namespaces of its own, images from the test registry
through a mirror, and a count of everything a pod could leave on the host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
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
def running_node(base: Path, bridge: str, subnet: str,
                 configure: Callable[[Path], None] | None = None,
                 env: dict[str, str] | None = None) -> Iterator[Node]:
    """A started node with busybox pulled; afterwards every pod is removed through the
    daemon and nothing may be left on the host, then the rest is torn down by force.
    `configure` may change the config file before the daemon starts; `env` is added to
    the daemon's environment."""
    config = node_config(base, bridge, subnet)
    if configure is not None:
        configure(config)
    n = Node(DaemonProcess(config, env).start(), base)
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


# ---- do the records match the host? ---------------------------------------------------

def _runc_containers(base: Path) -> dict[str, dict[str, object]]:
    listed = subprocess.run(["runc", "--root", str(base / "run" / "runc"), "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
    return {c["id"]: c for c in json.loads(listed or "[]") or []}


def _conmon_ids(base: Path) -> list[str]:
    """The container id of every conmon of this node (from its `-c ID` argument)."""
    ids = []
    for pid in subprocess.run(["pgrep", "-f", f"conmon .*{base}/"], capture_output=True, text=True).stdout.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"-c" in argv:
            ids.append(argv[argv.index(b"-c") + 1].decode())
    return ids


def _cgroup_children(parent: str) -> set[str]:
    found: set[str] = set()
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        d = hierarchy / parent.lstrip("/")
        if d.is_dir():
            found |= {c.name for c in d.iterdir() if c.is_dir()}
    return found


def disagreements(node: Node, cgroup_parent: str) -> list[str]:
    """Every way the daemon's records and the host differ: runc's containers and their
    states, conmons, network namespaces and IPAM leases, mounts, cgroups under
    `cgroup_parent` (which every pod of the test must use), and the image store."""
    rt, base = node.rt, node.base
    problems: list[str] = []
    runc = _runc_containers(base)
    conmons = _conmon_ids(base)
    sandboxes = {s.id: json.loads(rt.PodSandboxStatus(pb.PodSandboxStatusRequest(
        pod_sandbox_id=s.id, verbose=True)).info["info"]) for s in rt.ListPodSandbox(pb.ListPodSandboxRequest()).items}
    containers = {c.id: c for c in rt.ListContainers(pb.ListContainersRequest()).containers}
    live: set[str] = set()   # what runc, conmon and the cgroups may hold
    for cid, c in containers.items():
        state = pb.ContainerState.Name(c.state)
        info = json.loads(rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"])
        held = runc.get(cid)
        if c.state == pb.ContainerState.CONTAINER_RUNNING:
            live.add(cid)
            if held is None or held["status"] != "running" or held["pid"] != info["pid"]:
                problems.append(f"container {cid[:12]} is {state} (pid {info['pid']}), runc has {held}")
            if cid not in conmons:
                problems.append(f"container {cid[:12]} is {state} without a conmon")
        elif c.state == pb.ContainerState.CONTAINER_CREATED:
            live.add(cid)
            if held is None or held["status"] != "created":
                problems.append(f"container {cid[:12]} is {state}, runc has {held}")
        elif held is not None and held["status"] != "stopped":
            problems.append(f"container {cid[:12]} is {state}, runc has it {held['status']}")
        if c.state == pb.ContainerState.CONTAINER_EXITED and held is not None:
            live.add(cid)   # runc keeps a stopped container until RemoveContainer
    for sid, info in sandboxes.items():
        details = info["details"]
        ready = info["state"] == "ready"
        netns = details.get("netns")
        if ready and netns and not Path(netns).exists():
            problems.append(f"pod {sid[:12]} is ready without its network namespace {netns}")
        if not ready and netns and Path(netns).exists():
            problems.append(f"pod {sid[:12]} is not ready and still holds {netns}")
        if details.get("infra_id"):
            infra = runc.get(details["infra_id"])
            if ready and (infra is None or infra["status"] != "running"):
                problems.append(f"pod {sid[:12]} is ready, its infra container is {infra}")
            if infra is not None:
                live.add(details["infra_id"])
    for cid, held in runc.items():
        if cid not in live:
            problems.append(f"runc holds {cid[:20]} ({held['status']}), which no record explains")
    for cid in conmons:
        if cid not in live:
            problems.append(f"a conmon runs for {cid[:20]}, which no record explains")
    for name in _cgroup_children(cgroup_parent):
        if name.removeprefix("conmon-") not in live:   # a container's, or its monitor's
            problems.append(f"cgroup {cgroup_parent}/{name} belongs to no record")
    ready_netns = {Path(i["details"]["netns"]).name for i in sandboxes.values()
                   if i["state"] == "ready" and i["details"].get("netns")}
    view = host_view(base)
    for name in set(view["netns"]) - ready_netns:  # type: ignore[arg-type]
        problems.append(f"network namespace {name} belongs to no ready pod")
    if len(view["ipam"]) != len(ready_netns):  # type: ignore[arg-type]
        problems.append(f"{len(view['ipam'])} IPAM leases for {len(ready_netns)} pods with a network")  # type: ignore[arg-type]
    allowed = {str(m) for m in _expected_mounts(base, sandboxes, live)}
    for point in view["mounts"]:  # type: ignore[union-attr]
        if point not in allowed:
            problems.append(f"{point} is mounted for no record")
    problems += _image_store_disagreements(base)
    return problems


def _expected_mounts(base: Path, sandboxes: dict[str, dict[str, object]], live: set[str]) -> list[Path]:
    """Root filesystems of live containers, the IPC and UTS namespace files of every pod
    (they go with RemovePodSandbox), the shm and network namespace of ready ones."""
    snapshots = base / "state" / "containers"
    out = [snapshots / cid / "rootfs" for cid in live]
    for info in sandboxes.values():
        details: dict[str, str] = info["details"]  # type: ignore[assignment]
        kept = ("ipc_ns", "uts_ns") + (("shm", "netns") if info["state"] == "ready" else ())
        out += [Path(details[k]) for k in kept if details.get(k)]
    return out


def _image_store_disagreements(base: Path) -> list[str]:
    """Layer directories and records agree; no half-unpacked layer is left."""
    import sqlite3
    root = base / "state" / "images"
    db = sqlite3.connect(f"file:{base / 'state' / 'state.db'}?mode=ro", uri=True)
    try:
        layers = {str(r[0]) for r in db.execute("SELECT id FROM layers")}
        used = {str(r[0]) for r in db.execute(
            "SELECT layer_id FROM image_layers UNION SELECT layer_id FROM snapshot_layers")}
    finally:
        db.close()
    on_disk = {p.name for p in (root / "layers").iterdir()} if (root / "layers").exists() else set()
    problems = [f"layer directory {n} has no record" for n in sorted(on_disk - layers)]
    problems += [f"layer {n} is recorded without its directory" for n in sorted(layers - on_disk)]
    problems += [f"layer {n} is used by no image and no container" for n in sorted(layers - used)]
    staging = list((root / "tmp").iterdir()) if (root / "tmp").exists() else []
    problems += [f"a half-unpacked layer is left in {p}" for p in staging]
    return problems
