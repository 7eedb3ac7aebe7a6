"""Pod-level machinery against the real kernel and the real CNI plugins (root only).

Pinned namespaces (runtime/namespaces.py), the CNI executor (runtime/cni.py) with
Debian's bridge, host-local and portmap plugins, and cgroup clean-up and OOM
detection (runtime/cgroups.py).

Network rule: traffic stays on loopback and on what these tests make: a bridge
crstN (the first N with no such link) with 10.77.N.0/24 and no default route in
the pods, so a pod can reach nothing but the bridge. Everything made is removed:
pods by CNI DEL (verified), namespaces, the bridge, the port-mapping chains
portmap adds when they were not there before, host-local data, files, cgroups.

Run `pytest -s -k timing tests/integration/test_pod_network.py` for the pod cost.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runtime import cgroups, errors, mounts, namespaces
from runtime.cni import CniError, CniNetwork, parse_result
from runtime.cni_config import find_plugin, parse_network
from tests.conftest import CNI_BIN_DIRS

PLUGINS = ("bridge", "host-local", "portmap")
NETWORK = "crstnet"
HOST_PORT = 18080
POD_ARGS = {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web", "K8S_POD_UID": "0d3c-77e1"}

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(any(find_plugin(p, CNI_BIN_DIRS) is None for p in PLUGINS),
                       reason=f"CNI plugins {', '.join(PLUGINS)} not installed"),
]

# A TCP server for inside a pod: says hello with the peer address it saw, once ready.
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(("hello " + peer[0] + "\\n").encode())
    c.close()
"""

# One ICMP echo over a raw socket (iputils-ping is not installed here); exit 0 on a reply.
PING = """
import os, socket, struct, sys
def checksum(data):
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
dst, ident, payload = sys.argv[1], os.getpid() & 0xffff, b"criservice-test!"
head = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
packet = struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, 1) + payload
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(1.0)
s.sendto(packet, (dst, 0))
while True:
    data, (src, _) = s.recvfrom(2048)
    ihl = (data[0] & 0x0f) * 4
    kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
    if kind == 0 and rid == ident and src == dst:
        print("reply from " + src)
        break
"""


# ---- the lab: a bridge, a subnet and a network configuration for this module ---------------

@dataclass
class Lab:
    index: int
    dir: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(3))

    @property
    def bridge(self) -> str:
        return f"crst{self.index}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.77.{self.index}.0/24")

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def ipam_dir(self) -> Path:
        return self.dir / "ipam" / NETWORK

    @property
    def cache_dir(self) -> Path:
        return self.dir / "cache"

    def conflist(self, *, name: str = NETWORK, portmap: bool = True, first: int = 2,
                 last: int = 199) -> Path:
        """bridge (+ host-local) [+ portmap]; no routes, so pods reach the bridge's subnet only."""
        plugins: list[dict[str, Any]] = [{
            "type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "dataDir": str(self.dir / "ipam"), "ranges": [[{
                "subnet": str(self.subnet), "gateway": self.gateway,
                "rangeStart": str(self.subnet.network_address + first),
                "rangeEnd": str(self.subnet.network_address + last)}]]}}]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        path = self.dir / f"{name}.conflist"
        path.write_text(json.dumps({"cniVersion": "1.0.0", "name": name, "plugins": plugins}))
        return path

    def network(self, **kw: Any) -> CniNetwork:
        return CniNetwork(parse_network(self.conflist(**kw)), CNI_BIN_DIRS, str(self.cache_dir))

    def netns_name(self) -> str:
        return f"crst-{self.tag}-{secrets.token_hex(4)}"

    def container_id(self) -> str:
        return f"crst{self.tag}{secrets.token_hex(8)}"


def _free_index() -> int:
    routes = _run(["ip", "-4", "route", "show", "table", "all"]).stdout
    for n in range(10):
        if not os.path.exists(f"/sys/class/net/crst{n}") and f"10.77.{n}." not in routes:
            return n
    pytest.skip("no free crstN bridge / 10.77.N.0/24 subnet for the test")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    before_nat = {tool: _nat_rules(tool) for tool in ("iptables", "ip6tables")}
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    lab = Lab(_free_index(), Path(tempfile.mkdtemp(prefix="crst-", dir="/tmp")))
    try:
        yield lab
    finally:
        for name in os.listdir(namespaces.NETNS_DIR):  # a failed test's leftovers
            if name.startswith(f"crst-{lab.tag}-"):
                asyncio.run(namespaces.remove_ns_file(os.path.join(namespaces.NETNS_DIR, name)))
        if os.path.exists(f"/sys/class/net/{lab.bridge}"):
            _run(["ip", "link", "del", lab.bridge], check=True)
        for tool, rules in before_nat.items():
            _remove_new_portmap_chains(tool, rules)
        # The bridge plugin turns on forwarding for a gateway bridge; pods here have no
        # route out and none of these tests needs it, so the host gets its setting back.
        if forward == "0":
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
        shutil.rmtree(lab.dir)


def _nat_rules(tool: str) -> list[str]:
    res = _run([tool, "-w", "-t", "nat", "-S"])
    return res.stdout.splitlines() if res.returncode == 0 else []


def _remove_new_portmap_chains(tool: str, before: list[str]) -> None:
    """Undo the shared chains portmap made in this run, only if no pod uses them any more."""
    now = _nat_rules(tool)
    new = [r for r in now if r not in before and "CNI-HOSTPORT" in r]
    if not new or any(r.startswith("-A CNI-HOSTPORT-DNAT") for r in now):
        return  # nothing of ours, or a pod (maybe another test run's) still maps ports
    for rule in new:
        argv = shlex.split(rule)
        if argv[0] == "-A" and not argv[1].startswith("CNI-"):
            _run([tool, "-w", "-t", "nat", "-D", *argv[1:]], check=True)
    chains = [shlex.split(r)[1] for r in new if r.startswith("-N ")]
    for chain in chains:
        _run([tool, "-w", "-t", "nat", "-F", chain], check=True)
    for chain in chains:
        _run([tool, "-w", "-t", "nat", "-X", chain], check=True)


# ---- pods: a namespace plus a CNI attachment, always torn down -------------------------------

@dataclass
class Pod:
    id: str
    name: str
    netns: str
    ip: str = ""
    ports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def capabilities(self) -> dict[str, Any]:
        return {"portMappings": self.ports} if self.ports else {}


class Pods:
    """Makes pods on one network and DELs whatever is left at the end of the test."""

    def __init__(self, lab: Lab, network: CniNetwork) -> None:
        self.lab, self.network = lab, network
        self.made: list[Pod] = []

    async def new(self, *, ports: tuple[int, ...] = ()) -> Pod:
        name = self.lab.netns_name()
        pod = Pod(self.lab.container_id(), name, await namespaces.create_netns(name),
                  ports=[{"hostPort": hp, "containerPort": 80, "protocol": "tcp", "hostIP": ""}
                         for hp in ports])
        self.made.append(pod)
        result = await self.network.add(pod.id, pod.netns, args=self.args(pod),
                                        capabilities=pod.capabilities)
        pod.ip = result.ips[0].address.split("/")[0]
        return pod

    def args(self, pod: Pod) -> dict[str, str]:
        return {**POD_ARGS, "K8S_POD_INFRA_CONTAINER_ID": pod.id}

    async def delete(self, pod: Pod) -> None:
        alive = namespaces.netns_exists(pod.netns)
        await self.network.delete(pod.id, pod.netns if alive else None, args=self.args(pod),
                                  capabilities=pod.capabilities)
        await namespaces.remove_ns_file(pod.netns)

    async def close(self) -> None:
        for pod in self.made:
            await self.delete(pod)


@pytest.fixture
async def pods(lab: Lab) -> AsyncIterator[Pods]:
    made = Pods(lab, lab.network())
    try:
        yield made
    finally:
        await made.close()


# ---- helpers ---------------------------------------------------------------------------------

def _run(argv: list[str], check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _in_netns(name: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return _run(["ip", "netns", "exec", name, *argv])


def _allocated(lab: Lab) -> dict[str, str]:
    """host-local's reservations: address -> the container id it holds."""
    if not lab.ipam_dir.is_dir():
        return {}
    out = {}
    for f in lab.ipam_dir.iterdir():
        try:
            ipaddress.ip_address(f.name)
        except ValueError:
            continue  # lock, last_reserved_ip.0
        out[f.name] = f.read_text().split()[0]
    return out


def _nat_mentions(container_id: str) -> int:
    return sum(r.count(container_id) for tool in ("iptables", "ip6tables") for r in _nat_rules(tool))


def _mounted(path: str) -> bool:
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return real in mounts.mount_points(os.path.dirname(real))


def _queue_keys(prefix: list[str]) -> set[str]:
    """The keys of the SysV message queues `ipcs` lists (run after `prefix`, e.g. nsenter)."""
    out = _run([*prefix, "ipcs", "-q"], check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("0x")}


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def _fetch(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=2) as s:
        return s.makefile().readline().strip()


class Server:
    """SERVER inside a pod, started and known to listen before the constructor returns."""

    def __init__(self, pod: Pod, port: int = 80) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", pod.name, sys.executable, "-c", SERVER,
                                      pod.ip, str(port)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise AssertionError(f"the server in {pod.name} did not start")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# ---- network namespaces ------------------------------------------------------------------------

async def test_netns_is_pinned_with_lo_up(lab: Lab) -> None:
    name = lab.netns_name()
    path = await namespaces.create_netns(name)
    try:
        assert path == os.path.join(namespaces.NETNS_DIR, name)
        assert namespaces.netns_exists(path) and _mounted(path)
        assert _ns_inode(path) != _ns_inode("/proc/self/ns/net")
        links = json.loads(_run(["ip", "-n", name, "-j", "link", "show"], check=True).stdout)
        assert [(link["ifname"], "UP" in link["flags"]) for link in links] == [("lo", True)]
        with pytest.raises(FileExistsError):
            await namespaces.create_netns(name)
        assert namespaces.netns_exists(path)  # the failed duplicate left the first alone
    finally:
        await namespaces.remove_ns_file(path)
    assert not os.path.exists(path) and not _mounted(path)
    assert not namespaces.netns_exists(path)
    await namespaces.remove_ns_file(path)  # idempotent


async def test_netns_exists_only_for_network_namespaces(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    ipc, _ = await namespaces.create_ipc_uts(str(tmp_path / "pod"), "x", ipc=True, uts=False)
    try:
        assert not namespaces.netns_exists(str(plain))
        assert not namespaces.netns_exists(str(tmp_path / "missing"))
        assert ipc is not None and not namespaces.netns_exists(ipc)
    finally:
        await namespaces.remove_ns_file(str(ipc))


async def test_netns_in_another_directory_becomes_a_shared_mount(tmp_path: Path) -> None:
    netns_dir = str(tmp_path / "netns")
    path = await namespaces.create_netns("n1", netns_dir)
    try:
        assert namespaces.netns_exists(path)
        line = next(l for l in open("/proc/self/mountinfo") if l.split(" ")[4] == netns_dir)
        assert "shared:" in line
    finally:
        await namespaces.remove_ns_file(path)
        while mounts.unmount(netns_dir, detach=True):
            pass
    assert mounts.mount_points(str(tmp_path)) == []


# ---- IPC and UTS namespaces ----------------------------------------------------------------------

async def test_ipc_and_uts_pinned_with_hostname(tmp_path: Path) -> None:
    pod_dir = tmp_path / "pod"
    host_name = _run(["hostname"], check=True).stdout
    ipc, uts = await namespaces.create_ipc_uts(str(pod_dir), "web-0", ipc=True, uts=True)
    try:
        assert (ipc, uts) == (str(pod_dir / "ipc"), str(pod_dir / "uts"))
        assert ipc is not None and uts is not None
        assert _run(["nsenter", f"--uts={uts}", "hostname"], check=True).stdout == "web-0\n"
        assert _run(["hostname"], check=True).stdout == host_name
        assert _ns_inode(ipc) != _ns_inode("/proc/self/ns/ipc")
        assert _ns_inode(uts) != _ns_inode("/proc/self/ns/uts")
        # A message queue made in the pod's IPC namespace is seen there, not on the host.
        _run(["nsenter", f"--ipc={ipc}", "ipcmk", "-Q"], check=True)
        keys = _queue_keys(["nsenter", f"--ipc={ipc}"])
        assert len(keys) == 1 and not keys & _queue_keys([])
    finally:
        for path in (ipc, uts):
            await namespaces.remove_ns_file(str(path))
    assert os.listdir(pod_dir) == [] and mounts.mount_points(str(pod_dir)) == []


async def test_a_pods_fqdn_is_its_hostname_even_with_a_trailing_dot(tmp_path: Path) -> None:
    # The kubelet's setHostnameAsFQDN with an empty cluster domain (node conformance's
    # "Hostname of Pod" specs): hostname(1) refuses such a name, the kernel does not.
    fqdn = "hostfqdn-1.t.hostfqdn-8632.svc."
    _, uts = await namespaces.create_ipc_uts(str(tmp_path / "pod"), fqdn, ipc=False, uts=True)
    try:
        assert _run(["nsenter", f"--uts={uts}", "cat", "/proc/sys/kernel/hostname"], check=True).stdout == fqdn + "\n"
    finally:
        await namespaces.remove_ns_file(str(uts))


async def test_only_the_namespaces_asked_for(tmp_path: Path) -> None:
    assert await namespaces.create_ipc_uts(str(tmp_path / "a"), "x", ipc=False, uts=False) == (None, None)
    ipc, uts = await namespaces.create_ipc_uts(str(tmp_path / "b"), "only-uts", ipc=False, uts=True)
    try:
        assert ipc is None and os.listdir(tmp_path / "b") == ["uts"]
        assert _run(["nsenter", f"--uts={uts}", "hostname"], check=True).stdout == "only-uts\n"
    finally:
        await namespaces.remove_ns_file(str(uts))


async def test_pinning_works_on_a_shared_mount(tmp_path: Path) -> None:
    """unshare(1): only mount namespaces need a non-shared mount under the file."""
    shared = str(tmp_path / "shared")
    os.mkdir(shared)
    mounts.mount(shared, shared, "none", mounts.MS_BIND)
    try:
        mounts.mount("none", shared, "none", namespaces.MS_SHARED)
        ipc, uts = await namespaces.create_ipc_uts(shared, "on-shared", ipc=True, uts=True)
        assert _run(["nsenter", f"--uts={uts}", "hostname"], check=True).stdout == "on-shared\n"
        for path in (ipc, uts):
            await namespaces.remove_ns_file(str(path))
        assert mounts.mount_points(shared) == [shared]
    finally:
        mounts.unmount(shared, detach=True)


async def test_failed_pinning_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command unshare runs fails after unshare mounted both files (here sysctl is
    not on PATH): both are undone."""
    pod_dir = tmp_path / "pod"
    only_unshare = tmp_path / "bin"
    only_unshare.mkdir()
    (only_unshare / "unshare").symlink_to(shutil.which("unshare") or "/usr/bin/unshare")
    monkeypatch.setenv("PATH", str(only_unshare))
    with pytest.raises(namespaces.NamespaceError, match="sysctl"):
        await namespaces.create_ipc_uts(str(pod_dir), "web-0", ipc=True, uts=True)
    assert os.listdir(pod_dir) == [] and mounts.mount_points(str(pod_dir)) == []
    with pytest.raises(errors.InvalidArgument):
        await namespaces.create_ipc_uts(str(pod_dir), "-n", ipc=False, uts=True)


# ---- CNI with the real plugins ----------------------------------------------------------------------

async def test_add_configures_eth0_and_del_releases_everything(lab: Lab, pods: Pods) -> None:
    pod = await pods.new(ports=(HOST_PORT,))
    result = await pods.network.cached_result(pod.id)
    assert result is not None and len(result.ips) == 1
    address, gateway, version = result.ips[0]
    assert ipaddress.ip_interface(address).network == lab.subnet
    assert (gateway, version) == (lab.gateway, 4)
    eth0 = next(i for i in result.interfaces if i.name == "eth0")
    assert eth0.sandbox == pod.netns
    assert [i.name for i in result.interfaces if not i.sandbox][0] == lab.bridge
    shown = json.loads(_run(["ip", "-n", pod.name, "-j", "addr", "show", "eth0"], check=True).stdout)
    assert f"{shown[0]['addr_info'][0]['local']}/{shown[0]['addr_info'][0]['prefixlen']}" == address
    assert shown[0]["address"] == eth0.mac
    assert _allocated(lab) == {pod.ip: pod.id}
    assert (lab.cache_dir / f"{pod.id}-eth0.json").exists()
    assert _nat_mentions(pod.id) > 0

    await pods.delete(pod)
    assert _allocated(lab) == {}
    assert _nat_mentions(pod.id) == 0
    assert not (lab.cache_dir / f"{pod.id}-eth0.json").exists()
    assert not os.path.exists(pod.netns) and not _mounted(pod.netns)
    # DEL again (the kubelet retries StopPodSandbox): still fine.
    await pods.network.delete(pod.id, None, args=pods.args(pod), capabilities=pod.capabilities)


async def test_pod_pings_the_gateway(lab: Lab, pods: Pods) -> None:
    pod = await pods.new()
    res = _in_netns(pod.name, [sys.executable, "-c", PING, lab.gateway])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"reply from {lab.gateway}"


async def test_pod_reachable_by_its_ip_and_by_host_port(lab: Lab, pods: Pods) -> None:
    pod = await pods.new(ports=(HOST_PORT,))
    server = Server(pod)
    try:
        # From the host, the pod's address goes straight over the bridge.
        assert _fetch(pod.ip, 80) == f"hello {lab.gateway}"
        # The host port: portmap DNATs locally addressed traffic (nat OUTPUT) to the pod.
        assert _fetch(lab.gateway, HOST_PORT) == f"hello {lab.gateway}"
    finally:
        server.close()
    await pods.delete(pod)
    assert _nat_mentions(pod.id) == 0
    with pytest.raises(OSError):
        _fetch(lab.gateway, HOST_PORT)  # nothing listens there on the host itself


async def test_del_after_the_netns_is_gone(lab: Lab, pods: Pods) -> None:
    pod = await pods.new(ports=(HOST_PORT + 1,))
    await namespaces.remove_ns_file(pod.netns)
    assert not namespaces.netns_exists(pod.netns)
    await pods.network.delete(pod.id, None, args=pods.args(pod), capabilities=pod.capabilities)
    assert _allocated(lab) == {} and _nat_mentions(pod.id) == 0
    # The veth went with its namespace; nothing is left on the bridge.
    assert _run(["ip", "-br", "link", "show", "master", lab.bridge], check=True).stdout == ""


async def test_del_without_cache_and_with_a_stale_netns_path(lab: Lab, pods: Pods) -> None:
    """A crash lost the cached result and the namespace: DEL still releases IP and rules."""
    pod = await pods.new(ports=(HOST_PORT + 2,))
    await namespaces.remove_ns_file(pod.netns)
    (lab.cache_dir / f"{pod.id}-eth0.json").unlink()
    await pods.network.delete(pod.id, pod.netns, args=pods.args(pod), capabilities=pod.capabilities)
    assert _allocated(lab) == {} and _nat_mentions(pod.id) == 0


async def test_parallel_adds_get_distinct_addresses(lab: Lab, pods: Pods) -> None:
    started = time.perf_counter()
    made = await asyncio.gather(*(pods.new() for _ in range(20)))
    add_ms = (time.perf_counter() - started) * 1000
    ips = {pod.ip for pod in made}
    assert len(ips) == 20 and all(ipaddress.ip_address(ip) in lab.subnet for ip in ips)
    assert _allocated(lab) == {pod.ip: pod.id for pod in made}
    started = time.perf_counter()
    await asyncio.gather(*(pods.delete(pod) for pod in made))
    del_ms = (time.perf_counter() - started) * 1000
    pods.made.clear()
    assert _allocated(lab) == {}
    assert _run(["ip", "-br", "link", "show", "master", lab.bridge], check=True).stdout == ""
    print(f"\nPARALLEL 20 pods: netns+ADD {add_ms:.0f} ms, DEL+unpin {del_ms:.0f} ms (wall)")


async def test_check_passes_then_fails_when_eth0_is_gone(lab: Lab) -> None:
    # portmap 1.1.1's CHECK looks for IPv6 chains that ADD never made for an IPv4-only pod
    # (containernetworking/plugins#819), so CHECK is shown on bridge + host-local only.
    plain = Pods(lab, lab.network(name="crstplain", portmap=False, first=200, last=250))
    try:
        pod = await plain.new()
        await plain.network.check(pod.id, pod.netns, args=plain.args(pod))
        _run(["ip", "-n", pod.name, "link", "del", "eth0"], check=True)
        with pytest.raises(CniError) as err:
            await plain.network.check(pod.id, pod.netns, args=plain.args(pod))
        assert err.value.plugin == "bridge" and "eth0" in err.value.msg
    finally:
        await plain.close()


async def test_status_of_a_cni_1_0_network(lab: Lab) -> None:
    """STATUS is CNI 1.1: for this 1.0.0 network only the plugins' presence is checked."""
    assert await lab.network().status() is False


async def test_timing_per_pod(lab: Lab, pods: Pods, tmp_path: Path) -> None:
    """create_netns + create_ipc_uts + ADD, then DEL + unpinning: medians of 20 pods."""
    for ports in ((), (HOST_PORT + 3,)):
        up: dict[str, list[float]] = {"netns": [], "ipc_uts": [], "add": [], "total": []}
        down: list[float] = []
        for i in range(20):
            t0 = time.perf_counter()
            name = lab.netns_name()
            pod = Pod(lab.container_id(), name, await namespaces.create_netns(name),
                      ports=[{"hostPort": hp, "containerPort": 80, "protocol": "tcp", "hostIP": ""}
                             for hp in ports])
            pods.made.append(pod)
            t1 = time.perf_counter()
            ipc, uts = await namespaces.create_ipc_uts(str(tmp_path / f"p{len(ports)}-{i}"), f"pod-{i}",
                                                       ipc=True, uts=True)
            t2 = time.perf_counter()
            await pods.network.add(pod.id, pod.netns, args=pods.args(pod), capabilities=pod.capabilities)
            t3 = time.perf_counter()
            for key, ms in (("netns", t1 - t0), ("ipc_uts", t2 - t1), ("add", t3 - t2), ("total", t3 - t0)):
                up[key].append(ms * 1000)
            t4 = time.perf_counter()
            await pods.delete(pod)
            for path in (ipc, uts):
                await namespaces.remove_ns_file(str(path))
            down.append((time.perf_counter() - t4) * 1000)
            pods.made.remove(pod)
        medians = {k: round(statistics.median(v), 1) for k, v in up.items()}
        print(f"\nPOD TIMING ({'1 hostPort' if ports else 'no hostPort'}), median of 20 ms: {medians}, "
              f"DEL+unpin {statistics.median(down):.1f}")
        assert _allocated(lab) == {}


# ---- the executor's protocol, with a recording fake plugin ------------------------------------------

FAKE_PLUGIN = """#!{python}
# A fake CNI plugin: records its input and environment, then behaves as its config says.
import json, os, subprocess, sys, time
conf = json.load(sys.stdin)
cmd = os.environ["CNI_COMMAND"]
me = os.path.basename(sys.argv[0])
log = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0]))), "log")
with open(os.path.join(log, "%d-%s-%s.json" % (time.monotonic_ns(), me, cmd)), "w") as f:
    json.dump({{"stdin": conf, "env": {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}}}, f)
if cmd == "VERSION":  # its input is {{"cniVersion": ...}} only; "fakeold" predates 1.1
    versions = ["0.4.0", "1.0.0"] + ([] if me == "fakeold" else ["1.1.0"])
    print(json.dumps({{"cniVersion": conf["cniVersion"], "supportedVersions": versions}}))
    sys.exit(0)
how = conf.get("on", {{}}).get(cmd, "ok")
error = {{"cniVersion": conf["cniVersion"], "code": 7, "msg": "Invalid Configuration",
         "details": "subnet too small"}}
if how == "fail":
    print(json.dumps(error)); sys.exit(1)
if how == "fail-stderr":
    print("a log line", file=sys.stderr); print(json.dumps(error), file=sys.stderr); sys.exit(1)
if how == "not-ready":
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 50, "msg": "plugin not available"}}))
    sys.exit(1)
if how == "crash":
    print("panic: runtime error", file=sys.stderr); sys.exit(2)
if how == "hang":
    child = subprocess.Popen(["sleep", "300"])
    with open(conf["pidfile"], "w") as f:
        f.write(str(child.pid))
    child.wait()
if how == "flood":
    sys.stdout.write("x" * (4 << 20)); sys.exit(0)
if how == "garbage":
    print("not json"); sys.exit(0)
if cmd == "ADD":
    result = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"],
        "interfaces": [{{"name": os.environ["CNI_IFNAME"], "mac": "02:00:00:00:00:01",
                        "sandbox": os.environ["CNI_NETNS"]}}],
        "ips": [{{"address": "10.77.99.5/24", "gateway": "10.77.99.1", "interface": 0}},
                {{"address": "fd00:77::5/64", "interface": 0}}]}}
    result.setdefault("dns", {{}})["search"] = result.get("dns", {{}}).get("search", []) + [me]
    print(json.dumps(result))
"""


@dataclass
class Fake:
    dir: Path

    @property
    def log(self) -> Path:
        return self.dir / "log"

    def network(self, plugins: list[dict[str, Any]], *, version: str = "1.0.0",
                extra: dict[str, Any] | None = None, timeout: float = 10.0,
                max_output: int = 1 << 20) -> CniNetwork:
        conf = {"cniVersion": version, "name": "fakenet", **(extra or {}),
                "plugins": plugins}
        path = self.dir / "fake.conflist"
        path.write_text(json.dumps(conf))
        return CniNetwork(parse_network(path), [str(self.dir / "bin")], str(self.dir / "cache"),
                          timeout=timeout, max_output=max_output)

    def calls(self) -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
        """(plugin, command, stdin, CNI_* env) of every call so far, in order; then forgets them."""
        out = []
        for f in sorted(self.log.iterdir(), key=lambda p: int(p.name.split("-")[0])):
            _, plugin, cmd = f.stem.split("-", 2)
            doc = json.loads(f.read_text())
            out.append((plugin, cmd, doc["stdin"], doc["env"]))
            f.unlink()
        return out


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    (tmp_path / "bin").mkdir()
    (tmp_path / "log").mkdir()
    for name in ("fakea", "fakeb", "fakeold"):
        script = tmp_path / "bin" / name
        script.write_text(FAKE_PLUGIN.format(python=sys.executable))
        script.chmod(0o755)
    return Fake(tmp_path)


CAPS = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
        "bandwidth": {"ingressRate": 1000}}


async def test_protocol_add_del_as_the_spec_says(fake: Fake) -> None:
    net = fake.network([{"type": "fakea", "capabilities": {"portMappings": True}, "cni.dev/x": 1},
                        {"type": "fakeb", "capabilities": {"mac": True}}])
    result = await net.add("cid1", "/var/run/netns/x", args=POD_ARGS, capabilities=CAPS)
    assert [(ip.address, ip.gateway, ip.version) for ip in result.ips] == [
        ("10.77.99.5/24", "10.77.99.1", 4), ("fd00:77::5/64", "", 6)]
    assert result.raw["dns"]["search"] == ["fakea", "fakeb"]  # b got a's result and extended it
    (a_cmd, b_cmd) = fake.calls()
    assert [(c[0], c[1]) for c in (a_cmd, b_cmd)] == [("fakea", "ADD"), ("fakeb", "ADD")]
    a_in, b_in = a_cmd[2], b_cmd[2]
    assert a_in["runtimeConfig"] == {"portMappings": CAPS["portMappings"]}  # declared only
    assert "runtimeConfig" not in b_in  # asked for mac, which the runtime did not provide
    assert "capabilities" not in a_in and "cni.dev/x" not in a_in and "prevResult" not in a_in
    assert (a_in["name"], a_in["cniVersion"]) == ("fakenet", "1.0.0")
    assert b_in["prevResult"]["dns"]["search"] == ["fakea"]
    env = a_cmd[3]
    assert env["CNI_ARGS"] == ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
                               "K8S_POD_UID=0d3c-77e1")
    assert (env["CNI_CONTAINERID"], env["CNI_NETNS"], env["CNI_IFNAME"], env["CNI_PATH"]) == \
        ("cid1", "/var/run/netns/x", "eth0", str(fake.dir / "bin"))

    cached = json.loads((fake.dir / "cache" / "cid1-eth0.json").read_text())
    assert cached["result"] == result.raw
    await net.delete("cid1", None, args=POD_ARGS, capabilities=CAPS)
    calls = fake.calls()
    assert [(c[0], c[1]) for c in calls] == [("fakeb", "DEL"), ("fakea", "DEL")]
    assert all(c[2]["prevResult"] == result.raw and c[3]["CNI_NETNS"] == "" for c in calls)
    assert not (fake.dir / "cache" / "cid1-eth0.json").exists()
    await net.delete("cid1", None, args=POD_ARGS, capabilities=CAPS)  # again: no cache, no prevResult
    assert all("prevResult" not in c[2] for c in fake.calls())


async def test_del_uses_the_configuration_add_used(fake: Fake) -> None:
    net = fake.network([{"type": "fakea"}, {"type": "fakeb"}])
    await net.add("cid2", "/var/run/netns/x", args=POD_ARGS)
    changed = fake.network([{"type": "fakeb"}])  # the admin edited the file since
    await changed.delete("cid2", "/var/run/netns/x")  # args from the cache too
    calls = fake.calls()[2:]
    assert [(c[0], c[1]) for c in calls] == [("fakeb", "DEL"), ("fakea", "DEL")]
    assert "K8S_POD_NAME=web" in calls[0][3]["CNI_ARGS"]


async def test_check_runs_in_order_with_the_cached_result(fake: Fake) -> None:
    net = fake.network([{"type": "fakea"}, {"type": "fakeb"}])
    with pytest.raises(CniError, match="no cached ADD result"):
        await net.check("cid3", "/var/run/netns/x")
    result = await net.add("cid3", "/var/run/netns/x")
    fake.calls()
    await net.check("cid3", "/var/run/netns/x")
    calls = fake.calls()
    assert [(c[0], c[1]) for c in calls] == [("fakea", "CHECK"), ("fakeb", "CHECK")]
    assert all(c[2]["prevResult"] == result.raw for c in calls)
    disabled = fake.network([{"type": "fakea"}], extra={"disableCheck": True})
    await disabled.check("cid3", "/var/run/netns/x")
    assert fake.calls() == []


async def test_plugin_errors_become_precise_cni_errors(fake: Fake) -> None:
    net = fake.network([{"type": "fakea"}, {"type": "fakeb", "on": {"ADD": "fail"}}])
    with pytest.raises(CniError) as err:
        await net.add("cid4", "/var/run/netns/x")
    e = err.value
    assert (e.plugin, e.command, e.code, e.msg, e.details) == \
        ("fakeb", "ADD", 7, "Invalid Configuration", "subnet too small")
    assert str(e) == ("CNI plugin fakeb ADD failed: Invalid Configuration: subnet too small "
                      "(CNI error code 7)")
    assert not (fake.dir / "cache" / "cid4-eth0.json").exists()  # nothing cached: DEL is the caller's

    with pytest.raises(CniError) as err:
        await fake.network([{"type": "fakea", "on": {"ADD": "fail-stderr"}}]).add("cid4", "/x")
    assert (err.value.code, err.value.details) == (7, "subnet too small")
    with pytest.raises(CniError) as err:
        await fake.network([{"type": "fakea", "on": {"ADD": "crash"}}]).add("cid4", "/x")
    assert err.value.msg == "exit status 2" and "panic: runtime error" in str(err.value)
    with pytest.raises(CniError, match="not a JSON result"):
        await fake.network([{"type": "fakea", "on": {"ADD": "garbage"}}]).add("cid4", "/x")
    with pytest.raises(CniError, match="plugin not found"):
        await fake.network([{"type": "nosuch"}]).add("cid4", "/x")
    with pytest.raises(CniError, match="invalid plugin type"):
        await fake.network([{"type": "../bin/fakea"}]).add("cid4", "/x")


async def test_invalid_attachment_arguments_are_refused_before_any_plugin(fake: Fake) -> None:
    net = fake.network([{"type": "fakea"}])
    for kwargs in ({"container_id": "../x"}, {"container_id": ""}, {"ifname": "a/b"},
                   {"ifname": "x" * 16}, {"args": {"K": "a;b"}}, {"netns": ""}):
        call: dict[str, Any] = {"container_id": "cid5", "netns": "/x", **kwargs}
        with pytest.raises(ValueError):
            await net.add(call.pop("container_id"), call.pop("netns"), **call)
    assert fake.calls() == []


async def test_a_hung_plugin_is_killed_with_its_children(fake: Fake) -> None:
    pidfile = fake.dir / "child.pid"
    net = fake.network([{"type": "fakea", "on": {"ADD": "hang"}, "pidfile": str(pidfile)}], timeout=1.0)
    with pytest.raises(CniError, match="no answer within 1 s"):
        await net.add("cid6", "/x")
    child = int(pidfile.read_text())
    try:
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("Z", "gone")  # killed with the plugin's process group (a zombie until reaped)


async def test_plugin_output_is_bounded(fake: Fake) -> None:
    net = fake.network([{"type": "fakea", "on": {"ADD": "flood"}}], max_output=64 << 10)
    with pytest.raises(CniError, match="wrote more than 65536 bytes"):
        await net.add("cid7", "/x")


async def test_status_on_cni_1_1(fake: Fake) -> None:
    assert await fake.network([{"type": "fakea"}, {"type": "fakeb"}], version="1.1.0").status() is True
    assert [(c[0], c[1]) for c in fake.calls()] == [
        ("fakea", "VERSION"), ("fakea", "STATUS"), ("fakeb", "VERSION"), ("fakeb", "STATUS")]
    older = fake.network([{"type": "fakea"}, {"type": "fakeold"}], version="1.1.0")
    assert await older.status() is False  # fakeold cannot be asked; fakea still is
    assert [(c[0], c[1]) for c in fake.calls()] == [
        ("fakea", "VERSION"), ("fakea", "STATUS"), ("fakeold", "VERSION")]
    with pytest.raises(CniError) as err:
        await fake.network([{"type": "fakea", "on": {"STATUS": "not-ready"}}], version="1.1.0").status()
    assert err.value.code == 50
    with pytest.raises(CniError, match="plugin not found"):
        await fake.network([{"type": "nosuch"}], version="1.1.0").status()


async def test_version_selection_and_old_spec_versions(fake: Fake) -> None:
    listed = fake.network([{"type": "fakea"}], version="0.4.0", extra={"cniVersions": ["1.0.0", "9.9.9"]})
    assert listed.cni_version == "1.0.0"  # the highest we speak
    old = fake.network([{"type": "fakea"}], version="0.3.1")
    await old.add("cid8", "/x")
    await old.check("cid8", "/x")  # CHECK came with 0.4.0: nothing to run
    await old.delete("cid8", "/x")
    assert [(c[1], "prevResult" in c[2]) for c in fake.calls()] == [("ADD", False), ("DEL", False)]


def test_legacy_result_format_is_read() -> None:
    result = parse_result({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1",
                                                          "routes": [{"dst": "0.0.0.0/0"}]}}, "0.2.0")
    assert result.ips == [("10.1.0.5/16", "10.1.0.1", 4)]
    assert result.routes == [{"dst": "0.0.0.0/0"}]


# ---- cgroups: removal and OOM against the real hierarchies --------------------------------------

@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    parent = f"/crst-{secrets.token_hex(4)}"
    yield parent
    for h in cgroups.hierarchies():
        if os.path.isdir(h.mountpoint + parent):
            os.rmdir(h.mountpoint + parent)


def test_remove_cgroup_in_every_hierarchy(cgroup_parent: str) -> None:
    path = cgroups.cgroups_path("cgroupfs", cgroup_parent, "c1")
    found = cgroups.hierarchies()
    assert found, "no cgroup hierarchy mounted"
    for h in found:
        os.makedirs(h.mountpoint + path + "/nested")
    assert len(cgroups.pod_cgroup_dirs(cgroup_parent)) == 2 * len(found)
    cgroups.remove_cgroup(path)
    assert cgroups.pod_cgroup_dirs(cgroup_parent) == []
    cgroups.remove_cgroup(path)  # idempotent


def test_remove_cgroup_with_a_process_inside_fails_then_succeeds(cgroup_parent: str) -> None:
    path = cgroups.cgroups_path("cgroupfs", cgroup_parent, "c2")
    found = cgroups.hierarchies()
    for h in found:
        os.makedirs(h.mountpoint + path)
    busy = found[0].mountpoint + path
    proc = subprocess.Popen(["sleep", "300"])
    try:
        Path(busy, "cgroup.procs").write_text(str(proc.pid))
        with pytest.raises(OSError) as err:
            cgroups.remove_cgroup(path)
        assert err.value.filename == busy
        assert cgroups.pod_cgroup_dirs(cgroup_parent) == [busy]  # the others went
    finally:
        proc.kill()
        proc.wait()
    cgroups.remove_cgroup(path)
    assert cgroups.pod_cgroup_dirs(cgroup_parent) == []


def test_oom_killed(cgroup_parent: str) -> None:
    victim = cgroups.cgroups_path("cgroupfs", cgroup_parent, "victim")
    calm = cgroups.cgroups_path("cgroupfs", cgroup_parent, "calm")
    procs = [_memory_cgroup(victim, 32 << 20), _memory_cgroup(calm, 32 << 20)]
    try:
        grow = "import sys; open(sys.argv[1], 'w').write('0'); b = b'x' * (512 << 20)"
        res = subprocess.run([sys.executable, "-c", grow, procs[0]])
        assert res.returncode == -9  # SIGKILL from the OOM killer
        assert cgroups.oom_killed(victim) is True
        assert cgroups.oom_killed(calm) is False
    finally:
        cgroups.remove_cgroup(victim)
        cgroups.remove_cgroup(calm)
    with pytest.raises(FileNotFoundError):
        cgroups.oom_killed(victim)


def _memory_cgroup(path: str, limit: int) -> str:
    """A memory cgroup with a limit (v1, or v2 when that is all there is); its cgroup.procs."""
    found = cgroups.hierarchies()
    v1 = next((h for h in found if "memory" in h.controllers), None)
    if v1 is not None:
        d = v1.mountpoint + path
        os.makedirs(d)
        Path(d, "memory.limit_in_bytes").write_text(str(limit))
        if os.path.exists(f"{d}/memory.memsw.limit_in_bytes"):
            Path(d, "memory.memsw.limit_in_bytes").write_text(str(limit))
        return f"{d}/cgroup.procs"
    v2 = next(h for h in found if h.version == 2)
    parent = v2.mountpoint + os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    Path(parent, "cgroup.subtree_control").write_text("+memory")
    d = v2.mountpoint + path
    os.makedirs(d)
    Path(d, "memory.max").write_text(str(limit))
    Path(d, "memory.swap.max").write_text("0")
    return f"{d}/cgroup.procs"
