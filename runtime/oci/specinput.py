"""What the OCI spec builder needs, as plain frozen dataclasses (no protobuf).

criservice/convert.py fills these from CRI messages; the pod and image code
fill in the host-side facts (namespace paths, pod files, the mounted rootfs).
Sequences are tuples so an input cannot change under the builder; maps are
plain dicts the builder only reads.

Conventions: an empty string means "not set"; `None` means "not given" where
the difference from an empty value matters (masked paths, profiles, user ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

NamespaceMode = Literal["pod", "container", "node", "target"]
Propagation = Literal["private", "host_to_container", "bidirectional"]
ProfileType = Literal["runtime_default", "unconfined", "localhost"]
GroupsPolicy = Literal["merge", "strict"]

NAMESPACE_MODES: tuple[NamespaceMode, ...] = ("pod", "container", "node", "target")
PROPAGATIONS: tuple[Propagation, ...] = ("private", "host_to_container", "bidirectional")
PROFILE_TYPES: tuple[ProfileType, ...] = ("runtime_default", "unconfined", "localhost")


@dataclass(frozen=True)
class MountInput:
    container_path: str
    host_path: str = ""                 # for an image volume: filled in by the caller
    readonly: bool = False
    recursive_readonly: bool = False    # needs readonly and private propagation
    propagation: Propagation = "private"
    selinux_relabel: bool = False       # recorded; SELinux is not supported
    image: str = ""                     # image volume: the image reference the caller resolved
    image_sub_path: str = ""            # image volume: the sub path the caller resolved
    options: tuple[str, ...] = ()       # extra bind options (CRI mount_options: nosuid, nodev, noexec...)


@dataclass(frozen=True)
class DeviceInput:
    container_path: str
    host_path: str
    permissions: str = "rwm"            # any of r, w, m


@dataclass(frozen=True)
class ResourcesInput:
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepage_limits: tuple[tuple[str, int], ...] = ()   # (page size such as "2MB", limit in bytes)
    unified: Mapping[str, str] = field(default_factory=dict)
    memory_swap_limit_in_bytes: int = 0


@dataclass(frozen=True)
class IDMapping:
    container_id: int
    host_id: int
    length: int


@dataclass(frozen=True)
class UserNamespaceInput:
    mode: NamespaceMode = "node"        # only "pod" (a new mapped namespace) and "node" are valid
    uids: tuple[IDMapping, ...] = ()
    gids: tuple[IDMapping, ...] = ()


@dataclass(frozen=True)
class NamespacesInput:
    network: NamespaceMode = "pod"
    pid: NamespaceMode = "pod"
    ipc: NamespaceMode = "pod"
    target_id: str = ""                 # the container whose PID namespace "target" joins
    userns: UserNamespaceInput | None = None


@dataclass(frozen=True)
class ProfileInput:
    type: ProfileType = "runtime_default"
    localhost_ref: str = ""             # seccomp: absolute path of a JSON profile; AppArmor: profile name


@dataclass(frozen=True)
class SecurityInput:
    cap_add: tuple[str, ...] = ()       # "NET_ADMIN", "CAP_NET_ADMIN" or "ALL"
    cap_drop: tuple[str, ...] = ()
    cap_add_ambient: tuple[str, ...] = ()
    privileged: bool = False
    namespaces: NamespacesInput = NamespacesInput()
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    readonly_rootfs: bool = False
    supplemental_groups: tuple[int, ...] = ()
    supplemental_groups_policy: GroupsPolicy = "merge"
    no_new_privs: bool = False
    masked_paths: tuple[str, ...] | None = None     # None: the defaults; () : none
    readonly_paths: tuple[str, ...] | None = None
    seccomp: ProfileInput | None = None             # None: unconfined (the CRI's nil profile)
    apparmor: ProfileInput | None = None            # None: the runtime default


@dataclass(frozen=True)
class ContainerInput:
    name: str
    attempt: int = 0
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[MountInput, ...] = ()
    devices: tuple[DeviceInput, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    log_path: str = ""                  # relative to the pod's log directory
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    resources: ResourcesInput | None = None
    security: SecurityInput = SecurityInput()
    stop_signal: str = ""               # "SIGTERM" style; "" = the image's or the runtime default


@dataclass(frozen=True)
class PodSecurityInput:
    """The pod-level security context. The kubelet already folds what applies to
    containers (supplemental groups, fsGroup, seccomp, run-as) into each
    container's own context, so these apply to the infra process only, except
    `privileged`, which gates privileged containers."""

    privileged: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    readonly_rootfs: bool = False
    seccomp: ProfileInput | None = None
    apparmor: ProfileInput | None = None
    userns: UserNamespaceInput | None = None


@dataclass(frozen=True)
class SandboxInput:
    id: str
    name: str = ""
    namespace: str = ""
    uid: str = ""
    attempt: int = 0
    hostname: str = ""
    netns_path: str | None = None       # None when the pod uses the host network
    ipc_ns_path: str | None = None      # None when the pod uses the host IPC namespace
    uts_ns_path: str | None = None      # None with the host network (UTS follows network)
    pid_ns_path: str | None = None      # the infra process's /proc/PID/ns/pid when the pod shares one
    user_ns_path: str | None = None     # a pinned user namespace, when the pod has one
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    cgroup_parent: str = ""
    sysctls: Mapping[str, str] = field(default_factory=dict)
    resolv_conf_path: str = ""
    hosts_path: str = ""
    hostname_path: str = ""
    shm_path: str = ""                  # the pod's /dev/shm directory (unused with host IPC)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    log_directory: str = ""
    runtime_handler: str = ""
    security: PodSecurityInput = PodSecurityInput()


@dataclass(frozen=True)
class ImageInput:
    rootfs: str                         # the mounted image root (read for /etc/passwd and /etc/group)
    name: str = ""                      # the reference the container was created from (annotations)
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()           # "KEY=value"
    working_dir: str = ""
    user: str = ""                      # "name", "uid", "name:group", "uid:gid", "uid:groupname"
    stop_signal: str = ""
    volumes: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
