"""`criservice doctor`: check the host the way a new user needs, one line per check."""

from __future__ import annotations

import asyncio
import os
import platform
import stat
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from criservice.config import Config
from criservice.server import socket_lock_path
from runtime import binaries, cgroups
from runtime.cni_config import CniConfigError, check_network
from runtime.locks import PidLock


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # reported, but does not fail the doctor


def _binary_check(label: str, info: binaries.BinaryInfo, fix: str, required: bool = True) -> Check:
    if info.usable:
        return Check(label, True, f"{info.path}: {info.version}")
    return Check(label, False, info.error, fix, warning=not required)


async def check_binaries(config: Config) -> list[Check]:
    checks = []
    hybrid = cgroups.detect().mode == "hybrid"
    for name, handler in config.runtime.handlers.items():
        info = await binaries.probe(handler.path)
        default = name == config.runtime.default_handler
        label = f"runtime handler {name}" + (" (default)" if default else "")
        if info.usable and info.version.startswith("crun") and hybrid:
            # It answers --version, then refuses every container ("hybrid mode not supported").
            checks.append(Check(label, False, f"{info.path}: {info.version}; crun refuses cgroup v1 hybrid "
                                "hosts (v1 controllers beside a unified mount), so its containers fail here",
                                "use runc on this host, or boot it with cgroup v2 "
                                "(systemd.unified_cgroup_hierarchy=1)", warning=not default))
            continue
        checks.append(_binary_check(label, info, f"apt-get install {os.path.basename(handler.path)}, or set "
                                    f"[runtime.handlers.{name}] path", required=default))
    checks.append(_binary_check("conmon", await binaries.probe(config.runtime.conmon),
                                "apt-get install conmon, or set [runtime] conmon"))
    return checks


def check_cgroups(config: Config) -> list[Check]:
    layout = cgroups.detect()
    detail = f"cgroup {layout.mode}, controllers: {' '.join(layout.controllers)}"
    checks = [Check("cgroups", not layout.missing,
                    detail if not layout.missing else f"{detail}; missing: {' '.join(layout.missing)}",
                    "enable the missing controllers (kernel command line or the parent cgroup's "
                    "cgroup.subtree_control)")]
    if config.runtime.cgroup_driver == "systemd" and not os.path.isdir("/run/systemd/system"):
        checks.append(Check("cgroup driver", False, "cgroup_driver is systemd but systemd is not PID 1",
                            'set [runtime] cgroup_driver = "cgroupfs"'))
    else:
        checks.append(Check("cgroup driver", True, config.runtime.cgroup_driver))
    return checks


def check_overlay(config: Config) -> Check:
    """Mount a real overlay in the state directory: /proc/filesystems alone can lie
    (modules not loaded, overlay on overlay refused)."""
    base = config.image_root
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".doctor-", dir=base) as tmp:
            for d in ("lower", "upper", "work", "merged"):
                os.mkdir(os.path.join(tmp, d))
            opts = f"lowerdir={tmp}/lower,upperdir={tmp}/upper,workdir={tmp}/work"
            res = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, f"{tmp}/merged"],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                return Check("overlayfs", False, f"mount in {base} failed: {res.stderr.strip()}",
                             "modprobe overlay; the image root must not itself be on overlayfs "
                             "without index=off support")
            subprocess.run(["umount", f"{tmp}/merged"], check=True)
    except OSError as e:
        return Check("overlayfs", False, f"{base}: {e.strerror}", "run as root")
    return Check("overlayfs", True, f"mounts in {base}")


def check_cni(config: Config) -> Check:
    try:
        network = check_network(config.cni.conf_dir, config.cni.bin_dirs)
    except CniConfigError as e:
        return Check("CNI", False, str(e),
                     "apt-get install containernetworking-plugins and put a .conflist in "
                     f"{config.cni.conf_dir} (example: deploy/cni/10-criservice.conflist)")
    return Check("CNI", True, f"{network.file}: network {network.name!r}, plugins "
                 f"{', '.join(network.plugin_types)}")


def check_seccomp() -> Check:
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            actions = f.read().split()
    except OSError:
        return Check("seccomp", False, "the kernel has no seccomp filter support",
                     "use a kernel built with CONFIG_SECCOMP_FILTER")
    need = {"errno", "allow"}
    if not need <= set(actions):
        return Check("seccomp", False, f"kernel seccomp actions: {' '.join(actions)}",
                     "use a kernel whose seccomp supports errno and allow")
    return Check("seccomp", True, f"filter actions: {' '.join(actions)}")


def check_dirs(config: Config) -> list[Check]:
    checks = []
    for label, d in (("state dir", config.paths.state_dir), ("run dir", config.paths.run_dir),
                     ("image root", config.image_root)):
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=d, prefix=".doctor-"):
                pass
            checks.append(Check(label, True, f"{d} writable"))
        except OSError as e:
            checks.append(Check(label, False, f"{d}: {e.strerror}", "run as root, or set [paths]"))
    return checks


def check_socket(config: Config) -> Check:
    path = config.api.socket
    holder = PidLock(socket_lock_path(config)).holder()
    if holder is not None:
        return Check("socket", True, f"{path} served by criservice pid {holder}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Check("socket", True, f"{path} free")
    if stat.S_ISSOCK(st.st_mode):
        return Check("socket", True, f"{path} left by a stopped daemon; it will be replaced")
    return Check("socket", False, f"{path} exists and is not a socket",
                 "remove it or set [api] socket")


def check_mirrors(config: Config) -> list[Check]:
    checks = []
    for host, registry in config.image.registries.items():
        for mirror in registry.mirrors:
            url = mirror.rstrip("/") + "/v2/"
            try:
                with urllib.request.urlopen(url, timeout=3) as r:
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                checks.append(Check(f"mirror {mirror} ({host})", False, f"{url}: {reason}",
                                    "start the mirror, or remove it from "
                                    f'[image.registries."{host}"] mirrors'))
                continue
            ok = code in (200, 401)  # 401: it speaks the API and wants a token
            checks.append(Check(f"mirror {mirror} ({host})", ok, f"{url} answered HTTP {code}",
                                "" if ok else "point the mirror at an OCI distribution API"))
    return checks


async def run_checks(config: Config) -> list[Check]:
    checks = [Check("kernel", True, f"{platform.system()} {platform.release()}")]
    checks += await check_binaries(config)
    sync_steps: list[Callable[[], Check | list[Check]]] = [
        lambda: check_cgroups(config), lambda: check_overlay(config), lambda: check_cni(config),
        check_seccomp, lambda: check_dirs(config), lambda: check_socket(config),
        lambda: check_mirrors(config)]
    for step in sync_steps:
        result = await asyncio.to_thread(step)
        checks += result if isinstance(result, list) else [result]
    return checks


def report(checks: list[Check]) -> tuple[str, int]:
    lines, failed = [], 0
    for c in checks:
        mark = "ok  " if c.ok else ("warn" if c.warning else "FAIL")
        failed += 0 if c.ok or c.warning else 1
        lines.append(f"[{mark}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"       fix: {c.fix}")
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines), (1 if failed else 0)


def doctor(config: Config) -> int:
    checks: list[Check] = asyncio.run(run_checks(config))
    text, status = report(checks)
    print(text)
    return status


