"""A standalone kubelet (no API server: static pods from a manifest directory) on the
criservice of `hack/e2e-env.sh up`, and the host state its pods can leave behind.

Everything the kubelet writes lives under one directory (`KUBELET_E2E_DIR`), except
what upstream hard-codes: the `/var/log/containers` symlinks and
`/var/lib/kubelet/device-plugins`. Its pods' cgroups live under a cgroup root of
their own. `Kubelet.cleanup()` removes all of it and reports what was left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import REPO
from tests.e2e.conftest import crictl

KUBELET = REPO / ".tools/bin/kubelet"
DEPLOY_DROPIN = REPO / "deploy/kubelet/10-criservice.conf"
NODE_NAME = "criservice-node"
CGROUP_FS = Path("/sys/fs/cgroup")
CGROUP_V2 = (CGROUP_FS / "cgroup.controllers").exists()
# Paths upstream hard-codes whatever the root directory is.
CONTAINER_LOG_LINKS = Path("/var/log/containers")
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
POD_UID_LABEL = "io.kubernetes.pod.uid"

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail with its last answer."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (OSError, ValueError, AssertionError) as e:  # not up yet, half-written JSON
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@dataclass
class Kubelet:
    base: Path
    endpoint: str
    read_only_port: int = 10255
    port: int = 10250
    healthz_port: int = 10248
    cgroup_root: str = "/criservice-kubelet-e2e"
    cgroup_driver: str = "cgroupfs"     # criservice's, which the kubelet takes from RuntimeConfig
    log_max_size: str = "1Mi"
    log_max_files: int = 5
    proc: subprocess.Popen[bytes] | None = None
    made: list[Path] = field(default_factory=list)  # host paths outside `base` we created

    @classmethod
    def from_env(cls, endpoint: str) -> Kubelet:
        env = os.environ.get
        driver = runtime_cgroup_driver(endpoint)
        # With systemd the kubelet's pods go to kubepods.slice at the root, as on real nodes.
        root = "/" if driver == "systemd" else env("KUBELET_E2E_CGROUP_ROOT", "/criservice-kubelet-e2e")
        return cls(base=Path(env("KUBELET_E2E_DIR", "/var/tmp/criservice-kubelet-e2e")), endpoint=endpoint,
                   read_only_port=int(env("KUBELET_E2E_READONLY_PORT", "10255")),
                   port=int(env("KUBELET_E2E_PORT", "10250")),
                   healthz_port=int(env("KUBELET_E2E_HEALTHZ_PORT", "10248")),
                   cgroup_root=root, cgroup_driver=driver)

    # Layout.
    @property
    def manifests(self) -> Path: return self.base / "manifests"
    @property
    def root_dir(self) -> Path: return self.base / "root"
    @property
    def pod_logs(self) -> Path: return self.base / "pod-logs"
    @property
    def host_dir(self) -> Path: return self.base / "hostpath"
    @property
    def log(self) -> Path: return self.base / "kubelet.log"
    @property
    def config(self) -> Path: return self.base / "kubelet.yaml"
    @property
    def config_dir(self) -> Path: return self.base / "kubelet.conf.d"

    def cgroup_dirs(self) -> list[Path]:
        """Where the pods' cgroups go: the cgroup root in every mounted hierarchy (v1
        controllers, named, unified), or in the one v2 hierarchy; kubepods.slice with systemd."""
        if self.cgroup_driver == "systemd":
            return [CGROUP_FS / "kubepods.slice"]
        if CGROUP_V2:
            return [CGROUP_FS / self.cgroup_root.lstrip("/")]
        return [h / self.cgroup_root.lstrip("/") for h in sorted(CGROUP_FS.iterdir()) if h.is_dir()]

    def pod_cgroup_key(self, uid: str) -> str:
        """How a pod's uid shows in its cgroup's name (systemd's unit names have no '-')."""
        return uid.replace("-", "_") if self.cgroup_driver == "systemd" else uid

    # Set-up.
    def prepare(self) -> None:
        for p in (CONTAINER_LOG_LINKS, DEVICE_PLUGINS.parent, DEVICE_PLUGINS):
            if not p.exists():
                self.made.append(p)
        for d in (self.manifests, self.root_dir, self.pod_logs, self.host_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._make_cgroup_root()
        # JSON is YAML: the kubelet reads these files as they are. What an operator sets
        # for criservice comes from deploy/ (a --config-dir drop-in), overridden only
        # where the test node differs; the rest keeps this node off the host's ports,
        # paths and iptables.
        self.config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "staticPodPath": str(self.manifests), "fileCheckFrequency": "2s",
            "podLogsDir": str(self.pod_logs), "volumePluginDir": str(self.base / "volume-plugins"),
            "address": "127.0.0.1", "port": self.port, "readOnlyPort": self.read_only_port,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.healthz_port,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "failSwapOn": False, "cgroupRoot": self.cgroup_root, "makeIPTablesUtilChains": False,
            "containerLogMonitorInterval": "3s", "registerNode": False, "resolvConf": "/etc/resolv.conf",
        }, indent=2) + "\n")
        self.config_dir.mkdir(exist_ok=True)
        shutil.copy(DEPLOY_DROPIN, self.config_dir / DEPLOY_DROPIN.name)
        (self.config_dir / "90-kubelet-e2e.conf").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": self.endpoint, "imageServiceEndpoint": self.endpoint,
            "containerLogMaxSize": self.log_max_size, "containerLogMaxFiles": self.log_max_files,
            # On cgroup v2 the kubelet runs as upstream ships it, refusing v1, to show that
            # deploy/'s failCgroupV1: false is only the v1 escape hatch.
            **({"failCgroupV1": True} if CGROUP_V2 else {}),
        }, indent=2) + "\n")

    def _make_cgroup_root(self) -> None:
        # The kubelet refuses a cgroup root that does not exist; cpuset needs its CPUs and
        # memory nodes before anything can join a child. systemd makes the slices.
        if self.cgroup_driver == "systemd":
            return
        for d in self.cgroup_dirs():
            if d.parent.name == "unified":
                continue
            d.mkdir(exist_ok=True)
            if d.parent.name == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((d.parent / f).read_text())

    # Process.
    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "kubelet already running"
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [str(KUBELET), "--config", str(self.config), "--config-dir", str(self.config_dir),
             "--root-dir", str(self.root_dir),
             "--cert-dir", str(self.base / "pki"), "--hostname-override", NODE_NAME, "--v=2"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        wait_for(self._healthy, 60, "the kubelet's /healthz")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"kubelet exited with {self.proc.returncode}:\n" + self.log_tail())
        with urllib.request.urlopen(f"http://127.0.0.1:{self.healthz_port}/healthz", timeout=2) as r:
            return r.read() == b"ok"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    # Static pods.
    def add(self, manifest: dict[str, Any]) -> str:
        """Write a pod manifest; returns the pod's name as the kubelet knows it."""
        name = manifest["metadata"]["name"]
        tmp = self.manifests / f".{name}.json"  # the kubelet skips dot files
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.rename(self.manifests / f"{name}.json")
        return f"{name}-{NODE_NAME}"

    def remove(self, name: str) -> None:
        (self.manifests / f"{name}.json").unlink(missing_ok=True)

    def remove_all(self) -> None:
        for f in self.manifests.glob("*.json"):
            f.unlink()

    # The kubelet's view.
    def pods(self) -> dict[str, dict[str, Any]]:
        """The kubelet's /pods on its read-only port, by pod name."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.read_only_port}/pods", timeout=5) as r:
            return {p["metadata"]["name"]: p for p in json.load(r)["items"] or []}

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.pods().get(name)

    def summary(self) -> dict[str, Any]:
        """The kubelet's /stats/summary (what metrics-server and evictions read)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.read_only_port}/stats/summary", timeout=10) as r:
            return json.load(r)

    def _https(self, method: str, path: str) -> tuple[int, str]:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # its self-signed serving cert
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def configz(self) -> dict[str, Any]:
        """The kubelet's configuration in effect (its /configz)."""
        code, body = self._https("GET", "/configz")
        assert code == 200, f"configz: {code} {body}"
        return json.loads(body)["kubeletconfig"]

    def container_logs(self, pod: str, container: str, previous: bool = False,
                       namespace: str = "default") -> str:
        """What `kubectl logs [--previous]` would show, from the kubelet's own endpoint."""
        q = "?previous=true" if previous else ""
        code, body = self._https("GET", f"/containerLogs/{namespace}/{pod}/{container}{q}")
        assert code == 200, f"containerLogs {pod}/{container}: {code} {body}"
        return body

    def run(self, pod: str, container: str, cmd: str, namespace: str = "default") -> tuple[int, str]:
        """The kubelet's /run endpoint: `cmd` (split at spaces) in the container through
        ExecSync; (HTTP status, output or error)."""
        return self._https("POST", f"/run/{namespace}/{pod}/{container}?" + urllib.parse.urlencode({"cmd": cmd}))

    # Tear-down.
    def cleanup(self) -> list[str]:
        """Stop the kubelet, remove its pods through the runtime and everything it made on
        the host; returns what could not be removed (empty when the host is clean)."""
        if self.manifests.exists():
            self.remove_all()
        self.stop()
        for sb in kubelet_sandboxes(self.endpoint):
            crictl(self.endpoint, "rmp", "-f", sb["id"], timeout=120)
        for target in reversed(mounts_under(self.base)):
            subprocess.run(["umount", "-l", target], check=False)
        if self.cgroup_driver == "systemd":   # the QoS slices the kubelet made, and what is in them
            subprocess.run(["systemctl", "stop", "kubepods.slice"], check=False)
        for d in self.cgroup_dirs():
            remove_cgroup_tree(d)
        if CONTAINER_LOG_LINKS.exists():
            for link in CONTAINER_LOG_LINKS.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(str(self.pod_logs) + "/"):
                    link.unlink()
        (DEVICE_PLUGINS / "kubelet.sock").unlink(missing_ok=True)
        for p in reversed(self.made):  # children first
            if p.exists() and not any(p.iterdir()):
                p.rmdir()
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.base)], check=False)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        left = [f"mount {m}" for m in mounts_under(self.base)]
        left += [f"cgroup {d}" for d in self.cgroup_dirs() if d.exists()]
        left += [f"kubelet process {p}" for p in pgrep(f"{KUBELET} --config {self.config}")]
        left += [f"pod sandbox {sb['id']}" for sb in kubelet_sandboxes(self.endpoint)]
        left += [f"path {p}" for p in (self.base, *self.made) if p.exists()]
        return left


def runtime_cgroup_driver(endpoint: str) -> str:
    """The cgroup driver criservice's RuntimeConfig tells the kubelet to use."""
    res = crictl(endpoint, "runtime-config")
    driver = res.stdout.split(":")[-1].strip().lower()
    assert res.returncode == 0 and driver in ("cgroupfs", "systemd"), res.stdout + res.stderr
    return driver


def _sandboxes(endpoint: str) -> list[dict[str, Any]]:
    res = crictl(endpoint, "pods", "-o", "json")
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout)["items"])


def kubelet_sandboxes(endpoint: str) -> list[dict[str, Any]]:
    """Every pod sandbox the runtime holds that a kubelet made (it labels them with the pod UID)."""
    return [p for p in _sandboxes(endpoint) if POD_UID_LABEL in (p.get("labels") or {})]


def foreign_sandboxes(endpoint: str) -> list[str]:
    """Names of the pod sandboxes other clients (crictl, critest, tests) made."""
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in _sandboxes(endpoint)
            if POD_UID_LABEL not in (p.get("labels") or {})]


def mount_points() -> list[str]:
    """Every mount point of this mount namespace, in mount order."""
    return [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()]


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below `base`, in mount order."""
    return [t for t in mount_points() if t == str(base) or t.startswith(f"{base}/")]


def remove_cgroup_tree(top: Path) -> None:
    if not top.is_dir():
        return
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()
    top.rmdir()


def pgrep(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if int(p) != os.getpid()]


def cni_leases(config_file: str | None) -> set[str] | None:
    """Addresses the host-local IPAM of criservice's pod network has handed out, or None
    when that cannot be told (no config known, another IPAM plugin)."""
    if not config_file or not Path(config_file).exists():
        return None
    cfg = tomllib.loads(Path(config_file).read_text())
    conf_dir = Path(cfg.get("cni", {}).get("conf_dir", "/etc/cni/net.d"))
    confs = sorted(p for p in conf_dir.glob("*") if p.suffix in (".conflist", ".conf", ".json"))
    if not confs:
        return None
    net = json.loads(confs[0].read_text())
    ipam = next((p.get("ipam") for p in net.get("plugins", [net]) if p.get("ipam")), None)
    if not ipam or ipam.get("type") != "host-local":
        return None
    leases = Path(ipam.get("dataDir", "/var/lib/cni/networks")) / net["name"]
    return {p.name for p in leases.iterdir() if p.name[0].isdigit()} if leases.exists() else set()
