"""What the host's cgroup hierarchy looks like (v1 legacy, hybrid, or v2 unified)."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"
# What containers need limits from: CPU, memory, pids (and devices on v1).
REQUIRED_V1 = ("cpu", "cpuacct", "memory", "pids", "devices")
REQUIRED_V2 = ("cpu", "memory", "pids")


@dataclass(frozen=True)
class CgroupLayout:
    mode: str                 # "v2", "hybrid" or "v1"
    controllers: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        need = REQUIRED_V2 if self.mode == "v2" else REQUIRED_V1
        return tuple(c for c in need if c not in self.controllers)


def detect(root: str = CGROUP_ROOT) -> CgroupLayout:
    unified = os.path.join(root, "cgroup.controllers")
    if os.path.exists(unified):
        with open(unified) as f:
            return CgroupLayout("v2", tuple(sorted(f.read().split())))
    controllers: set[str] = set()
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, _ = line.rstrip("\n").split(":", 2)
            controllers.update(n for n in names.split(",") if n and not n.startswith("name="))
    mode = "hybrid" if os.path.ismount(os.path.join(root, "unified")) else "v1"
    return CgroupLayout(mode, tuple(sorted(controllers)))


# ---- container cgroup paths, removal and OOM checks ------------------------------------

DEFAULT_CGROUPFS_PARENT = "/criservice"   # where containers go when the pod names no parent
DEFAULT_SYSTEMD_PARENT = "system.slice"   # the slice runc's systemd driver itself defaults to
SYSTEMD_PREFIX = "cri-criservice"
KINDS = ("container", "conmon")
MOUNTINFO = "/proc/self/mountinfo"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SLICE = re.compile(r"[A-Za-z0-9:_.\\-]+\.slice")
# cgroup v1 super options that are not controllers.
_V1_FLAGS = frozenset({"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
                       "favordynmods", "nofavordynmods", "all", "none"})


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: str
    version: int                   # 1 or 2
    controllers: tuple[str, ...]   # v1: its controllers (cpu, memory, name=systemd); v2: ()


def cgroups_path(driver: str, parent: str, container_id: str, *, kind: str = "container") -> str:
    """The OCI linux.cgroupsPath that runc (or crun) is given for a container.

    cgroupfs: "<parent>/<id>"; systemd: "<slice>:cri-criservice:<id>", which runc
    turns into the unit cri-criservice-<id>.scope in that slice. kind="conmon" is
    the container's monitor: its own leaf cgroup in the pod ("<parent>/conmon-<id>",
    "<slice>:cri-criservice-conmon:<id>"), since cgroup v2 allows no processes in a
    pod cgroup whose children have controllers enabled.
    """
    if not _ID.fullmatch(container_id):
        raise ValueError(f"invalid container id {container_id!r}")
    if kind not in KINDS:
        raise ValueError(f"invalid cgroup kind {kind!r}: one of {', '.join(KINDS)}")
    if driver == "cgroupfs":
        return _cgroupfs_path(parent or DEFAULT_CGROUPFS_PARENT, container_id, kind)
    if driver == "systemd":
        return _systemd_path(parent or DEFAULT_SYSTEMD_PARENT, container_id, kind)
    raise ValueError(f"unknown cgroup driver {driver!r}: cgroupfs or systemd")


def _cgroupfs_path(parent: str, container_id: str, kind: str) -> str:
    if not parent.startswith("/"):
        hint = (" - it names a systemd slice: the kubelet uses the systemd cgroup driver, so set "
                "[runtime] cgroup_driver = \"systemd\"" if parent.endswith(".slice") else "")
        raise ValueError(f"cgroup parent {parent!r} is not an absolute cgroupfs path{hint}")
    if any(part in (".", "..") for part in parent.split("/")):
        raise ValueError(f"cgroup parent {parent!r} must not contain '.' or '..'")
    name = container_id if kind == "container" else f"conmon-{container_id}"
    return posixpath.join(posixpath.normpath(parent), name)


def _systemd_path(parent: str, container_id: str, kind: str) -> str:
    # The kubelet passes the whole slice path (/kubepods.slice/kubepods-burstable.slice/...);
    # runc wants the innermost slice's unit name, whose name already encodes the nesting.
    unit = posixpath.basename(parent.rstrip("/"))
    if not _SLICE.fullmatch(unit):
        raise ValueError(
            f"cgroup parent {parent!r} is not a systemd slice (cgroupfs form?) but the cgroup driver "
            "is systemd: the kubelet and criservice must use the same cgroup driver")
    if "/" in parent and posixpath.normpath(parent) != slice_dir(unit):
        raise ValueError(f"cgroup parent {parent!r} is not the path of slice {unit} ({slice_dir(unit)})")
    prefix = SYSTEMD_PREFIX if kind == "container" else f"{SYSTEMD_PREFIX}-conmon"
    return f"{unit}:{prefix}:{container_id}"


def slice_dir(unit: str) -> str:
    """Where systemd puts a slice: "a-b-c.slice" is /a.slice/a-b.slice/a-b-c.slice."""
    if not _SLICE.fullmatch(unit):
        raise ValueError(f"invalid slice name {unit!r}")
    if unit == "-.slice":
        return "/"
    parts = unit[:-len(".slice")].split("-")
    if not all(parts):
        raise ValueError(f"invalid slice name {unit!r}: empty part between dashes")
    return "".join(f"/{'-'.join(parts[:i + 1])}.slice" for i in range(len(parts)))


def cgroup_dir(cgroups_path: str) -> str:
    """The directory (relative to each hierarchy's mount) of a cgroupsPath of either driver."""
    if not cgroups_path.startswith("/") and cgroups_path.count(":") == 2:
        unit, prefix, name = cgroups_path.split(":")
        return posixpath.join(slice_dir(unit), f"{prefix}-{name}.scope")
    if not cgroups_path.startswith("/") or any(p in (".", "..") for p in cgroups_path.split("/")):
        raise ValueError(f"not an absolute cgroupfs path or a systemd slice:prefix:name: {cgroups_path!r}")
    return posixpath.normpath(cgroups_path)


def _parent_dir(parent: str) -> str:
    return cgroup_dir(parent) if parent.startswith("/") else slice_dir(parent)


def hierarchies(mountinfo: str = MOUNTINFO) -> list[Hierarchy]:
    """The cgroup hierarchies mounted in this mount namespace, each once."""
    found: dict[str, Hierarchy] = {}
    with open(mountinfo) as f:
        for line in f:
            fields, _, tail = line.rstrip("\n").partition(" - ")
            fstype, _, super_options = (tail.split(" ") + ["", "", ""])[:3]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            parts = fields.split(" ")
            device, mountpoint = parts[2], _unescape(parts[4])
            options = tuple(o for o in super_options.split(",")
                            if o not in _V1_FLAGS and ("=" not in o or o.startswith("name=")))
            # One hierarchy may be mounted more than once; the first mount serves.
            found.setdefault(device, Hierarchy(mountpoint, 2 if fstype == "cgroup2" else 1,
                                               options if fstype == "cgroup" else ()))
    return list(found.values())


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def remove_cgroup(cgroups_path: str, *, mountinfo: str = MOUNTINFO) -> None:
    """Remove a container's cgroup in every hierarchy, once its processes are gone.

    rmdir only, deepest first (a container may have made cgroups of its own); a
    missing directory is fine, so this is idempotent. OSError (EBUSY) if processes
    are still inside: the first error, after every hierarchy was tried.
    """
    rel = cgroup_dir(cgroups_path)
    if rel == "/":
        raise ValueError("refusing to remove the root cgroup")
    errors: list[OSError] = []
    for h in hierarchies(mountinfo):
        try:
            _rmdir_tree(h.mountpoint + rel)
        except OSError as e:
            errors.append(e)
    if errors:
        raise errors[0]


def _rmdir_tree(top: str) -> None:
    if not os.path.isdir(top):
        return
    for root, dirs, _ in os.walk(top, topdown=False):
        for d in dirs:
            _rmdir(os.path.join(root, d))
    _rmdir(top)


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass  # gone already (runc delete, or another cleanup got there first)


def pod_cgroup_dirs(parent: str, *, mountinfo: str = MOUNTINFO) -> list[str]:
    """Every cgroup directory below `parent` (a cgroupfs path or a slice), in every
    hierarchy: after a pod's containers are removed, what leaked."""
    rel = _parent_dir(parent)
    found: list[str] = []
    for h in hierarchies(mountinfo):
        for root, dirs, _ in os.walk(h.mountpoint + rel):
            found += [os.path.join(root, d) for d in dirs]
    return sorted(found)


def oom_killed(cgroups_path: str, *, mountinfo: str = MOUNTINFO) -> bool:
    """Whether the OOM killer killed a process of this cgroup (read before removing it).

    v1: memory.oom_control's oom_kill counter (Linux 4.13+; older kernels lack it and
    read as False); v2: memory.events' oom_kill. FileNotFoundError once the cgroup
    (or its memory accounting) is gone.
    """
    rel = cgroup_dir(cgroups_path)
    found = hierarchies(mountinfo)
    memory_v1 = next((h for h in found if h.version == 1 and "memory" in h.controllers), None)
    if memory_v1 is not None:
        return _counter(memory_v1.mountpoint + rel + "/memory.oom_control", "oom_kill") > 0
    unified = next((h for h in found if h.version == 2), None)
    if unified is None:
        raise FileNotFoundError("no memory cgroup hierarchy is mounted")
    return _counter(unified.mountpoint + rel + "/memory.events", "oom_kill") > 0


def _counter(path: str, key: str) -> int:
    with open(path) as f:
        for line in f:
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


# ---- the monitor's cgroup -----------------------------------------------------------------------

# v1 controllers whose new cgroups take no process until values are copied in
# (cpuset's cpus and mems start empty): the monitor stays in its parent's there.
_V1_SKIP_FOR_PROCESSES = frozenset({"cpuset"})


def is_systemd_path(cgroups_path: str) -> bool:
    return not cgroups_path.startswith("/") and cgroups_path.count(":") == 2


def place_process(pid: int, cgroups_path: str, *, mountinfo: str = MOUNTINFO) -> None:
    """Move a process into a cgroupfs-driver cgroup, made where missing, in every
    hierarchy that takes processes as made (all on v2). OSError when the kernel refuses."""
    if is_systemd_path(cgroups_path):
        raise ValueError(f"{cgroups_path!r} is a systemd unit: its scope is made by systemd")
    rel = cgroup_dir(cgroups_path)
    for h in hierarchies(mountinfo):
        if h.version == 1 and _V1_SKIP_FOR_PROCESSES & set(h.controllers):
            continue
        directory = h.mountpoint + rel
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "cgroup.procs"), "w") as f:
            f.write(str(pid))


def scope_call(pid: int, cgroups_path: str) -> list[str]:
    """The busctl call that has systemd make the transient scope of a systemd-driver
    path ("<slice>:<prefix>:<name>") and move `pid` into it, as CRI-O does for conmon;
    systemd removes the scope once its processes are gone."""
    if not is_systemd_path(cgroups_path):
        raise ValueError(f"{cgroups_path!r} is not a systemd slice:prefix:name")
    unit, prefix, name = cgroups_path.split(":")
    return ["busctl", "call", "--quiet", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
            f"{prefix}-{name}.scope", "fail", "4",
            "PIDs", "au", "1", str(pid),
            "Slice", "s", unit,
            "Description", "s", f"criservice monitor of {name}",
            "CollectMode", "s", "inactive-or-failed",
            "0"]


def process_cgroup(pid: int | str = "self") -> str:
    """A process's cgroup as systemd sees it: on the v2 hierarchy, else (pure v1) in
    systemd's named one; "" when it is in neither."""
    with open(f"/proc/{pid}/cgroup") as f:
        entries = [line.rstrip("\n").split(":", 2) for line in f]
    unified = next((path for hierarchy, _, path in entries if hierarchy == "0"), None)
    if unified is not None:
        return unified
    return next((path for _, names, path in entries if names == "name=systemd"), "")
