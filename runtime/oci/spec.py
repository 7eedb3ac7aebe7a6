"""The OCI runtime-spec (config.json) of a container, and of a pod's infra process.

`build_spec` turns a ContainerInput, the SandboxInput of its pod and the
ImageInput of its image into the dict runc or crun reads. It reads files (the
image's /etc/passwd and /etc/group, seccomp profiles, device nodes, the mount
table) and, like containerd and CRI-O, creates a missing hostPath directory;
it starts nothing.

Facts the defaults rest on (containerd's CRI plugin and the CRI comments):
- default capabilities: Docker's 14; privileged and "ALL" get every capability the
  daemon itself holds; "ALL" in add/drop is applied before the single names.
- default masked and read-only paths unless the CRI gives lists; none when privileged.
- seccomp: none when privileged or not asked for (the CRI's nil profile is unconfined).
- no rlimits: containers inherit the runtime's (containerd drops its own defaults too).
- sysfs and the cgroup filesystem read-only unless privileged; a cgroup namespace
  on cgroup v2 for unprivileged containers only.
- /etc/hostname, /etc/hosts and /etc/resolv.conf are the pod's files, read-only
  when the rootfs is; /dev/shm is the pod's (or the host's with host IPC).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import stat
from dataclasses import dataclass
from typing import Any

from runtime import cgroups, errors
from runtime.errors import shown
from runtime.oci import seccomp
from runtime.oci.features import RRO_MIN_KERNEL
from runtime.oci.specinput import (
    ContainerInput, DeviceInput, IDMapping, ImageInput, MountInput, ProfileInput, ResourcesInput,
    SandboxInput, SecurityInput, UserNamespaceInput,
)
from runtime.oci.users import ResolvedUser, resolve_user

log = logging.getLogger("criservice.oci")

OCI_VERSION = "1.0.2-dev"          # what runc 1.1 and crun 1.8 declare
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Kernel capability numbers 0..40, in order (include/uapi/linux/capability.h).
CAPABILITIES: tuple[str, ...] = tuple("CAP_" + n for n in (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"))

DEFAULT_CAPS: tuple[str, ...] = tuple("CAP_" + n for n in (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"))

DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap")
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

SANDBOX_OOM_SCORE_ADJ = -998       # the kubelet's (and containerd's) for pod infrastructure
SANDBOX_CPU_SHARES = 2

# Extra bind options a CRI mount may carry; anything else could change what is mounted.
BIND_OPTIONS = frozenset(p + o for p in ("", "r") for o in (
    "nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime", "strictatime", "nosymfollow"))
# Device directories a privileged container does not get from the host (as containerd).
_SKIP_DEV_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})

# Annotations as containerd sets them; CRI annotations may not spoof ours, nor
# reach the runtimes' own switches (runc: systemd properties; crun: run.oci.*).
ANNOTATION_PREFIX = "io.kubernetes.cri."
RESERVED_ANNOTATIONS = (ANNOTATION_PREFIX, "org.systemd.property.", "run.oci.")
ANN_CONTAINER_TYPE = ANNOTATION_PREFIX + "container-type"
ANN_SANDBOX_ID = ANNOTATION_PREFIX + "sandbox-id"
ANN_SANDBOX_NAME = ANNOTATION_PREFIX + "sandbox-name"
ANN_SANDBOX_NAMESPACE = ANNOTATION_PREFIX + "sandbox-namespace"
ANN_SANDBOX_UID = ANNOTATION_PREFIX + "sandbox-uid"
ANN_SANDBOX_LOG_DIR = ANNOTATION_PREFIX + "sandbox-log-directory"
ANN_SANDBOX_IMAGE = ANNOTATION_PREFIX + "podsandbox.image-name"
ANN_CONTAINER_NAME = ANNOTATION_PREFIX + "container-name"
ANN_IMAGE_NAME = ANNOTATION_PREFIX + "image-name"


# ---- the host ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostInfo:
    """What the spec depends on about this host; tests build their own."""

    cgroup_v2: bool
    swap_controller: bool
    hugetlb_controller: bool
    all_caps: tuple[str, ...]                    # what "ALL" and privileged grant (see detect_host)
    apparmor_enabled: bool
    kernel: tuple[int, int]
    arch: str                                    # Go name: amd64, arm64...
    dev_root: str = "/dev"
    mountinfo_path: str = "/proc/self/mountinfo"
    apparmor_profiles_path: str = "/sys/kernel/security/apparmor/profiles"
    seccomp_default_path: str = seccomp.DEFAULT_PROFILE
    min_oom_score_adj: int = -1000               # lowest oom_score_adj a container may get here

    @property
    def rro_supported(self) -> bool:
        return self.kernel >= RRO_MIN_KERNEL


@functools.lru_cache(maxsize=1)
def detect_host() -> HostInfo:
    """This host's facts; they do not change while the daemon runs."""
    layout = cgroups.detect()
    v2 = layout.mode == "v2"
    return HostInfo(cgroup_v2=v2, swap_controller=_swap_controller(v2),
                    hugetlb_controller="hugetlb" in layout.controllers,
                    all_caps=_grantable_caps(), apparmor_enabled=_apparmor_enabled(),
                    kernel=seccomp.host_kernel(), arch=seccomp.host_arch(),
                    min_oom_score_adj=_min_oom_score_adj())


def _min_oom_score_adj() -> int:
    """Without CAP_SYS_RESOURCE a process may not go below its own oom_score_adj
    (rootless and nested hosts): what containers ask for is clamped to it, as
    containerd's restrict_oom_score_adj does."""
    if "CAP_SYS_RESOURCE" in _grantable_caps():
        return -1000
    with open("/proc/self/oom_score_adj") as f:
        return int(f.read())


def clamp_oom_score_adj(value: int, host: HostInfo, who: str) -> int:
    if value >= host.min_oom_score_adj:
        return value
    log.warning("oom_score_adj clamped: CAP_SYS_RESOURCE is missing", extra={"fields": {
        "container": who, "asked": value, "set": host.min_oom_score_adj}})
    return host.min_oom_score_adj


def _grantable_caps() -> tuple[str, ...]:
    """The daemon's own effective capabilities that the kernel knows. Not every
    capability up to cap_last_cap: a daemon confined to fewer (in a container, or
    under systemd's CapabilityBoundingSet) cannot grant the rest, and runc fails
    with EPERM if asked to (containerd uses its current set for the same reason)."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    with open("/proc/self/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return caps_from_mask(mask, last)


def caps_from_mask(mask: int, last: int = len(CAPABILITIES) - 1) -> tuple[str, ...]:
    return tuple(name for bit, name in enumerate(CAPABILITIES[: last + 1]) if mask >> bit & 1)


def _swap_controller(v2: bool) -> bool:
    if not v2:
        return os.path.exists(os.path.join(cgroups.CGROUP_ROOT, "memory", "memory.memsw.limit_in_bytes"))
    # The root cgroup has no memory.swap.max: look where this process lives.
    own = cgroups.process_cgroup() or "/"
    return os.path.exists(os.path.join(cgroups.CGROUP_ROOT, own.lstrip("/"), "memory.swap.max"))


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read(1) == "Y"
    except FileNotFoundError:
        return False


# ---- container spec ----------------------------------------------------------------------


def build_spec(container: ContainerInput, sandbox: SandboxInput, image: ImageInput, *,
               container_id: str, rootfs: str, cgroups_path: str,
               default_caps: list[str] | None = None, host: HostInfo | None = None,
               target_pid_ns_path: str | None = None, apparmor_default: str = "",
               create_missing_host_paths: bool = True) -> dict[str, Any]:
    """The config.json of a container.

    `rootfs` is root.path (absolute, or relative to the bundle); the image's
    passwd and group files are read from `image.rootfs` (or `rootfs` when that
    is empty). `target_pid_ns_path` is the PID namespace of the container a
    "target" PID mode names, resolved by the caller. `apparmor_default` is the
    loaded AppArmor profile RuntimeDefault means ("" = none)."""
    host = host or detect_host()
    sec = container.security
    if sec.privileged and not sandbox.security.privileged:
        raise errors.InvalidArgument(
            f"container {shown(container.name)} is privileged but its pod sandbox is not "
            "(linux.security_context.privileged must be set on the pod too)")
    user = resolve_user(sec, image.user, image.rootfs or rootfs)
    caps = capabilities(sec, host, default_caps)
    mounts, root_propagation = _mounts(container, sandbox, host, create_missing_host_paths)
    linux = _linux(container, sandbox, host, caps=caps, cgroups_path=cgroups_path,
                   target_pid_ns_path=target_pid_ns_path)
    if root_propagation:
        linux["rootfsPropagation"] = root_propagation
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process(container, sandbox, image, user, caps, host, apparmor_default),
        "root": {"path": rootfs, "readonly": sec.readonly_rootfs},
        "mounts": mounts,
        "annotations": _annotations(container, sandbox, image),
        "linux": linux,
    }
    if not sandbox.host_network and sandbox.hostname:
        spec["hostname"] = sandbox.hostname
    log.debug("built OCI spec", extra={"fields": {"container": container_id, "name": container.name}})
    return spec


def _process(container: ContainerInput, sandbox: SandboxInput, image: ImageInput, user: ResolvedUser,
             caps: dict[str, list[str]], host: HostInfo, apparmor_default: str) -> dict[str, Any]:
    sec = container.security
    process: dict[str, Any] = {
        "terminal": container.tty,
        "user": _user(user),
        "args": process_args(container, image),
        "env": environment(container, image, sandbox, user),
        "cwd": working_dir(container, image),
        "capabilities": caps,
        "noNewPrivileges": sec.no_new_privs,
    }
    if container.resources is not None:
        process["oomScoreAdj"] = clamp_oom_score_adj(container.resources.oom_score_adj, host, container.name)
    profile_name = apparmor_profile(sec.apparmor, privileged=sec.privileged, host=host,
                                    default=apparmor_default)
    if profile_name:
        process["apparmorProfile"] = profile_name
    return process


def _linux(container: ContainerInput, sandbox: SandboxInput, host: HostInfo, *, caps: dict[str, list[str]],
           cgroups_path: str, target_pid_ns_path: str | None) -> dict[str, Any]:
    sec = container.security
    devices, device_rules = _devices(container.devices, host, sec.privileged)
    linux: dict[str, Any] = {
        "namespaces": _namespaces(container, sandbox, host, target_pid_ns_path),
        "cgroupsPath": cgroups_path,
        "resources": {"devices": device_rules, **_resources(container.resources, host)},
        "devices": devices,
        "maskedPaths": [] if sec.privileged else list(
            DEFAULT_MASKED_PATHS if sec.masked_paths is None else sec.masked_paths),
        "readonlyPaths": [] if sec.privileged else list(
            DEFAULT_READONLY_PATHS if sec.readonly_paths is None else sec.readonly_paths),
    }
    _add_userns(linux, sec.namespaces.userns or sandbox.security.userns, sandbox)
    if sandbox.sysctls:
        linux["sysctl"] = dict(sandbox.sysctls)
    profile = seccomp.seccomp_for(sec.seccomp, privileged=sec.privileged, caps=caps["bounding"],
                                  arch=host.arch, kernel=host.kernel, default_path=host.seccomp_default_path)
    if profile is not None:
        linux["seccomp"] = profile
    return linux


def process_args(container: ContainerInput, image: ImageInput) -> list[str]:
    """Docker's rules: a CRI command replaces the image's Entrypoint and drops its
    Cmd; CRI args replace Cmd."""
    command, args = list(container.command), list(container.args)
    if not command:
        if not args:
            args = list(image.cmd)
        if image.entrypoint != ("",):   # Entrypoint [""] means "no entrypoint"
            command = list(image.entrypoint)
    argv = command + args
    if not argv:
        raise errors.InvalidArgument(
            f"container {shown(container.name)}: no command specified (neither the container "
            "config nor the image has one)")
    return argv


def environment(container: ContainerInput, image: ImageInput, sandbox: SandboxInput,
                user: ResolvedUser) -> list[str]:
    """HOSTNAME, then the image's env, then the CRI's, later ones replacing earlier
    ones of the same name in place; PATH and HOME when still unset."""
    env = {"HOSTNAME": sandbox.hostname or socket.gethostname(), **_env_map(image.env)}
    for key, value in container.envs:
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", user.home)
    if container.tty:
        env.setdefault("TERM", "xterm")
    return [f"{k}={v}" for k, v in env.items()]


def _env_map(items: tuple[str, ...]) -> dict[str, str]:
    pairs = (item.partition("=") for item in items)
    return {key: value for key, _, value in pairs}


def working_dir(container: ContainerInput, image: ImageInput) -> str:
    cwd = container.working_dir or image.working_dir or "/"
    return os.path.normpath(os.path.join("/", cwd))


def stop_signal(container: ContainerInput, image: ImageInput) -> str:
    """The signal StopContainer sends first: the CRI's, else the image's, else SIGTERM."""
    sig = container.stop_signal or image.stop_signal or "SIGTERM"
    if sig.isdigit():
        return sig
    sig = sig.upper()
    return sig if sig.startswith("SIG") else "SIG" + sig


def _user(user: ResolvedUser) -> dict[str, Any]:
    return {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)}


# ---- capabilities -----------------------------------------------------------------------


def _cap_name(name: str) -> str:
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in CAPABILITIES:
        raise errors.InvalidArgument(f"unknown capability {shown(name)}")
    return full


def capabilities(sec: SecurityInput, host: HostInfo, default_caps: list[str] | None = None
                 ) -> dict[str, list[str]]:
    """The process's capability sets. Ambient capabilities are also added to every
    other set (the kernel keeps an ambient capability only while it is permitted
    and inheritable). Defaults the daemon does not hold itself are left out; an
    explicit request for one is an error (runc would fail with EPERM)."""
    known = set(host.all_caps)
    if sec.privileged:
        chosen = set(known)
    else:
        chosen = {_cap_name(c) for c in (DEFAULT_CAPS if default_caps is None else default_caps)} & known
        if any(c.upper() == "ALL" for c in sec.cap_add):
            chosen = set(known)
        if any(c.upper() == "ALL" for c in sec.cap_drop):
            chosen = set()
        chosen |= {_cap_name(c) for c in sec.cap_add if c.upper() != "ALL"}
        chosen -= {_cap_name(c) for c in sec.cap_drop if c.upper() != "ALL"}
    ambient = {_cap_name(c) for c in sec.cap_add_ambient}
    chosen |= ambient
    if chosen - known:
        missing = ", ".join(c for c in CAPABILITIES if c in chosen - known)
        raise errors.FailedPrecondition(f"capabilities {missing} were asked for, but the runtime "
                                        "does not hold them itself")
    ordered = [c for c in CAPABILITIES if c in chosen]
    amb = [c for c in CAPABILITIES if c in ambient]
    return {"bounding": ordered, "effective": list(ordered), "permitted": list(ordered),
            "inheritable": list(amb), "ambient": amb}


# ---- AppArmor ------------------------------------------------------------------------------


def apparmor_profile(profile: ProfileInput | None, *, privileged: bool, host: HostInfo,
                     default: str = "") -> str:
    """The AppArmor profile name for the process ("" = none).

    No profile given means RuntimeDefault, which is `default` (a profile the
    operator loaded) or none. On a host without AppArmor only a Localhost
    profile is an error, since it cannot be honoured."""
    profile = profile or ProfileInput("runtime_default")
    if profile.type != "localhost" and profile.localhost_ref:
        raise errors.InvalidArgument("apparmor: localhost_ref is only valid with the Localhost profile type")
    if profile.type == "localhost":
        name = profile.localhost_ref.removeprefix("localhost/")
        if not name:
            raise errors.InvalidArgument("apparmor: the Localhost profile type needs localhost_ref")
        if not host.apparmor_enabled:
            raise errors.FailedPrecondition(f"apparmor profile {shown(name)} requested but AppArmor is not "
                                            "enabled on this host")
        if privileged:
            return ""
        if not _apparmor_loaded(name, host.apparmor_profiles_path):
            raise errors.FailedPrecondition(f"apparmor profile {shown(name)} is not loaded")
        return name
    if profile.type == "unconfined" or privileged or not host.apparmor_enabled:
        return ""
    return default


def _apparmor_loaded(name: str, profiles_path: str) -> bool:
    with open(profiles_path) as f:   # lines: "name (enforce)"
        return any(line.startswith(name + " (") for line in f)


# ---- namespaces --------------------------------------------------------------------------


def _namespaces(container: ContainerInput, sandbox: SandboxInput, host: HostInfo,
                target_pid_ns_path: str | None) -> list[dict[str, str]]:
    ns: list[dict[str, str]] = [{"type": "mount"}]
    pid = _pid_namespace(container, sandbox, target_pid_ns_path)
    if pid is not None:
        ns.append(pid)
    ns.extend(_pod_namespaces(sandbox))
    if host.cgroup_v2 and not container.security.privileged:
        ns.append({"type": "cgroup"})
    return ns


def _pid_namespace(container: ContainerInput, sandbox: SandboxInput,
                   target_pid_ns_path: str | None) -> dict[str, str] | None:
    mode = container.security.namespaces.pid
    if mode == "node":
        return None
    if mode == "container":
        return {"type": "pid"}
    if mode == "target":
        if not target_pid_ns_path:
            raise errors.InvalidArgument(f"container {shown(container.name)}: PID namespace mode TARGET "
                                         "needs the target container's namespace")
        return {"type": "pid", "path": target_pid_ns_path}
    if mode == "pod":
        if sandbox.host_pid:
            return None
        if not sandbox.pid_ns_path:
            raise errors.FailedPrecondition(f"container {shown(container.name)} asks for the pod's PID "
                                            f"namespace but pod sandbox {sandbox.id} does not share one")
        return {"type": "pid", "path": sandbox.pid_ns_path}
    raise errors.InvalidArgument(f"unknown PID namespace mode {shown(mode)}")


def _pod_namespaces(sandbox: SandboxInput) -> list[dict[str, str]]:
    """Network, IPC and UTS: the pod's pinned ones, or none (the host's)."""
    ns = []
    if not sandbox.host_network:
        ns.append({"type": "network", "path": _required(sandbox.netns_path, "network", sandbox)})
        ns.append({"type": "uts", "path": _required(sandbox.uts_ns_path, "UTS", sandbox)})
    if not sandbox.host_ipc:
        ns.append({"type": "ipc", "path": _required(sandbox.ipc_ns_path, "IPC", sandbox)})
    return ns


def _required(path: str | None, what: str, sandbox: SandboxInput) -> str:
    if not path:
        raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} has no {what} namespace")
    return path


def _add_userns(linux: dict[str, Any], userns: UserNamespaceInput | None, sandbox: SandboxInput) -> None:
    if userns is None or userns.mode == "node":
        return
    if userns.mode != "pod":
        raise errors.InvalidArgument(f"user namespace mode {shown(userns.mode)} is not supported "
                                     "(only POD and NODE)")
    if not userns.uids or not userns.gids:
        raise errors.InvalidArgument("a user namespace of mode POD needs uid and gid mappings")
    entry = {"type": "user"}
    if sandbox.user_ns_path:
        entry["path"] = sandbox.user_ns_path
    linux["namespaces"].append(entry)
    linux["uidMappings"] = [_idmap(m) for m in userns.uids]
    linux["gidMappings"] = [_idmap(m) for m in userns.gids]


def _idmap(m: IDMapping) -> dict[str, int]:
    return {"containerID": m.container_id, "hostID": m.host_id, "size": m.length}


# ---- mounts ----------------------------------------------------------------------------------


def _default_mounts(privileged: bool) -> list[dict[str, Any]]:
    rw = "rw" if privileged else "ro"
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", rw]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", rw]},
    ]


def _pod_mounts(sandbox: SandboxInput, readonly: bool) -> list[MountInput]:
    """The pod's files and /dev/shm, as binds (CRI mounts of the same path win)."""
    out = [MountInput(dest, path, readonly=readonly) for dest, path in (
        ("/etc/hostname", sandbox.hostname_path), ("/etc/hosts", sandbox.hosts_path),
        ("/etc/resolv.conf", sandbox.resolv_conf_path)) if path]
    shm = "/dev/shm" if sandbox.host_ipc else sandbox.shm_path
    if shm:
        out.append(MountInput("/dev/shm", shm))
    return out


def _clean(path: str) -> str:
    return os.path.normpath(path)


def _mounts(container: ContainerInput, sandbox: SandboxInput, host: HostInfo,
            create_missing: bool) -> tuple[list[dict[str, Any]], str]:
    """Default mounts, then CRI and pod binds, parents before children; and the
    rootfs propagation the binds need ("" = the runtime's default)."""
    cri_dests = {_clean(m.container_path) for m in container.mounts}
    pod = [m for m in _pod_mounts(sandbox, container.security.readonly_rootfs)
           if m.container_path not in cri_dests]
    binds = [(m, False) for m in container.mounts] + [(m, True) for m in pod]
    binds.sort(key=lambda b: _clean(b[0].container_path).count("/"))  # stable: parents first
    dests = cri_dests | {m.container_path for m in pod}
    out = [m for m in _default_mounts(container.security.privileged)
           if m["destination"] not in dests and not ("/dev" in dests and m["destination"].startswith("/dev/"))]
    propagation = ""
    for m, from_pod in binds:
        entry, wanted = _bind(m, host, create_missing=create_missing and not from_pod, from_pod=from_pod)
        out.append(entry)
        if wanted == "rshared" or (wanted == "rslave" and propagation != "rshared"):
            propagation = wanted
    return out, propagation


def _bind(m: MountInput, host: HostInfo, *, create_missing: bool, from_pod: bool) -> tuple[dict[str, Any], str]:
    where = f"mount {shown(m.container_path)}"
    if not os.path.isabs(m.container_path):
        raise errors.InvalidArgument(f"{where}: container_path must be absolute")
    if m.recursive_readonly and not m.readonly:
        raise errors.InvalidArgument(f"{where}: recursive read-only needs readonly set too")
    if m.recursive_readonly and m.propagation != "private":
        raise errors.InvalidArgument(f"{where}: recursive read-only needs private propagation, "
                                     f"got {m.propagation}")
    if m.image and not m.readonly:
        raise errors.InvalidArgument(f"{where}: an image volume must be read-only")
    if not m.host_path:
        if m.image:
            raise errors.FailedPrecondition(f"{where}: image volume {shown(m.image)} was not resolved to a path")
        raise errors.InvalidArgument(f"{where}: host_path is empty")
    source = _host_source(m.host_path, where, create_missing=create_missing, from_pod=from_pod)
    options = ["rbind"]
    root_propagation = ""
    if m.propagation == "private":
        options.append("rprivate")
    elif m.propagation == "host_to_container":
        _require_propagation(source, host, ("shared:", "master:"), "a shared or slave")
        options.append("rslave")
        root_propagation = "rslave"
    elif m.propagation == "bidirectional":
        _require_propagation(source, host, ("shared:",), "a shared")
        options.append("rshared")
        root_propagation = "rshared"
    else:
        raise errors.InvalidArgument(f"{where}: unknown propagation {shown(m.propagation)}")
    if m.readonly and m.recursive_readonly:
        if not host.rro_supported:
            raise errors.FailedPrecondition(
                f"{where}: recursive read-only mounts need Linux {RRO_MIN_KERNEL[0]}.{RRO_MIN_KERNEL[1]} "
                f"or newer (this kernel is {host.kernel[0]}.{host.kernel[1]})")
        options.append("rro")
    else:
        options.append("ro" if m.readonly else "rw")
    for opt in m.options:
        if opt not in BIND_OPTIONS:
            raise errors.InvalidArgument(f"{where}: mount option {shown(opt)} is not allowed "
                                         f"(allowed: {', '.join(sorted(BIND_OPTIONS))})")
        options.append(opt)
    return {"destination": _clean(m.container_path), "type": "bind", "source": source,
            "options": options}, root_propagation


def _host_source(path: str, where: str, *, create_missing: bool, from_pod: bool) -> str:
    """The real path to bind: symlinks followed (the CRI asks for that); a missing
    hostPath directory is created as containerd and CRI-O do."""
    if not os.path.isabs(path):
        raise errors.InvalidArgument(f"{where}: host_path {shown(path)} must be absolute")
    if not os.path.lexists(path):
        if from_pod:
            raise errors.FailedPrecondition(f"{where}: the pod's file {path} is missing")
        if not create_missing:
            raise errors.InvalidArgument(f"{where}: host_path {shown(path)} does not exist")
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError as e:   # a file on the way, a read-only filesystem: the request's fault
            raise errors.InvalidArgument(f"{where}: host_path {shown(path)} cannot be created: "
                                         f"{e.strerror}") from None
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise errors.InvalidArgument(f"{where}: host_path {path} is a dangling symlink (to {real})")
    return real


def _require_propagation(source: str, host: HostInfo, tags: tuple[str, ...], kind: str) -> None:
    mount_point, optional = _mount_of(source, host.mountinfo_path)
    if not any(field.startswith(tags) for field in optional):
        raise errors.FailedPrecondition(f"path {source} is mounted on {mount_point} but it is not "
                                        f"{kind} mount (needed for its mount propagation)")


def _mount_of(path: str, mountinfo_path: str) -> tuple[str, list[str]]:
    """The mount point holding `path` and that mount's optional fields (shared:N, master:N)."""
    best, best_optional = "", []
    with open(mountinfo_path) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            point = _unescape(fields[4])
            if _is_under(path, point) and len(point) >= len(best):
                best, best_optional = point, fields[6:sep]
    if not best:
        raise errors.FailedPrecondition(f"no mount holds {path}")
    return best, best_optional


def _is_under(path: str, point: str) -> bool:
    return point == "/" or path == point or path.startswith(point.rstrip("/") + "/")


def _unescape(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


# ---- devices ---------------------------------------------------------------------------------


def _devices(requested: tuple[DeviceInput, ...], host: HostInfo, privileged: bool
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """linux.devices and the device cgroup rules: deny all but what is asked for,
    or every host device and allow all when privileged."""
    devices = {d["path"]: d for d in _host_devices(host.dev_root)} if privileged else {}
    rules: list[dict[str, Any]] = [{"allow": privileged, "access": "rwm"}]
    for req in requested:
        perms = req.permissions or "rwm"
        if not perms or set(perms) - set("rwm"):
            raise errors.InvalidArgument(f"device {shown(req.host_path)}: permissions {shown(perms)} "
                                         "must be made of r, w and m")
        for dev in _devices_at(req.host_path, req.container_path or req.host_path):
            devices[dev["path"]] = dev
            if not privileged:
                rules.append({"allow": True, "type": dev["type"], "major": dev["major"],
                              "minor": dev["minor"], "access": perms})
    return list(devices.values()), rules


def _devices_at(host_path: str, container_path: str) -> list[dict[str, Any]]:
    real = os.path.realpath(host_path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise errors.InvalidArgument(f"device {shown(host_path)} does not exist") from None
    except OSError as e:   # a file on the way, a loop of links: the request's fault
        raise errors.InvalidArgument(f"device {shown(host_path)}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return _host_devices(real, container_path)
    dev = _device(real, st, container_path)
    if dev is None:
        raise errors.InvalidArgument(f"device {host_path} is not a block or character device")
    return [dev]


def _device(path: str, st: os.stat_result, container_path: str) -> dict[str, Any] | None:
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {"path": container_path, "type": kind, "major": os.major(st.st_rdev),
            "minor": os.minor(st.st_rdev), "fileMode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid, "gid": st.st_gid}


def _host_devices(root: str, container_root: str = "/dev") -> list[dict[str, Any]]:
    """Every block and character device under `root` (symlinks, FIFOs, the
    console and pts/shm/mqueue directories left out)."""
    out = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        target = os.path.join(container_root, entry.name)
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIP_DEV_DIRS:
                out.extend(_host_devices(entry.path, target))
            continue
        if entry.name == "console":
            continue
        try:
            st = os.lstat(entry.path)
        except FileNotFoundError:   # /dev changes under us (udev)
            continue
        dev = _device(entry.path, st, target)
        if dev is not None:
            out.append(dev)
    return out


# ---- resources ---------------------------------------------------------------------------------


def linux_resources(res: ResourcesInput, host: HostInfo | None = None) -> dict[str, Any]:
    """`res` as an OCI LinuxResources object without device rules: what
    UpdateContainerResources hands to `runc update --resources`."""
    return _resources(res, host or detect_host())


def _resources(res: ResourcesInput | None, host: HostInfo) -> dict[str, Any]:
    if res is None:
        return {}
    for name in ("cpu_period", "cpu_shares"):
        if getattr(res, name) < 0:
            raise errors.InvalidArgument(f"resources.{name} must not be negative")
    out: dict[str, Any] = {}
    cpu = {k: v for k, v in (("shares", res.cpu_shares), ("quota", res.cpu_quota),
                             ("period", res.cpu_period), ("cpus", res.cpuset_cpus),
                             ("mems", res.cpuset_mems)) if v}
    if cpu:
        out["cpu"] = cpu
    memory = _memory(res, host)
    if memory:
        out["memory"] = memory
    if res.hugepage_limits:
        if host.hugetlb_controller:
            out["hugepageLimits"] = [{"pageSize": size, "limit": limit} for size, limit in res.hugepage_limits]
        elif any(limit for _size, limit in res.hugepage_limits):
            # containerd's default too (tolerate_missing_hugetlb_controller). Zero limits
            # (what a kubelet sends for every container) are dropped without a word.
            log.warning("hugepage limits ignored: no hugetlb cgroup controller on this host")
    if res.unified:
        if not host.cgroup_v2:
            raise errors.InvalidArgument("resources.unified needs a cgroup v2 host")
        out["unified"] = dict(res.unified)
    return out


def _memory(res: ResourcesInput, host: HostInfo) -> dict[str, int]:
    memory: dict[str, int] = {}
    if res.memory_limit_in_bytes:
        memory["limit"] = res.memory_limit_in_bytes
        if host.swap_controller:   # no swap beyond the limit unless asked for
            memory["swap"] = res.memory_limit_in_bytes
    if res.memory_swap_limit_in_bytes and host.swap_controller:
        memory["swap"] = res.memory_swap_limit_in_bytes
    return memory


# ---- annotations -------------------------------------------------------------------------------


def _pod_annotations(sandbox: SandboxInput) -> dict[str, str]:
    return {ANN_SANDBOX_ID: sandbox.id, ANN_SANDBOX_NAME: sandbox.name,
            ANN_SANDBOX_NAMESPACE: sandbox.namespace, ANN_SANDBOX_UID: sandbox.uid}


def _annotations(container: ContainerInput, sandbox: SandboxInput, image: ImageInput) -> dict[str, str]:
    out = {k: v for k, v in container.annotations.items() if not k.startswith(RESERVED_ANNOTATIONS)}
    out.update(_pod_annotations(sandbox))
    out.update({ANN_CONTAINER_TYPE: "container", ANN_CONTAINER_NAME: container.name,
                ANN_IMAGE_NAME: image.name})
    return out


# ---- infra (pause) process -----------------------------------------------------------------------


def build_infra_spec(sandbox: SandboxInput, image: ImageInput, *, rootfs: str, cgroups_path: str,
                     host: HostInfo | None = None, apparmor_default: str = "") -> dict[str, Any]:
    """The config.json of the pause process of a pod whose containers share one PID
    namespace: it owns that namespace (and reaps its orphans), joins the pod's
    network, IPC and UTS namespaces, and runs with no capabilities on a
    read-only rootfs."""
    host = host or detect_host()
    pod = sandbox.security
    args = list(image.entrypoint if image.entrypoint != ("",) else ()) + list(image.cmd)
    if not args:
        raise errors.InvalidArgument(f"pause image {shown(image.name)} has no entrypoint or command")
    user = resolve_user(SecurityInput(run_as_user=pod.run_as_user, run_as_group=pod.run_as_group,
                                      supplemental_groups=pod.supplemental_groups),
                        image.user, image.rootfs or rootfs)
    env = {"PATH": DEFAULT_PATH, **_env_map(image.env)}
    linux: dict[str, Any] = {
        "namespaces": [{"type": "mount"}, {"type": "pid"}, *_pod_namespaces(sandbox)]
        + ([{"type": "cgroup"}] if host.cgroup_v2 else []),
        "cgroupsPath": cgroups_path,
        "resources": {"devices": [{"allow": False, "access": "rwm"}],
                      "cpu": {"shares": SANDBOX_CPU_SHARES}},
        "maskedPaths": list(DEFAULT_MASKED_PATHS),
        "readonlyPaths": list(DEFAULT_READONLY_PATHS),
    }
    _add_userns(linux, pod.userns, sandbox)
    if sandbox.sysctls:
        linux["sysctl"] = dict(sandbox.sysctls)
    profile = seccomp.seccomp_for(pod.seccomp, privileged=pod.privileged, caps=(), arch=host.arch,
                                  kernel=host.kernel, default_path=host.seccomp_default_path)
    if profile is not None:
        linux["seccomp"] = profile
    process: dict[str, Any] = {
        "terminal": False, "user": _user(user), "args": args,
        "env": [f"{k}={v}" for k, v in env.items()], "cwd": "/",
        "capabilities": {k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")},
        "noNewPrivileges": True, "oomScoreAdj": clamp_oom_score_adj(SANDBOX_OOM_SCORE_ADJ, host, sandbox.id),
    }
    profile_name = apparmor_profile(pod.apparmor, privileged=pod.privileged, host=host,
                                    default=apparmor_default)
    if profile_name:
        process["apparmorProfile"] = profile_name
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION, "process": process,
        "root": {"path": rootfs, "readonly": True},
        "mounts": _default_mounts(privileged=False),
        "annotations": {**_pod_annotations(sandbox), ANN_CONTAINER_TYPE: "sandbox",
                        ANN_SANDBOX_LOG_DIR: sandbox.log_directory, ANN_SANDBOX_IMAGE: image.name},
        "linux": linux,
    }
    if not sandbox.host_network and sandbox.hostname:
        spec["hostname"] = sandbox.hostname
    return spec
