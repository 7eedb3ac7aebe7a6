"""The container and infra OCI specs: process, capabilities, namespaces, mounts, devices, resources."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from runtime import errors
from runtime.oci import spec as oci
from runtime.oci.specinput import (
    ContainerInput, DeviceInput, IDMapping, ImageInput, MountInput, NamespaceMode, NamespacesInput,
    PodSecurityInput, ProfileInput, Propagation, ResourcesInput, SandboxInput, SecurityInput, UserNamespaceInput,
)

PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
    "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    ],
}
# A mount table: / private, /shared shared, /slave a slave of a shared peer group.
MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 22 0:40 / /shared rw,relatime shared:5 - tmpfs tmpfs rw
31 22 0:41 / /slave rw,relatime master:5 - tmpfs tmpfs rw
32 22 0:42 / /with\\040space rw,relatime shared:7 - tmpfs tmpfs rw
"""


@pytest.fixture
def env(tmp_path: Path) -> "Env":
    return Env(tmp_path)


class Env:
    """A fake host and image rootfs, and shortcuts to build specs against them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rootfs = tmp / "rootfs"
        (self.rootfs / "etc").mkdir(parents=True)
        (self.rootfs / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
        (self.rootfs / "etc" / "group").write_text("root:x:0:\nextra:x:50:app\n")
        (tmp / "seccomp.json").write_text(json.dumps(PROFILE))
        (tmp / "mountinfo").write_text(MOUNTINFO)
        (tmp / "apparmor-profiles").write_text("loaded-profile (enforce)\nother (complain)\n")
        self.host = oci.HostInfo(
            cgroup_v2=False, swap_controller=True, hugetlb_controller=True, all_caps=oci.CAPABILITIES,
            apparmor_enabled=False, kernel=(6, 1), arch="amd64", dev_root="/dev",
            mountinfo_path=str(tmp / "mountinfo"), apparmor_profiles_path=str(tmp / "apparmor-profiles"),
            seccomp_default_path=str(tmp / "seccomp.json"))
        self.pod_dir = tmp / "pod"
        self.pod_dir.mkdir()
        for name in ("hostname", "hosts", "resolv.conf"):
            (self.pod_dir / name).write_text("")
        (self.pod_dir / "shm").mkdir()
        self.sandbox = SandboxInput(
            id="sb1", name="pod", namespace="ns", uid="uid-1", hostname="pod-host",
            netns_path="/var/run/netns/cri-x", ipc_ns_path="/run/pod/ipc", uts_ns_path="/run/pod/uts",
            pid_ns_path="/proc/42/ns/pid", sysctls={"net.ipv4.ip_forward": "1"},
            hostname_path=str(self.pod_dir / "hostname"), hosts_path=str(self.pod_dir / "hosts"),
            resolv_conf_path=str(self.pod_dir / "resolv.conf"), shm_path=str(self.pod_dir / "shm"),
            log_directory="/var/log/pods/x")
        self.image = ImageInput(rootfs=str(self.rootfs), name="busybox:1.29", cmd=("sh",),
                                env=("PATH=/bin", "IMG=1"))

    def container(self, **kw: Any) -> ContainerInput:
        security = kw.pop("security", {})
        if isinstance(security, dict):
            security = SecurityInput(**security)
        return ContainerInput(name=kw.pop("name", "c1"), security=security, **kw)

    def build(self, container: ContainerInput | None = None, *, sandbox: SandboxInput | None = None,
              image: ImageInput | None = None, host: oci.HostInfo | None = None, **kw: Any) -> dict[str, Any]:
        result = oci.build_spec(container or self.container(), sandbox or self.sandbox, image or self.image,
                                container_id="ctr1", rootfs=str(self.rootfs), cgroups_path="/kubepods/ctr1",
                                host=host or self.host, **kw)
        json.dumps(result)   # always serialisable
        return result

    def host_with(self, **kw: Any) -> oci.HostInfo:
        return dataclasses.replace(self.host, **kw)

    def sandbox_with(self, **kw: Any) -> SandboxInput:
        return dataclasses.replace(self.sandbox, **kw)


def mounts_by_dest(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in spec["mounts"]}


def ns_map(spec: dict[str, Any]) -> dict[str, str | None]:
    return {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}


# ---- process -------------------------------------------------------------------------------


@pytest.mark.parametrize("command, args, entrypoint, cmd, expected", [
    ((), (), ("/entry",), ("default",), ["/entry", "default"]),
    ((), ("a1",), ("/entry",), ("default",), ["/entry", "a1"]),
    (("/cmd",), (), ("/entry",), ("default",), ["/cmd"]),           # image Cmd dropped
    (("/cmd",), ("a1", "a2"), ("/entry",), ("default",), ["/cmd", "a1", "a2"]),
    ((), (), (), ("sh", "-c", "x"), ["sh", "-c", "x"]),
    ((), (), ("",), ("sh",), ["sh"]),                               # Entrypoint [""]: none
    ((), ("only-args",), (), (), ["only-args"]),
])
def test_process_args(env: Env, command: tuple[str, ...], args: tuple[str, ...], entrypoint: tuple[str, ...],
                      cmd: tuple[str, ...], expected: list[str]) -> None:
    image = dataclasses.replace(env.image, entrypoint=entrypoint, cmd=cmd)
    assert env.build(env.container(command=command, args=args), image=image)["process"]["args"] == expected


def test_no_command(env: Env) -> None:
    with pytest.raises(errors.InvalidArgument, match="no command specified"):
        env.build(image=dataclasses.replace(env.image, cmd=()))


def test_environment(env: Env) -> None:
    spec = env.build(env.container(envs=(("IMG", "2"), ("NEW", "a=b"))))
    assert spec["process"]["env"] == ["HOSTNAME=pod-host", "PATH=/bin", "IMG=2", "NEW=a=b", "HOME=/root"]
    spec = env.build(env.container(tty=True, security={"run_as_user": 1000}),
                     image=dataclasses.replace(env.image, env=()))
    assert spec["process"]["env"] == ["HOSTNAME=pod-host", f"PATH={oci.DEFAULT_PATH}", "HOME=/home/app",
                                      "TERM=xterm"]
    assert spec["process"]["terminal"] is True
    spec = env.build(env.container(envs=(("HOME", "/mine"), ("HOSTNAME", "h2"))))
    assert "HOME=/mine" in spec["process"]["env"] and "HOSTNAME=h2" in spec["process"]["env"]


@pytest.mark.parametrize("container_wd, image_wd, expected", [
    ("", "", "/"), ("", "/srv", "/srv"), ("/work", "/srv", "/work"), ("rel/dir", "", "/rel/dir"),
])
def test_working_dir(env: Env, container_wd: str, image_wd: str, expected: str) -> None:
    image = dataclasses.replace(env.image, working_dir=image_wd)
    assert env.build(env.container(working_dir=container_wd), image=image)["process"]["cwd"] == expected


def test_user_and_groups(env: Env) -> None:
    spec = env.build(env.container(security={"run_as_user": 1000, "supplemental_groups": (7,)}))
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [7, 50, 1000]}
    with pytest.raises(errors.InvalidArgument, match="run_as_group"):
        env.build(env.container(security={"run_as_group": 5}))


@pytest.mark.parametrize("signal, image_signal, expected", [
    ("", "", "SIGTERM"), ("SIGINT", "SIGQUIT", "SIGINT"), ("", "quit", "SIGQUIT"), ("", "9", "9"),
])
def test_stop_signal(env: Env, signal: str, image_signal: str, expected: str) -> None:
    image = dataclasses.replace(env.image, stop_signal=image_signal)
    assert oci.stop_signal(env.container(stop_signal=signal), image) == expected


# ---- capabilities ------------------------------------------------------------------------------


def caps_of(env: Env, host: oci.HostInfo | None = None, **security: Any) -> dict[str, list[str]]:
    return env.build(env.container(security=security), host=host)["process"]["capabilities"]


@pytest.mark.parametrize("add, drop, plus, minus, count", [
    ((), (), set(), set(), 14),
    (("NET_ADMIN",), (), {"CAP_NET_ADMIN"}, set(), 15),
    (("cap_sys_admin",), ("NET_RAW",), {"CAP_SYS_ADMIN"}, {"CAP_NET_RAW"}, 14),
    (("ALL",), (), {"CAP_SYS_ADMIN", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"}, set(), 41),
    ((), ("ALL",), set(), {"CAP_CHOWN"}, 0),
    (("ALL",), ("CHOWN",), {"CAP_SYS_ADMIN"}, {"CAP_CHOWN"}, 40),
    (("CHOWN",), ("ALL",), {"CAP_CHOWN"}, set(), 1),               # ALL first, then single names
])
def test_capabilities(env: Env, add: tuple[str, ...], drop: tuple[str, ...], plus: set[str], minus: set[str],
                      count: int) -> None:
    caps = caps_of(env, cap_add=add, cap_drop=drop)
    assert len(caps["bounding"]) == count
    assert plus <= set(caps["bounding"]) and not minus & set(caps["bounding"])
    assert caps["effective"] == caps["permitted"] == caps["bounding"]
    assert caps["inheritable"] == caps["ambient"] == []


def test_default_capabilities(env: Env) -> None:
    assert set(caps_of(env)["bounding"]) == set(oci.DEFAULT_CAPS)
    spec = oci.build_spec(env.container(), env.sandbox, env.image, container_id="x", rootfs="/r",
                          cgroups_path="/c", host=env.host, default_caps=["CHOWN", "CAP_KILL"])
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_KILL"]


def test_ambient_capabilities(env: Env) -> None:
    caps = caps_of(env, cap_add_ambient=("NET_BIND_SERVICE", "NET_ADMIN"))
    assert caps["ambient"] == caps["inheritable"] == ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]
    assert "CAP_NET_ADMIN" in caps["bounding"] and "CAP_NET_ADMIN" in caps["permitted"]


def test_unknown_capability(env: Env) -> None:
    with pytest.raises(errors.InvalidArgument, match="unknown capability 'FLY'"):
        caps_of(env, cap_add=("FLY",))


def test_privileged_gets_every_host_capability(env: Env) -> None:
    sandbox = env.sandbox_with(security=PodSecurityInput(privileged=True))
    spec = env.build(env.container(security={"privileged": True, "cap_drop": ("ALL",)}), sandbox=sandbox,
                     host=env.host_with(all_caps=oci.caps_from_mask(0x1fffeffffff)))
    bounding = spec["process"]["capabilities"]["bounding"]
    assert len(bounding) == 40 and "CAP_SYS_RESOURCE" not in bounding    # only what the daemon holds


def test_capabilities_the_daemon_lacks(env: Env) -> None:
    host = env.host_with(all_caps=oci.caps_from_mask(0x1fffeffffff & ~(1 << 13)))   # no SYS_RESOURCE, NET_RAW
    assert set(caps_of(env, host)["bounding"]) == set(oci.DEFAULT_CAPS) - {"CAP_NET_RAW"}
    assert "CAP_SYS_RESOURCE" not in caps_of(env, host, cap_add=("ALL",))["bounding"]
    with pytest.raises(errors.FailedPrecondition, match="CAP_SYS_RESOURCE were asked for"):
        caps_of(env, host, cap_add=("SYS_RESOURCE",))


@pytest.mark.parametrize("mask, last, expected", [
    (0xa80425fb, 40, set(oci.DEFAULT_CAPS)),
    (0x1ffffffffff, 37, set(oci.CAPABILITIES[:38])),
    (1 << 45 | 1, 63, {"CAP_CHOWN"}),     # bits the table does not name are left out
])
def test_caps_from_mask(mask: int, last: int, expected: set[str]) -> None:
    assert set(oci.caps_from_mask(mask, last)) == expected


# ---- privileged ------------------------------------------------------------------------------------


def test_privileged(env: Env) -> None:
    sandbox = env.sandbox_with(security=PodSecurityInput(privileged=True))
    container = env.container(security={"privileged": True, "seccomp": ProfileInput(),
                                         "masked_paths": ("/x",)})
    spec = env.build(container, sandbox=sandbox)
    linux = spec["linux"]
    assert linux["maskedPaths"] == [] and linux["readonlyPaths"] == []
    assert "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    devices = {d["path"]: d for d in linux["devices"]}
    null = devices["/dev/null"]
    assert (null["type"], null["major"], null["minor"]) == ("c", 1, 3)
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/")) or p == "/dev/console" for p in devices)
    mounts = mounts_by_dest(spec)
    assert "rw" in mounts["/sys"]["options"] and "rw" in mounts["/sys/fs/cgroup"]["options"]


def test_privileged_needs_privileged_pod(env: Env) -> None:
    with pytest.raises(errors.InvalidArgument, match="pod sandbox is not"):
        env.build(env.container(security={"privileged": True}))


@pytest.mark.parametrize("masked, readonly, want_masked, want_readonly", [
    (None, None, list(oci.DEFAULT_MASKED_PATHS), list(oci.DEFAULT_READONLY_PATHS)),
    ((), (), [], []),
    (("/bin/ls",), ("/tmp",), ["/bin/ls"], ["/tmp"]),
])
def test_masked_and_readonly_paths(env: Env, masked: tuple[str, ...] | None, readonly: tuple[str, ...] | None,
                                   want_masked: list[str], want_readonly: list[str]) -> None:
    spec = env.build(env.container(security={"masked_paths": masked, "readonly_paths": readonly}))
    assert spec["linux"]["maskedPaths"] == want_masked
    assert spec["linux"]["readonlyPaths"] == want_readonly
    assert "ro" in mounts_by_dest(spec)["/sys"]["options"]


def test_no_new_privs_readonly_rootfs_oom(env: Env) -> None:
    spec = env.build(env.container(security={"no_new_privs": True, "readonly_rootfs": True},
                                   resources=ResourcesInput(oom_score_adj=900)))
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["root"] == {"path": str(env.rootfs), "readonly": True}
    assert spec["process"]["oomScoreAdj"] == 900
    assert "oomScoreAdj" not in env.build()["process"]


# ---- namespaces ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pid_mode, sandbox_changes, expected_pid", [
    ("container", {}, ("new",)),
    ("pod", {}, ("/proc/42/ns/pid",)),
    ("node", {}, ()),
    ("pod", {"host_pid": True, "pid_ns_path": None}, ()),
    ("target", {}, ("/proc/77/ns/pid",)),
])
def test_pid_namespace(env: Env, pid_mode: NamespaceMode, sandbox_changes: dict[str, Any],
                       expected_pid: tuple[str, ...]) -> None:
    container = env.container(security={"namespaces": NamespacesInput(pid=pid_mode, target_id="t")})
    spec = env.build(container, sandbox=env.sandbox_with(**sandbox_changes), target_pid_ns_path="/proc/77/ns/pid")
    pids = [n.get("path", "new") for n in spec["linux"]["namespaces"] if n["type"] == "pid"]
    assert tuple(pids) == expected_pid


def test_pid_namespace_errors(env: Env) -> None:
    with pytest.raises(errors.FailedPrecondition, match="does not share one"):
        env.build(sandbox=env.sandbox_with(pid_ns_path=None))
    with pytest.raises(errors.InvalidArgument, match="TARGET"):
        env.build(env.container(security={"namespaces": NamespacesInput(pid="target", target_id="t")}))


@pytest.mark.parametrize("changes, expected", [
    ({}, {"mount": None, "pid": "/proc/42/ns/pid", "network": "/var/run/netns/cri-x", "uts": "/run/pod/uts",
          "ipc": "/run/pod/ipc"}),
    ({"host_network": True, "netns_path": None, "uts_ns_path": None},
     {"mount": None, "pid": "/proc/42/ns/pid", "ipc": "/run/pod/ipc"}),
    ({"host_ipc": True, "ipc_ns_path": None},
     {"mount": None, "pid": "/proc/42/ns/pid", "network": "/var/run/netns/cri-x", "uts": "/run/pod/uts"}),
])
def test_pod_namespaces(env: Env, changes: dict[str, Any], expected: dict[str, str | None]) -> None:
    spec = env.build(sandbox=env.sandbox_with(**changes))
    assert ns_map(spec) == expected
    assert ("hostname" in spec) == (not changes.get("host_network"))


@pytest.mark.parametrize("missing", ["netns_path", "uts_ns_path", "ipc_ns_path"])
def test_missing_pod_namespace(env: Env, missing: str) -> None:
    with pytest.raises(errors.FailedPrecondition, match="has no"):
        env.build(sandbox=env.sandbox_with(**{missing: None}))


def test_cgroup_namespace_on_v2_only(env: Env) -> None:
    assert "cgroup" not in ns_map(env.build())
    v2 = env.host_with(cgroup_v2=True)
    assert "cgroup" in ns_map(env.build(host=v2))
    sandbox = env.sandbox_with(security=PodSecurityInput(privileged=True))
    assert "cgroup" not in ns_map(env.build(env.container(security={"privileged": True}), sandbox=sandbox, host=v2))


def test_user_namespace(env: Env) -> None:
    maps = (IDMapping(0, 100000, 65536),)
    userns = UserNamespaceInput("pod", maps, maps)
    spec = env.build(sandbox=env.sandbox_with(security=PodSecurityInput(userns=userns), user_ns_path="/run/pod/user"))
    assert ns_map(spec)["user"] == "/run/pod/user"
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert "user" not in ns_map(env.build(sandbox=env.sandbox_with(
        security=PodSecurityInput(userns=UserNamespaceInput("node")))))
    with pytest.raises(errors.InvalidArgument, match="not supported"):
        env.build(sandbox=env.sandbox_with(security=PodSecurityInput(userns=UserNamespaceInput("container"))))


# ---- mounts -------------------------------------------------------------------------------------------


def test_default_and_pod_mounts(env: Env) -> None:
    spec = env.build(env.container(security={"readonly_rootfs": True}))
    mounts = mounts_by_dest(spec)
    assert [m["destination"] for m in spec["mounts"][:6]] == ["/proc", "/dev", "/dev/pts", "/dev/mqueue",
                                                             "/sys", "/sys/fs/cgroup"]
    assert mounts["/etc/hosts"] == {"destination": "/etc/hosts", "type": "bind",
                                    "source": str(env.pod_dir / "hosts"), "options": ["rbind", "rprivate", "ro"]}
    assert mounts["/etc/hostname"]["options"][-1] == "ro"
    assert mounts["/dev/shm"]["source"] == str(env.pod_dir / "shm") and mounts["/dev/shm"]["options"][-1] == "rw"
    assert mounts["/sys/fs/cgroup"]["options"][-1] == "ro"
    assert mounts_by_dest(env.build())["/etc/resolv.conf"]["options"][-1] == "rw"
    assert "rootfsPropagation" not in spec["linux"]


@pytest.mark.parametrize("changes, source", [
    ({"host_ipc": True, "ipc_ns_path": None}, "/dev/shm"),
    ({"shm_path": ""}, None),          # no pod shm: a private tmpfs
])
def test_dev_shm(env: Env, changes: dict[str, Any], source: str | None) -> None:
    shm = mounts_by_dest(env.build(sandbox=env.sandbox_with(**changes)))["/dev/shm"]
    assert shm["source"] == source if source else shm["type"] == "tmpfs"


def test_missing_pod_file(env: Env) -> None:
    with pytest.raises(errors.FailedPrecondition, match="pod's file"):
        env.build(sandbox=env.sandbox_with(hosts_path=str(env.tmp / "gone")))


def test_cri_mounts_override_and_sort(env: Env) -> None:
    data = env.tmp / "data"
    (data / "sub").mkdir(parents=True)
    mounts = (MountInput("/data/sub/deeper", str(data / "sub")), MountInput("/etc/hosts/", str(data)),
              MountInput("/data", str(data), readonly=True, options=("nosuid", "noexec")),
              MountInput("/dev", "/dev"))
    spec = env.build(env.container(mounts=mounts))
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/data") < dests.index("/data/sub/deeper")
    assert dests.count("/etc/hosts") == 1 and mounts_by_dest(spec)["/etc/hosts"]["source"] == str(data)
    # a CRI /dev replaces the default mounts under it; the pod's /dev/shm still goes on top
    assert [d for d in dests if d.startswith("/dev/")] == ["/dev/shm"]
    assert dests.index("/dev") < dests.index("/dev/shm")
    assert mounts_by_dest(spec)["/data"]["options"] == ["rbind", "rprivate", "ro", "nosuid", "noexec"]


@pytest.mark.parametrize("source, propagation, option, root", [
    ("/shared/x", "bidirectional", "rshared", "rshared"),
    ("/shared", "host_to_container", "rslave", "rslave"),
    ("/slave/a/b", "host_to_container", "rslave", "rslave"),
    ("/with space", "bidirectional", "rshared", "rshared"),
    ("/", "private", "rprivate", None),
])
def test_propagation(env: Env, monkeypatch: pytest.MonkeyPatch, source: str, propagation: Propagation, option: str,
                     root: str | None) -> None:
    monkeypatch.setattr(oci, "_host_source", lambda path, where, **kw: path)
    spec = env.build(env.container(mounts=(MountInput("/mnt", source, propagation=propagation),)))
    assert mounts_by_dest(spec)["/mnt"]["options"][:2] == ["rbind", option]
    assert spec["linux"].get("rootfsPropagation") == root


def test_rshared_wins_over_rslave(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oci, "_host_source", lambda path, where, **kw: path)
    mounts = (MountInput("/a", "/shared", propagation="bidirectional"),
              MountInput("/b", "/slave", propagation="host_to_container"))
    assert env.build(env.container(mounts=mounts))["linux"]["rootfsPropagation"] == "rshared"


@pytest.mark.parametrize("source, propagation, text", [
    ("/slave/x", "bidirectional", "not a shared mount"),
    ("/private", "host_to_container", "not a shared or slave mount"),
])
def test_propagation_needs_shared_source(env: Env, monkeypatch: pytest.MonkeyPatch, source: str,
                                         propagation: Propagation, text: str) -> None:
    monkeypatch.setattr(oci, "_host_source", lambda path, where, **kw: path)
    with pytest.raises(errors.FailedPrecondition, match=text):
        env.build(env.container(mounts=(MountInput("/mnt", source, propagation=propagation),)))


@pytest.mark.parametrize("mount, kernel, error, option", [
    (MountInput("/mnt", "", readonly=True, recursive_readonly=True), (5, 15), None, "rro"),
    (MountInput("/mnt", "", readonly=True), (5, 4), None, "ro"),
    (MountInput("/mnt", "", readonly=True, recursive_readonly=True), (5, 11), errors.FailedPrecondition, "5.12"),
    (MountInput("/mnt", "", recursive_readonly=True), (6, 1), errors.InvalidArgument, "needs readonly"),
    (MountInput("/mnt", "", readonly=True, recursive_readonly=True, propagation="host_to_container"), (6, 1),
     errors.InvalidArgument, "private propagation"),
    (MountInput("/mnt", "", readonly=True, recursive_readonly=True, propagation="bidirectional"), (6, 1),
     errors.InvalidArgument, "private propagation"),
])
def test_recursive_readonly(env: Env, mount: MountInput, kernel: tuple[int, int], error: type[Exception] | None,
                            option: str) -> None:
    mount = dataclasses.replace(mount, host_path=str(env.tmp))
    host = env.host_with(kernel=kernel)
    if error is None:
        assert mounts_by_dest(env.build(env.container(mounts=(mount,)), host=host))["/mnt"]["options"][-1] == option
    else:
        with pytest.raises(error, match=option):
            env.build(env.container(mounts=(mount,)), host=host)


def test_host_path_symlink_and_missing(env: Env) -> None:
    real = env.tmp / "real"
    real.mkdir()
    (env.tmp / "link").symlink_to(real)
    missing = env.tmp / "to" / "create"
    spec = env.build(env.container(mounts=(MountInput("/a", str(env.tmp / "link")), MountInput("/b", str(missing)))))
    assert mounts_by_dest(spec)["/a"]["source"] == str(real)
    assert missing.is_dir() and mounts_by_dest(spec)["/b"]["source"] == str(missing)
    other = env.tmp / "not-created"
    with pytest.raises(errors.InvalidArgument, match="does not exist"):
        env.build(env.container(mounts=(MountInput("/c", str(other)),)), create_missing_host_paths=False)
    assert not other.exists()
    (env.tmp / "dangling").symlink_to(env.tmp / "nowhere")
    with pytest.raises(errors.InvalidArgument, match="dangling"):
        env.build(env.container(mounts=(MountInput("/d", str(env.tmp / "dangling")),)))


@pytest.mark.parametrize("mount, error, text", [
    (MountInput("/img", image="busybox@sha256:x", readonly=True), errors.FailedPrecondition, "not resolved"),
    (MountInput("/img", "/x", image="busybox@sha256:x"), errors.InvalidArgument, "must be read-only"),
    (MountInput("rel", "/x"), errors.InvalidArgument, "must be absolute"),
    (MountInput("/m", ""), errors.InvalidArgument, "host_path is empty"),
    (MountInput("/m", "relative/path"), errors.InvalidArgument, "must be absolute"),
    (MountInput("/m", "/tmp", options=("shared",)), errors.InvalidArgument, "'shared' is not allowed"),
])
def test_bad_mounts(env: Env, mount: MountInput, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        env.build(env.container(mounts=(mount,)))


def test_resolved_image_volume(env: Env) -> None:
    mount = MountInput("/img", str(env.rootfs), readonly=True, image="busybox@sha256:x")
    assert mounts_by_dest(env.build(env.container(mounts=(mount,))))["/img"]["options"][-1] == "ro"


# ---- devices ---------------------------------------------------------------------------------------------


def test_devices(env: Env) -> None:
    spec = env.build(env.container(devices=(DeviceInput("/dev/mynull", "/dev/null", "rw"),)))
    (dev,) = spec["linux"]["devices"]
    st = os.stat("/dev/null")
    assert dev == {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": st.st_mode & 0o7777,
                   "uid": st.st_uid, "gid": st.st_gid}
    assert spec["linux"]["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]


@pytest.mark.parametrize("device, text", [
    (DeviceInput("/dev/x", "/dev/does-not-exist"), "does not exist"),
    (DeviceInput("/dev/x", "/etc/hostname"), "not a block or character device"),
    (DeviceInput("/dev/x", "/dev/null", "rwx"), "permissions"),
])
def test_bad_devices(env: Env, device: DeviceInput, text: str) -> None:
    if not os.path.exists("/etc/hostname") and "character" in text:
        pytest.skip("no /etc/hostname")
    with pytest.raises(errors.InvalidArgument, match=text):
        env.build(env.container(devices=(device,)))


# ---- resources and sysctls ----------------------------------------------------------------------------------


def resources_of(env: Env, res: ResourcesInput, host: oci.HostInfo | None = None) -> dict[str, Any]:
    return env.build(env.container(resources=res), host=host)["linux"]["resources"]


def test_resources(env: Env) -> None:
    res = ResourcesInput(cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory_limit_in_bytes=1 << 30,
                         cpuset_cpus="0-1", cpuset_mems="0", hugepage_limits=(("2MB", 4 << 20),))
    got = resources_of(env, res)
    assert got["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}
    assert got["memory"] == {"limit": 1 << 30, "swap": 1 << 30}      # no swap beyond the limit
    assert got["hugepageLimits"] == [{"pageSize": "2MB", "limit": 4 << 20}]
    assert resources_of(env, ResourcesInput()) == {"devices": [{"allow": False, "access": "rwm"}]}


@pytest.mark.parametrize("swap_controller, swap, expected", [
    (True, 0, {"limit": 100, "swap": 100}),
    (True, 300, {"limit": 100, "swap": 300}),
    (False, 300, {"limit": 100}),
])
def test_memory_swap(env: Env, swap_controller: bool, swap: int, expected: dict[str, int]) -> None:
    res = ResourcesInput(memory_limit_in_bytes=100, memory_swap_limit_in_bytes=swap)
    assert resources_of(env, res, env.host_with(swap_controller=swap_controller))["memory"] == expected


def test_hugepages_without_controller_are_dropped(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    host = env.host_with(hugetlb_controller=False)
    # A kubelet sends zero limits for every page size and every container: no warning.
    res = ResourcesInput(hugepage_limits=(("2MB", 0), ("1GB", 0)))
    assert "hugepageLimits" not in resources_of(env, res, host)
    assert "hugepage" not in caplog.text
    res = ResourcesInput(hugepage_limits=(("2MB", 1),))
    assert "hugepageLimits" not in resources_of(env, res, host)
    assert "hugepage limits ignored" in caplog.text


def test_unified(env: Env) -> None:
    res = ResourcesInput(unified={"memory.high": "1000000"})
    with pytest.raises(errors.InvalidArgument, match="cgroup v2"):
        resources_of(env, res)
    assert resources_of(env, res, env.host_with(cgroup_v2=True))["unified"] == {"memory.high": "1000000"}


def test_linux_resources_for_update(env: Env) -> None:
    res = ResourcesInput(cpu_quota=20000, cpu_period=100000, memory_limit_in_bytes=64 << 20, oom_score_adj=5)
    assert oci.linux_resources(res, env.host) == {
        "cpu": {"quota": 20000, "period": 100000}, "memory": {"limit": 64 << 20, "swap": 64 << 20}}
    assert oci.linux_resources(ResourcesInput(), env.host) == {}


def test_negative_shares(env: Env) -> None:
    with pytest.raises(errors.InvalidArgument, match="cpu_shares"):
        resources_of(env, ResourcesInput(cpu_shares=-1))


def test_sysctls_and_cgroups_path(env: Env) -> None:
    linux = env.build()["linux"]
    assert linux["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert linux["cgroupsPath"] == "/kubepods/ctr1"


# ---- seccomp and AppArmor --------------------------------------------------------------------------------------


def test_seccomp(env: Env) -> None:
    assert "seccomp" not in env.build()["linux"]     # nil profile: unconfined
    profile = env.build(env.container(security={"seccomp": ProfileInput()}))["linux"]["seccomp"]
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert [r["names"] for r in profile["syscalls"]] == [["read"]]
    with_admin = env.build(env.container(security={"seccomp": ProfileInput(), "cap_add": ("SYS_ADMIN",)}))
    assert [r["names"] for r in with_admin["linux"]["seccomp"]["syscalls"]] == [["read"], ["bpf"]]


@pytest.mark.parametrize("enabled, profile, privileged, default, expected", [
    (False, None, False, "", ""),
    (False, ProfileInput(), False, "crio-default", ""),
    (False, ProfileInput("localhost", "loaded-profile"), False, "", errors.FailedPrecondition),
    (True, None, False, "crio-default", "crio-default"),
    (True, ProfileInput("unconfined"), False, "crio-default", ""),
    (True, ProfileInput("localhost", "loaded-profile"), False, "", "loaded-profile"),
    (True, ProfileInput("localhost", "localhost/loaded-profile"), False, "", "loaded-profile"),
    (True, ProfileInput("localhost", "not-loaded"), False, "", errors.FailedPrecondition),
    (True, ProfileInput("localhost", "loaded-profile"), True, "", ""),
    (True, None, True, "crio-default", ""),
])
def test_apparmor(env: Env, enabled: bool, profile: ProfileInput | None, privileged: bool, default: str,
                  expected: str | type[Exception]) -> None:
    host = env.host_with(apparmor_enabled=enabled)
    sandbox = env.sandbox_with(security=PodSecurityInput(privileged=privileged))
    container = env.container(security={"apparmor": profile, "privileged": privileged})
    if isinstance(expected, str):
        process = env.build(container, sandbox=sandbox, host=host, apparmor_default=default)["process"]
        assert process.get("apparmorProfile", "") == expected
    else:
        with pytest.raises(expected):
            env.build(container, sandbox=sandbox, host=host, apparmor_default=default)


# ---- annotations ---------------------------------------------------------------------------------------------


def test_annotations(env: Env) -> None:
    container = env.container(annotations={"mine": "1", "io.kubernetes.cri.sandbox-id": "spoof",
                                           "org.systemd.property.DeviceAllow": "x", "run.oci.hooks": "y"})
    assert env.build(container)["annotations"] == {
        "mine": "1",
        "io.kubernetes.cri.sandbox-id": "sb1",
        "io.kubernetes.cri.sandbox-name": "pod",
        "io.kubernetes.cri.sandbox-namespace": "ns",
        "io.kubernetes.cri.sandbox-uid": "uid-1",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "c1",
        "io.kubernetes.cri.image-name": "busybox:1.29",
    }


# ---- infra ----------------------------------------------------------------------------------------------------


def test_infra_spec(env: Env) -> None:
    pause = dataclasses.replace(env.image, name="registry.k8s.io/pause:3.10", entrypoint=("/pause",), cmd=(),
                                user="65535:65535")
    sandbox = env.sandbox_with(pid_ns_path=None, security=PodSecurityInput(seccomp=ProfileInput()))
    spec = oci.build_infra_spec(sandbox, pause, rootfs="rootfs", cgroups_path="/kubepods/pod", host=env.host)
    json.dumps(spec)
    process = spec["process"]
    assert process["args"] == ["/pause"]
    assert process["user"] == {"uid": 65535, "gid": 65535, "additionalGids": [65535]}
    assert process["capabilities"]["bounding"] == [] and process["noNewPrivileges"] is True
    assert process["oomScoreAdj"] == oci.SANDBOX_OOM_SCORE_ADJ
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert ns_map(spec) == {"mount": None, "pid": None, "network": "/var/run/netns/cri-x",
                            "uts": "/run/pod/uts", "ipc": "/run/pod/ipc"}
    assert spec["hostname"] == "pod-host"
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert spec["linux"]["resources"]["cpu"] == {"shares": oci.SANDBOX_CPU_SHARES}
    assert spec["annotations"]["io.kubernetes.cri.container-type"] == "sandbox"
    assert spec["annotations"]["io.kubernetes.cri.sandbox-log-directory"] == "/var/log/pods/x"
    assert spec["annotations"]["io.kubernetes.cri.podsandbox.image-name"] == "registry.k8s.io/pause:3.10"
    as_user = oci.build_infra_spec(env.sandbox_with(security=PodSecurityInput(run_as_user=1000)), pause,
                                   rootfs="rootfs", cgroups_path="/p", host=env.host)
    assert as_user["process"]["user"]["uid"] == 1000
    with pytest.raises(errors.InvalidArgument, match="no entrypoint"):
        oci.build_infra_spec(sandbox, dataclasses.replace(pause, entrypoint=()), rootfs="r", cgroups_path="/p",
                             host=env.host)


def test_negative_oom_score_adj_is_clamped_without_cap_sys_resource(env: Env) -> None:
    c = env.container(resources=ResourcesInput(oom_score_adj=-997))
    assert env.build(c)["process"]["oomScoreAdj"] == -997
    clamped = env.build(c, host=env.host_with(min_oom_score_adj=0))
    assert clamped["process"]["oomScoreAdj"] == 0
    assert env.build(env.container(resources=ResourcesInput(oom_score_adj=500)),
                     host=env.host_with(min_oom_score_adj=0))["process"]["oomScoreAdj"] == 500
