"""CRI protobuf -> runtime types: every request's conversion, in one place (the
answers, runtime -> CRI, are built by each area's module).

Structural checks live here, with the field's path in the message
("config.mounts[1].propagation: unknown value 7"); what a field's value means
for the container (recursive read-only rules, capabilities, users) is checked
by the spec builder.

proto3 cannot tell an empty repeated field from an absent one, so an empty
masked_paths / readonly_paths list means "the defaults".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

from google.protobuf import json_format

from api import api_pb2 as pb
from runtime import errors
from runtime.errors import shown
from runtime.images.registry import Credentials
from runtime.oci.specinput import (
    NAMESPACE_MODES, PROPAGATIONS, ContainerInput, DeviceInput, GroupsPolicy, IDMapping, MountInput,
    NamespaceMode, NamespacesInput, PodSecurityInput, ProfileInput, ProfileType, Propagation, ResourcesInput,
    SecurityInput, UserNamespaceInput,
)
from runtime.podspec import PodSpec, PortMapping
from runtime.pods import PodRequest

log = logging.getLogger("criservice.convert")

T = TypeVar("T")

# Linux's limits on a path: NAME_MAX bytes a component, PATH_MAX with its closing NUL.
NAME_MAX = 255
PATH_MAX = 4096

_PROPAGATION_PB: dict[Propagation, pb.MountPropagation] = {
    "private": pb.PROPAGATION_PRIVATE,
    "host_to_container": pb.PROPAGATION_HOST_TO_CONTAINER,
    "bidirectional": pb.PROPAGATION_BIDIRECTIONAL,
}
_PROPAGATION: dict[int, Propagation] = {int(v): k for k, v in _PROPAGATION_PB.items()}
_NAMESPACE_PB: dict[NamespaceMode, pb.NamespaceMode] = {
    "pod": pb.POD, "container": pb.CONTAINER, "node": pb.NODE, "target": pb.TARGET,
}
_NAMESPACE: dict[int, NamespaceMode] = {int(v): k for k, v in _NAMESPACE_PB.items()}
_PROFILE: dict[int, ProfileType] = {
    pb.SecurityProfile.RuntimeDefault: "runtime_default",
    pb.SecurityProfile.Unconfined: "unconfined",
    pb.SecurityProfile.Localhost: "localhost",
}
_GROUPS_POLICY: dict[int, GroupsPolicy] = {pb.Merge: "merge", pb.Strict: "strict"}
assert set(_PROPAGATION.values()) == set(PROPAGATIONS) and set(_NAMESPACE.values()) == set(NAMESPACE_MODES)


def _enum(table: Mapping[int, T], value: int, field: str) -> T:
    try:
        return table[value]
    except KeyError:
        raise errors.InvalidArgument(f"{field}: unknown value {value}") from None


def namespace_mode(value: int, field: str = "namespace mode") -> NamespaceMode:
    return _enum(_NAMESPACE, value, field)


def signal_name(value: int, field: str = "config.stop_signal") -> str:
    """"SIGTERM" for SIGNAL_SIGTERM, "SIGRTMIN+3" for SIGNAL_SIGRTMINPLUS3; "" for the default."""
    if value == pb.SIGNAL_RUNTIME_DEFAULT:
        return ""
    try:
        name = pb.Signal.Name(value).removeprefix("SIGNAL_")
    except ValueError:
        raise errors.InvalidArgument(f"{field}: unknown value {value}") from None
    return name.replace("RTMINPLUS", "RTMIN+").replace("RTMAXMINUS", "RTMAX-")


def path(value: str, field: str) -> str:
    """`value`, if the kernel can take it as a path; a longer one would fail with
    ENAMETOOLONG deep in the spec builder or in runc, naming no field."""
    size = len(value.encode())
    if size >= PATH_MAX:
        raise errors.InvalidArgument(f"{field}: the path is longer than {PATH_MAX - 1} bytes ({size} bytes)")
    if size > NAME_MAX:   # else no component can be too long
        for component in value.split("/"):
            if len(component.encode()) > NAME_MAX:
                raise errors.InvalidArgument(f"{field}: a path component is longer than {NAME_MAX} bytes: "
                                             f"{shown(component, 16)}")
    return value


def _paths(values: Sequence[str], field: str) -> tuple[str, ...]:
    return tuple(path(v, f"{field}[{i}]") for i, v in enumerate(values))


# ---- resources ------------------------------------------------------------------------------


def resources_input(res: pb.LinuxContainerResources) -> ResourcesInput:
    return ResourcesInput(
        cpu_period=res.cpu_period, cpu_quota=res.cpu_quota, cpu_shares=res.cpu_shares,
        memory_limit_in_bytes=res.memory_limit_in_bytes, oom_score_adj=res.oom_score_adj,
        cpuset_cpus=res.cpuset_cpus, cpuset_mems=res.cpuset_mems,
        hugepage_limits=tuple((h.page_size, h.limit) for h in res.hugepage_limits),
        unified=dict(res.unified), memory_swap_limit_in_bytes=res.memory_swap_limit_in_bytes)


def resources_to_pb(res: ResourcesInput) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(
        cpu_period=res.cpu_period, cpu_quota=res.cpu_quota, cpu_shares=res.cpu_shares,
        memory_limit_in_bytes=res.memory_limit_in_bytes, oom_score_adj=res.oom_score_adj,
        cpuset_cpus=res.cpuset_cpus, cpuset_mems=res.cpuset_mems,
        hugepage_limits=[pb.HugepageLimit(page_size=size, limit=limit) for size, limit in res.hugepage_limits],
        unified=dict(res.unified), memory_swap_limit_in_bytes=res.memory_swap_limit_in_bytes)


# ---- mounts and devices ------------------------------------------------------------------------


def mount_input(m: pb.Mount, field: str) -> MountInput:
    if not m.container_path:
        raise errors.InvalidArgument(f"{field}.container_path is empty")
    image = m.image.image if m.HasField("image") else ""
    if m.HasField("image") and not image:
        raise errors.InvalidArgument(f"{field}.image.image is empty")
    if image and m.host_path:
        raise errors.InvalidArgument(f"{field}: host_path and image are mutually exclusive")
    if not image and not m.host_path:
        raise errors.InvalidArgument(f"{field}.host_path is empty")
    if m.image_sub_path and not image:
        raise errors.InvalidArgument(f"{field}.image_sub_path is only valid with image")
    if m.uidMappings or m.gidMappings:
        raise errors.InvalidArgument(f"{field}: id-mapped mounts (uidMappings, gidMappings) are not supported")
    return MountInput(
        container_path=path(m.container_path, f"{field}.container_path"),
        host_path=path(m.host_path, f"{field}.host_path"), readonly=m.readonly,
        recursive_readonly=m.recursive_read_only,
        propagation=_enum(_PROPAGATION, m.propagation, f"{field}.propagation"),
        selinux_relabel=m.selinux_relabel, image=image,
        image_sub_path=path(m.image_sub_path, f"{field}.image_sub_path"), options=tuple(m.mount_options))


def mount_to_pb(m: MountInput) -> pb.Mount:
    """For ContainerStatus.mounts: what was asked for (image volumes by reference)."""
    msg = pb.Mount(container_path=m.container_path, host_path="" if m.image else m.host_path,
                   readonly=m.readonly, recursive_read_only=m.recursive_readonly,
                   selinux_relabel=m.selinux_relabel, propagation=_PROPAGATION_PB[m.propagation],
                   image_sub_path=m.image_sub_path, mount_options=list(m.options))
    if m.image:
        msg.image.image = m.image
    return msg


def device_input(d: pb.Device, field: str) -> DeviceInput:
    if not d.host_path:
        raise errors.InvalidArgument(f"{field}.host_path is empty")
    perms = d.permissions or "rwm"
    if set(perms) - set("rwm"):
        raise errors.InvalidArgument(f"{field}.permissions: {shown(d.permissions)} must be made of r, w and m")
    return DeviceInput(container_path=path(d.container_path, f"{field}.container_path") or d.host_path,
                       host_path=path(d.host_path, f"{field}.host_path"), permissions=perms)


# ---- security -----------------------------------------------------------------------------------


def profile_input(sp: pb.SecurityProfile, field: str) -> ProfileInput:
    kind = _enum(_PROFILE, sp.profile_type, f"{field}.profile_type")
    if kind == "localhost" and not sp.localhost_ref:
        raise errors.InvalidArgument(f"{field}.localhost_ref is empty (needed with profile_type Localhost)")
    if kind != "localhost" and sp.localhost_ref:
        raise errors.InvalidArgument(f"{field}.localhost_ref is only valid with profile_type Localhost")
    return ProfileInput(kind, sp.localhost_ref)


def _deprecated_profile(value: str, field: str, *, seccomp: bool) -> ProfileInput | None:
    """The deprecated string fields: "" (seccomp: unconfined; AppArmor: runtime default),
    runtime/default, docker/default, unconfined, localhost/<path or name>."""
    if not value:
        return None
    if value in ("runtime/default", "docker/default"):
        return ProfileInput("runtime_default")
    if value == "unconfined":
        return ProfileInput("unconfined")
    if value.startswith("localhost/") and len(value) > len("localhost/"):
        ref = value.removeprefix("localhost/")
        return ProfileInput("localhost", ref)
    kind = "seccomp" if seccomp else "AppArmor"
    raise errors.InvalidArgument(f"{field}: {shown(value)} is not a valid {kind} profile "
                                 "(runtime/default, unconfined or localhost/...)")


def _seccomp(ctx: pb.LinuxContainerSecurityContext | pb.LinuxSandboxSecurityContext,
             field: str) -> ProfileInput | None:
    if ctx.HasField("seccomp"):
        return profile_input(ctx.seccomp, f"{field}.seccomp")
    return _deprecated_profile(ctx.seccomp_profile_path, f"{field}.seccomp_profile_path", seccomp=True)


def _apparmor(ctx: pb.LinuxContainerSecurityContext | pb.LinuxSandboxSecurityContext,
              field: str) -> ProfileInput | None:
    if ctx.HasField("apparmor"):
        return profile_input(ctx.apparmor, f"{field}.apparmor")
    deprecated = getattr(ctx, "apparmor_profile", "")   # the pod context has no deprecated field
    return _deprecated_profile(deprecated, f"{field}.apparmor_profile", seccomp=False)


def _ids(values: Sequence[int], field: str) -> tuple[int, ...]:
    for i, v in enumerate(values):
        if v < 0:
            raise errors.InvalidArgument(f"{field}[{i}] is negative ({v})")
    return tuple(values)


def _optional_id(ctx: pb.LinuxContainerSecurityContext | pb.LinuxSandboxSecurityContext,
                 name: Literal["run_as_user", "run_as_group"], field: str) -> int | None:
    if not ctx.HasField(name):
        return None
    value = getattr(ctx, name).value
    if value < 0:
        raise errors.InvalidArgument(f"{field}.{name} is negative ({value})")
    return int(value)


def userns_input(u: pb.UserNamespace, field: str) -> UserNamespaceInput:
    """A user namespace request: NODE without mappings, or POD with one uid and one
    gid mapping that maps container id 0 (what the kubelet sends)."""
    mode = namespace_mode(u.mode, f"{field}.mode")
    if mode not in ("pod", "node"):
        raise errors.InvalidArgument(f"{field}.mode: {mode.upper()} is not supported for user "
                                     "namespaces (only POD and NODE)")
    uids = tuple(IDMapping(m.container_id, m.host_id, m.length) for m in u.uids)
    gids = tuple(IDMapping(m.container_id, m.host_id, m.length) for m in u.gids)
    if mode == "node":
        if uids or gids:
            raise errors.InvalidArgument(f"{field}: mode NODE takes no uid or gid mappings")
        return UserNamespaceInput("node")
    for name, maps in (("uids", uids), ("gids", gids)):
        if len(maps) != 1:
            raise errors.InvalidArgument(f"{field}.{name}: exactly one mapping is supported, got {len(maps)}")
        if maps[0].container_id != 0 or maps[0].length == 0:
            raise errors.InvalidArgument(f"{field}.{name}: the mapping must start at container id 0 "
                                         "and have a non-zero length")
    return UserNamespaceInput("pod", uids, gids)


def namespaces_input(ns: pb.NamespaceOption, field: str) -> NamespacesInput:
    pid = namespace_mode(ns.pid, f"{field}.pid")
    if pid == "target" and not ns.target_id:
        raise errors.InvalidArgument(f"{field}.target_id is empty (needed with pid TARGET)")
    return NamespacesInput(
        network=namespace_mode(ns.network, f"{field}.network"), pid=pid,
        ipc=namespace_mode(ns.ipc, f"{field}.ipc"), target_id=ns.target_id,
        userns=userns_input(ns.userns_options, f"{field}.userns_options")
        if ns.HasField("userns_options") else None)


def namespace_option(ns: NamespacesInput) -> pb.NamespaceOption:
    """The CRI form of namespace options, as PodSandboxStatus shows them."""
    out = pb.NamespaceOption(network=_NAMESPACE_PB[ns.network], pid=_NAMESPACE_PB[ns.pid], ipc=_NAMESPACE_PB[ns.ipc],
                             target_id=ns.target_id)
    if ns.userns is not None:
        out.userns_options.CopyFrom(pb.UserNamespace(
            mode=_NAMESPACE_PB[ns.userns.mode],
            uids=[pb.IDMapping(host_id=m.host_id, container_id=m.container_id, length=m.length)
                  for m in ns.userns.uids],
            gids=[pb.IDMapping(host_id=m.host_id, container_id=m.container_id, length=m.length)
                  for m in ns.userns.gids]))
    return out


def pod_namespaces(cfg: pb.PodSandboxConfig) -> NamespacesInput | None:
    """A pod's namespace options, which stand in for a container's own when it has none."""
    ctx = cfg.linux.security_context
    if not ctx.HasField("namespace_options"):
        return None
    return namespaces_input(ctx.namespace_options, "sandbox_config.linux.security_context.namespace_options")


def security_input(ctx: pb.LinuxContainerSecurityContext, field: str,
                   pod_namespaces: NamespacesInput | None = None) -> SecurityInput:
    """`pod_namespaces` stand in when the container has no namespace_options of its
    own (the kubelet always sends both; crictl's container configs often do not)."""
    if ctx.HasField("namespace_options"):
        namespaces = namespaces_input(ctx.namespace_options, f"{field}.namespace_options")
    else:
        namespaces = pod_namespaces or NamespacesInput()
    caps = ctx.capabilities
    return SecurityInput(
        cap_add=tuple(caps.add_capabilities), cap_drop=tuple(caps.drop_capabilities),
        cap_add_ambient=tuple(caps.add_ambient_capabilities), privileged=ctx.privileged,
        namespaces=namespaces,
        run_as_user=_optional_id(ctx, "run_as_user", field),
        run_as_group=_optional_id(ctx, "run_as_group", field),
        run_as_username=ctx.run_as_username, readonly_rootfs=ctx.readonly_rootfs,
        supplemental_groups=_ids(ctx.supplemental_groups, f"{field}.supplemental_groups"),
        supplemental_groups_policy=_enum(_GROUPS_POLICY, ctx.supplemental_groups_policy,
                                         f"{field}.supplemental_groups_policy"),
        no_new_privs=ctx.no_new_privs,
        masked_paths=_paths(ctx.masked_paths, f"{field}.masked_paths") or None,
        readonly_paths=_paths(ctx.readonly_paths, f"{field}.readonly_paths") or None,
        seccomp=_seccomp(ctx, field), apparmor=_apparmor(ctx, field))


def pod_security_input(ctx: pb.LinuxSandboxSecurityContext,
                       field: str = "config.linux.security_context") -> PodSecurityInput:
    run_as_user = _optional_id(ctx, "run_as_user", field)
    run_as_group = _optional_id(ctx, "run_as_group", field)
    if run_as_group is not None and run_as_user is None:
        raise errors.InvalidArgument(f"{field}.run_as_group is set without run_as_user")
    ns = ctx.namespace_options
    userns = userns_input(ns.userns_options, f"{field}.namespace_options.userns_options") \
        if ns.HasField("userns_options") else None
    return PodSecurityInput(
        privileged=ctx.privileged, run_as_user=run_as_user, run_as_group=run_as_group,
        supplemental_groups=_ids(ctx.supplemental_groups, f"{field}.supplemental_groups"),
        readonly_rootfs=ctx.readonly_rootfs, seccomp=_seccomp(ctx, field),
        apparmor=_apparmor(ctx, field), userns=userns)


# ---- the container -------------------------------------------------------------------------------


def _env(kv: pb.KeyValue, field: str) -> tuple[str, str]:
    # KeyValue.value is bytes in the CRI; config.json is JSON text, so it must be UTF-8.
    if not kv.key or "=" in kv.key:
        raise errors.InvalidArgument(f"{field}.key {shown(kv.key)} is not a variable name")
    try:
        return kv.key, kv.value.decode()
    except UnicodeDecodeError:
        raise errors.InvalidArgument(f"{field}.value is not UTF-8 text") from None


def container_input(config: pb.ContainerConfig, pod_namespaces: NamespacesInput | None) -> ContainerInput:
    if not config.HasField("metadata") or not config.metadata.name:
        raise errors.InvalidArgument("config.metadata.name is empty")
    if not config.HasField("image") or not config.image.image:
        raise errors.InvalidArgument("config.image.image is empty")
    if config.CDI_devices:   # refused rather than ignored: the container would run without its device
        raise errors.Unimplemented("config.CDI_devices: CDI devices are not supported")
    linux = config.linux
    return ContainerInput(
        name=config.metadata.name, attempt=config.metadata.attempt,
        command=tuple(config.command), args=tuple(config.args),
        working_dir=path(config.working_dir, "config.working_dir"),
        envs=tuple(_env(kv, f"config.envs[{i}]") for i, kv in enumerate(config.envs)),
        mounts=tuple(mount_input(m, f"config.mounts[{i}]") for i, m in enumerate(config.mounts)),
        devices=tuple(device_input(d, f"config.devices[{i}]") for i, d in enumerate(config.devices)),
        labels=dict(config.labels), annotations=dict(config.annotations), log_path=config.log_path,
        tty=config.tty, stdin=config.stdin, stdin_once=config.stdin_once,
        resources=resources_input(linux.resources) if linux.HasField("resources") else None,
        security=security_input(linux.security_context, "config.linux.security_context", pod_namespaces),
        stop_signal=signal_name(config.stop_signal))


# ---- the pod ------------------------------------------------------------------------------------

_PROTOCOLS = {pb.Protocol.TCP: "tcp", pb.Protocol.UDP: "udp", pb.Protocol.SCTP: "sctp"}


def pod_request(request: pb.RunPodSandboxRequest) -> PodRequest:
    """The runtime's view of a RunPodSandbox request; the CRI config itself is kept as bytes."""
    cfg = request.config
    if not request.HasField("config"):
        raise errors.InvalidArgument("config is missing")
    if not cfg.HasField("metadata"):
        raise errors.InvalidArgument("config.metadata is missing")
    return PodRequest(
        name=cfg.metadata.name, namespace=cfg.metadata.namespace, uid=cfg.metadata.uid,
        attempt=cfg.metadata.attempt, handler=request.runtime_handler, config=cfg.SerializeToString(),
        labels=dict(cfg.labels), annotations=dict(cfg.annotations), pod=pod_spec(cfg))


def pod_spec(cfg: pb.PodSandboxConfig) -> PodSpec:
    """The pod's settings in runtime types, made once at RunPodSandbox."""
    ctx = cfg.linux.security_context
    ns = ctx.namespace_options
    field = "config.linux.security_context.namespace_options"
    if pb.NamespaceMode.TARGET in (ns.network, ns.ipc, ns.pid):
        raise errors.InvalidArgument(f"{field}: TARGET is only valid for the PID namespace of a container")
    ports = []
    for i, pm in enumerate(cfg.port_mappings):
        if pm.protocol not in _PROTOCOLS:
            raise errors.InvalidArgument(f"config.port_mappings[{i}].protocol: unknown protocol {pm.protocol}")
        ports.append(PortMapping(_PROTOCOLS[pm.protocol], pm.container_port, pm.host_port, pm.host_ip))
    return PodSpec(
        hostname=cfg.hostname, log_directory=cfg.log_directory,
        dns_servers=tuple(cfg.dns_config.servers), dns_searches=tuple(cfg.dns_config.searches),
        dns_options=tuple(cfg.dns_config.options), port_mappings=tuple(ports),
        host_network=ns.network == pb.NamespaceMode.NODE, host_ipc=ns.ipc == pb.NamespaceMode.NODE,
        host_pid=ns.pid == pb.NamespaceMode.NODE,
        # The CRI's zero value for the PID mode is POD: the pod's containers share one namespace.
        shared_pid=ns.pid == pb.NamespaceMode.POD,
        cgroup_parent=cfg.linux.cgroup_parent, sysctls=dict(cfg.linux.sysctls),
        security=pod_security_input(ctx),
        namespaces=namespaces_input(ns, field) if ctx.HasField("namespace_options") else None)


class LegacyRecords:
    """Reads what a state database of before typed records kept as CRI protobuf."""

    def pod_spec(self, config: bytes) -> PodSpec:
        cfg = pb.PodSandboxConfig.FromString(config)
        try:
            return pod_spec(cfg)
        except errors.CRIError as e:
            # The code of then took it; the record's own keys still give what it ran with.
            log.warning("a recorded pod's config does not convert; its security context is the default",
                        extra={"fields": {"pod": cfg.metadata.name, "error": str(e)}})
            return PodSpec()

    def resources(self, message: dict[str, Any]) -> ResourcesInput:
        return resources_input(json_format.ParseDict(message, pb.LinuxContainerResources()))


# ---- images -------------------------------------------------------------------------------------


def credentials(auth: pb.AuthConfig) -> Credentials | None:
    if not (auth.username or auth.password or auth.auth or auth.identity_token or auth.registry_token):
        return None
    return Credentials(username=auth.username, password=auth.password, auth=auth.auth,
                       identity_token=auth.identity_token, registry_token=auth.registry_token)
