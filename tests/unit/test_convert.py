"""CRI protobuf -> spec inputs: field mapping, defaults, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from api import api_pb2 as pb
from criservice import convert
from runtime import errors
from runtime.oci.specinput import (
    DeviceInput, IDMapping, MountInput, NamespacesInput, ProfileInput, ResourcesInput, SecurityInput,
    UserNamespaceInput,
)


def config(**kw: Any) -> pb.ContainerConfig:
    kw.setdefault("metadata", pb.ContainerMetadata(name="app", attempt=2))
    kw.setdefault("image", pb.ImageSpec(image="busybox"))
    return pb.ContainerConfig(**kw)


def sec_config(**kw: Any) -> pb.ContainerConfig:
    return config(linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(**kw)))


def convert_security(**kw: Any) -> SecurityInput:
    return convert.container_input(sec_config(**kw), None).security


def test_full_container() -> None:
    cfg = config(
        command=["/bin/sh"], args=["-c", "true"], working_dir="/w",
        envs=[pb.KeyValue(key="A", value=b"1"), pb.KeyValue(key="B", value="é".encode())],
        mounts=[pb.Mount(container_path="/data", host_path="/srv", readonly=True,
                         propagation=pb.PROPAGATION_HOST_TO_CONTAINER, mount_options=["noexec"])],
        devices=[pb.Device(container_path="/dev/x", host_path="/dev/null", permissions="rw")],
        labels={"l": "1"}, annotations={"a": "2"}, log_path="app/0.log", tty=True, stdin=True, stdin_once=True,
        stop_signal=pb.SIGNAL_SIGINT,
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(cpu_shares=2, memory_limit_in_bytes=10),
            security_context=pb.LinuxContainerSecurityContext(
                capabilities=pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["ALL"],
                                           add_ambient_capabilities=["CHOWN"]),
                privileged=True, run_as_user=pb.Int64Value(value=0), run_as_group=pb.Int64Value(value=5),
                readonly_rootfs=True, supplemental_groups=[1, 2], supplemental_groups_policy=pb.Strict,
                no_new_privs=True, masked_paths=["/m"], readonly_paths=["/r"],
                seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
                apparmor=pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref="p"),
                namespace_options=pb.NamespaceOption(pid=pb.CONTAINER, network=pb.NODE, ipc=pb.POD))))
    c = convert.container_input(cfg, None)
    assert (c.name, c.attempt, c.command, c.args, c.working_dir) == ("app", 2, ("/bin/sh",), ("-c", "true"), "/w")
    assert c.envs == (("A", "1"), ("B", "é"))
    assert c.mounts == (MountInput("/data", "/srv", readonly=True, propagation="host_to_container",
                                   options=("noexec",)),)
    assert c.devices == (DeviceInput("/dev/x", "/dev/null", "rw"),)
    assert (c.labels, c.annotations, c.log_path) == ({"l": "1"}, {"a": "2"}, "app/0.log")
    assert (c.tty, c.stdin, c.stdin_once, c.stop_signal) == (True, True, True, "SIGINT")
    assert c.resources == ResourcesInput(cpu_shares=2, memory_limit_in_bytes=10)
    s = c.security
    assert (s.cap_add, s.cap_drop, s.cap_add_ambient) == (("NET_ADMIN",), ("ALL",), ("CHOWN",))
    assert (s.privileged, s.run_as_user, s.run_as_group, s.readonly_rootfs) == (True, 0, 5, True)
    assert (s.supplemental_groups, s.supplemental_groups_policy, s.no_new_privs) == ((1, 2), "strict", True)
    assert (s.masked_paths, s.readonly_paths) == (("/m",), ("/r",))
    assert s.seccomp == ProfileInput("runtime_default") and s.apparmor == ProfileInput("localhost", "p")
    assert s.namespaces == NamespacesInput(network="node", pid="container", ipc="pod")


def test_minimal_container_defaults() -> None:
    c = convert.container_input(config(), None)
    s = c.security
    assert c.resources is None and c.stop_signal == ""
    assert s.run_as_user is None and s.run_as_group is None        # unset, not 0
    assert s.masked_paths is None and s.readonly_paths is None     # proto3: empty means the defaults
    assert s.seccomp is None and s.apparmor is None
    assert s.supplemental_groups_policy == "merge"
    assert s.namespaces == NamespacesInput()


@pytest.mark.parametrize("cfg, text", [
    (pb.ContainerConfig(image=pb.ImageSpec(image="x")), "config.metadata.name is empty"),
    (config(metadata=pb.ContainerMetadata()), "config.metadata.name is empty"),
    (pb.ContainerConfig(metadata=pb.ContainerMetadata(name="a")), "config.image.image is empty"),
    (config(envs=[pb.KeyValue(key="", value=b"x")]), r"config.envs\[0\].key"),
    (config(envs=[pb.KeyValue(key="A=B", value=b"x")]), r"config.envs\[0\].key"),
    (config(envs=[pb.KeyValue(key="A", value=b"\xff")]), r"config.envs\[0\].value is not UTF-8"),
    (config(mounts=[pb.Mount(host_path="/x")]), r"config.mounts\[0\].container_path is empty"),
    (config(mounts=[pb.Mount(container_path="/x")]), r"config.mounts\[0\].host_path is empty"),
    (config(mounts=[pb.Mount(container_path="/a", host_path="/a"),
                    pb.Mount(container_path="/x", host_path="/x", propagation=7)]),  # type: ignore[arg-type]
     r"config.mounts\[1\].propagation: unknown value 7"),
    (config(mounts=[pb.Mount(container_path="/x", host_path="/x", image=pb.ImageSpec(image="i"))]),
     "mutually exclusive"),
    (config(mounts=[pb.Mount(container_path="/x", image=pb.ImageSpec())]), r"config.mounts\[0\].image.image is empty"),
    (config(mounts=[pb.Mount(container_path="/x", host_path="/x", image_sub_path="s")]), "only valid with image"),
    (config(mounts=[pb.Mount(container_path="/x", host_path="/x",
                             uidMappings=[pb.IDMapping(host_id=1, length=1)])]), "id-mapped"),
    (config(devices=[pb.Device(container_path="/d")]), r"config.devices\[0\].host_path is empty"),
    (config(devices=[pb.Device(host_path="/dev/null", permissions="rwx")]), r"config.devices\[0\].permissions"),
    (config(stop_signal=999), "config.stop_signal: unknown value 999"),
    (sec_config(run_as_user=pb.Int64Value(value=-1)), "config.linux.security_context.run_as_user is negative"),
    (sec_config(supplemental_groups=[1, -2]), r"config.linux.security_context.supplemental_groups\[1\] is negative"),
    (sec_config(supplemental_groups_policy=5), "supplemental_groups_policy: unknown value 5"),
    (sec_config(namespace_options=pb.NamespaceOption(ipc=9)),  # type: ignore[arg-type]
     "namespace_options.ipc: unknown value 9"),
    (sec_config(namespace_options=pb.NamespaceOption(pid=pb.TARGET)), "namespace_options.target_id is empty"),
    (sec_config(seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost)),
     "seccomp.localhost_ref is empty"),
    (sec_config(seccomp=pb.SecurityProfile(localhost_ref="/x")), "only valid with profile_type Localhost"),
    (sec_config(seccomp=pb.SecurityProfile(profile_type=8)),  # type: ignore[arg-type]
     "seccomp.profile_type: unknown value 8"),
    (sec_config(seccomp_profile_path="/abs/path"), "seccomp_profile_path: '/abs/path' is not a valid seccomp profile"),
    (sec_config(apparmor_profile="bogus"), "apparmor_profile: 'bogus' is not a valid AppArmor profile"),
])
def test_errors_name_the_field(cfg: pb.ContainerConfig, text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=text):
        convert.container_input(cfg, None)


def test_cdi_devices_are_refused() -> None:
    with pytest.raises(errors.Unimplemented, match="CDI"):
        convert.container_input(config(CDI_devices=[pb.CDIDevice(name="vendor.com/gpu=0")]), None)


@pytest.mark.parametrize("propagation, expected", [
    (pb.PROPAGATION_PRIVATE, "private"), (pb.PROPAGATION_HOST_TO_CONTAINER, "host_to_container"),
    (pb.PROPAGATION_BIDIRECTIONAL, "bidirectional"),
])
def test_propagation(propagation: int, expected: str) -> None:
    mount = pb.Mount(container_path="/x", host_path="/y", propagation=propagation)  # type: ignore[arg-type]
    m = convert.mount_input(mount, "m")
    assert m.propagation == expected


def test_image_volume_and_back() -> None:
    m = convert.mount_input(pb.Mount(container_path="/v", readonly=True, image=pb.ImageSpec(image="sha256:abc"),
                                     image_sub_path="sub", recursive_read_only=True), "m")
    assert m == MountInput("/v", "", readonly=True, recursive_readonly=True, image="sha256:abc",
                           image_sub_path="sub")
    back = convert.mount_to_pb(m)
    assert back.image.image == "sha256:abc" and back.host_path == "" and back.recursive_read_only


@pytest.mark.parametrize("field, value, expected", [
    ("seccomp_profile_path", "", None),
    ("seccomp_profile_path", "runtime/default", ProfileInput("runtime_default")),
    ("seccomp_profile_path", "docker/default", ProfileInput("runtime_default")),
    ("seccomp_profile_path", "unconfined", ProfileInput("unconfined")),
    ("seccomp_profile_path", "localhost//var/lib/p.json", ProfileInput("localhost", "/var/lib/p.json")),
    ("apparmor_profile", "", None),
    ("apparmor_profile", "runtime/default", ProfileInput("runtime_default")),
    ("apparmor_profile", "localhost/my-profile", ProfileInput("localhost", "my-profile")),
])
def test_deprecated_profiles(field: str, value: str, expected: ProfileInput | None) -> None:
    s = convert_security(**{field: value})
    assert (s.seccomp if field.startswith("seccomp") else s.apparmor) == expected


def test_new_profile_field_wins_over_deprecated() -> None:
    s = convert_security(seccomp_profile_path="runtime/default",
                         seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined),
                         apparmor_profile="localhost/old",
                         apparmor=pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref="new"))
    assert s.seccomp == ProfileInput("unconfined") and s.apparmor == ProfileInput("localhost", "new")
    # an empty SecurityProfile message is RuntimeDefault (critest's "seccomp default")
    assert convert_security(seccomp=pb.SecurityProfile()).seccomp == ProfileInput("runtime_default")


def test_namespaces_fall_back_to_the_pods() -> None:
    pod = pb.PodSandboxConfig(linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=pb.NamespaceOption(pid=pb.CONTAINER, network=pb.NODE))))
    assert convert.container_input(config(), convert.pod_namespaces(pod)).security.namespaces == \
        NamespacesInput(network="node", pid="container", ipc="pod")
    own = sec_config(namespace_options=pb.NamespaceOption(pid=pb.NODE))
    assert convert.container_input(own, convert.pod_namespaces(pod)).security.namespaces.pid == "node"


@pytest.mark.parametrize("value, expected", [
    (pb.POD, "pod"), (pb.CONTAINER, "container"), (pb.NODE, "node"), (pb.TARGET, "target"),
])
def test_namespace_mode(value: int, expected: str) -> None:
    assert convert.namespace_mode(value) == expected


def test_namespace_mode_unknown() -> None:
    with pytest.raises(errors.InvalidArgument, match="x.pid: unknown value 4"):
        convert.namespace_mode(4, "x.pid")


def mapping(container_id: int = 0, host_id: int = 1000, length: int = 100000) -> pb.IDMapping:
    return pb.IDMapping(container_id=container_id, host_id=host_id, length=length)


def test_userns_pod() -> None:
    u = convert.userns_input(pb.UserNamespace(mode=pb.POD, uids=[mapping()], gids=[mapping()]), "u")
    assert u == UserNamespaceInput("pod", (IDMapping(0, 1000, 100000),), (IDMapping(0, 1000, 100000),))
    assert convert.userns_input(pb.UserNamespace(mode=pb.NODE), "u") == UserNamespaceInput("node")


@pytest.mark.parametrize("userns, text", [
    (pb.UserNamespace(mode=pb.POD, uids=[mapping(), mapping(host_id=2000)], gids=[mapping()]),
     "exactly one mapping"),
    (pb.UserNamespace(mode=pb.POD, uids=[mapping(container_id=1)], gids=[mapping(container_id=1)]),
     "container id 0"),
    (pb.UserNamespace(mode=pb.POD, uids=[mapping(length=0)], gids=[mapping()]), "non-zero length"),
    (pb.UserNamespace(mode=pb.CONTAINER), "CONTAINER is not supported"),
    (pb.UserNamespace(mode=pb.TARGET), "TARGET is not supported"),
    (pb.UserNamespace(mode=pb.NODE, uids=[mapping()]), "takes no uid or gid mappings"),
])
def test_userns_errors(userns: pb.UserNamespace, text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=text):
        convert.userns_input(userns, "u")


def test_pod_security() -> None:
    ctx = pb.LinuxSandboxSecurityContext(
        privileged=True, run_as_user=pb.Int64Value(value=65535), run_as_group=pb.Int64Value(value=65535),
        supplemental_groups=[3], readonly_rootfs=True, seccomp_profile_path="runtime/default",
        apparmor=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined),
        namespace_options=pb.NamespaceOption(userns_options=pb.UserNamespace(mode=pb.NODE)))
    p = convert.pod_security_input(ctx)
    assert (p.privileged, p.run_as_user, p.run_as_group, p.supplemental_groups, p.readonly_rootfs) == \
        (True, 65535, 65535, (3,), True)
    assert p.seccomp == ProfileInput("runtime_default") and p.apparmor == ProfileInput("unconfined")
    assert p.userns == UserNamespaceInput("node")
    with pytest.raises(errors.InvalidArgument, match="config.linux.security_context.run_as_group is set without"):
        convert.pod_security_input(pb.LinuxSandboxSecurityContext(run_as_group=pb.Int64Value(value=1)))


def test_resources_round_trip() -> None:
    res = pb.LinuxContainerResources(
        cpu_period=100000, cpu_quota=-1, cpu_shares=1024, memory_limit_in_bytes=1 << 30, oom_score_adj=-997,
        cpuset_cpus="0-3", cpuset_mems="0", hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4096)],
        unified={"memory.high": "max"}, memory_swap_limit_in_bytes=2 << 30)
    converted = convert.resources_input(res)
    assert converted.hugepage_limits == (("2MB", 4096),) and converted.unified == {"memory.high": "max"}
    assert convert.resources_to_pb(converted) == res
    assert convert.resources_to_pb(ResourcesInput()) == pb.LinuxContainerResources()


@pytest.mark.parametrize("value, expected", [
    (pb.SIGNAL_RUNTIME_DEFAULT, ""), (pb.SIGNAL_SIGTERM, "SIGTERM"), (pb.SIGNAL_SIGKILL, "SIGKILL"),
    (pb.SIGNAL_SIGRTMIN, "SIGRTMIN"), (pb.SIGNAL_SIGRTMINPLUS3, "SIGRTMIN+3"),
    (pb.SIGNAL_SIGRTMAXMINUS14, "SIGRTMAX-14"), (pb.SIGNAL_SIGRTMAX, "SIGRTMAX"),
])
def test_signal_name(value: int, expected: str) -> None:
    assert convert.signal_name(value) == expected


LONG = "x" * 256   # one byte over NAME_MAX


@pytest.mark.parametrize("cfg,text", [
    (config(mounts=[pb.Mount(container_path=f"/a/{LONG}/b", host_path="/srv")]),
     r"config.mounts\[0\].container_path: a path component is longer than 255 bytes: 'xxx"),
    (config(mounts=[pb.Mount(container_path="/ok", host_path="/srv"),
                    pb.Mount(container_path="/data", host_path=f"/{LONG}")]),
     r"config.mounts\[1\].host_path: a path component is longer than 255 bytes"),
    (config(mounts=[pb.Mount(container_path="/d", host_path="/" + "/".join(["y" * 200] * 21))]),
     r"config.mounts\[0\].host_path: the path is longer than 4095 bytes \(4221 bytes\)"),
    (config(mounts=[pb.Mount(container_path="/d", image=pb.ImageSpec(image="i"), image_sub_path=LONG)]),
     r"config.mounts\[0\].image_sub_path: a path component is longer than 255 bytes"),
    (config(devices=[pb.Device(container_path=f"/dev/{LONG}", host_path="/dev/null")]),
     r"config.devices\[0\].container_path: a path component is longer than 255 bytes"),
    (config(devices=[pb.Device(host_path=f"/dev/{'é' * 128}")]),   # 256 bytes in 128 characters
     r"config.devices\[0\].host_path: a path component is longer than 255 bytes"),
    (config(working_dir=f"/{LONG}"), "config.working_dir: a path component is longer than 255 bytes"),
])
def test_paths_the_kernel_would_refuse_name_the_field(cfg: pb.ContainerConfig, text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=text) as info:
        convert.container_input(cfg, None)
    assert len(str(info.value)) < 200


def test_a_path_component_of_255_bytes_is_fine() -> None:
    name = "x" * 255
    c = convert.container_input(config(mounts=[pb.Mount(container_path=f"/{name}", host_path=f"/{name}")]),
                                pb.PodSandboxConfig())
    assert c.mounts[0].container_path == f"/{name}"
