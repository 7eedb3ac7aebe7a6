"""Property-based fuzz of every RPC of RuntimeService and ImageService (hypothesis).

Requests are drawn from the message descriptors, so every field of every RPC gets
hostile values: NUL and control characters, 64 KiB strings, `..` and absolute paths,
unknown enum values, negative and huge numbers. A few fields get strategies of their
own: ids (hostile, or a real pod's and container's), image references (never a host
but 127.0.0.1), exec argv, and every field that makes the daemon write on the host
(log directories and paths, mount sources, cgroup parents, host ports, sysctls,
cgroup files, checkpoint locations), which stay inside this node's directory or in
forms the daemon must refuse. Undecodable messages go over the wire as raw bytes.

What must hold for every request: an answer with a well-defined code (never UNKNOWN or
INTERNAL, nor RESOURCE_EXHAUSTED for a long message), no Python text in the message,
the daemon alive; and at the end nothing left on the host (tests/node.py counts
mounts, conmons, IPAM leases and namespaces; this file also checks the cgroups of
the parents it gave its pods).

Every example's outcome is collected, so one run lists every distinct problem at once,
not only the first one hypothesis would shrink.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings, strategies as st

from api import api_pb2 as pb, api_pb2_grpc
from runtime.images import reference
from tests.node import Node, running_node

BRIDGE, SUBNET = "crs-fuzz0", "10.97.0.0/24"
LOCAL_REGISTRY = "127.0.0.1:5000"
CLOSED_REGISTRY = "127.0.0.1:1"          # nothing listens there: connection refused
# The test image by its local name: a pull of it can never fall through a mirror to a real host.
IMAGE = f"{LOCAL_REGISTRY}/e2e-test-images/busybox:1.29-2"
CGROUP_PREFIX = "/crs-fuzz"               # every valid cgroup parent the fuzz sends is under it
SERVICES = [pb.DESCRIPTOR.services_by_name[name] for name in ("RuntimeService", "ImageService")]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]

# Outcomes that are answers to bad input, or to a request that is fine.
WELL_DEFINED = frozenset({
    grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE})
# The client's own deadline: a subscription never ends; a command runs its time.
CLIENT_DEADLINE = {"GetContainerEvents": 0.2, "ExecSync": 10.0, "StopContainer": 20.0}
PYTHON_TEXT = re.compile(r"Traceback|\b[A-Z][A-Za-z]*(?:Error|Exception|ExceptionGroup)\b|\[Errno \d+\]"
                         r"|<class '|object at 0x")


FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])

# ---- hostile values ------------------------------------------------------------------------------

KIB64 = 64 * 1024
HOSTILE_TEXT = [
    "", " ", "..", ".", "/", "//", "../../../../etc/passwd", "/etc/passwd", "/proc/self/root", "a/../../b",
    "\0", "a\0b", "\n", "\r\n", "\t", "\x1b[31m", "\x7f", "\x01\x02", "=", ";", "a=b;c=d", "%s%n", "{}", "$(id)",
    "-rf", "--help", "é", "\u202e", "\ufeff", "\U0001f600", "x" * 255, "x" * 256, "/" + "x" * 256,
    "a" * 4096, "x" * KIB64, "é" * (KIB64 // 2), "\0" * 300, "sha256:", "sha256:" + "0" * 64, "0" * 64,
]
NAME_PARTS = ["..", ".", "", "a", "b-c", "x" * 256, "\0", "\n", " ", "é", "a=b", "a;b"]


def _pick(values: list[str]) -> st.SearchStrategy[str]:
    """sampled_from, without the values in the strategy's repr (hypothesis prints it)."""
    def value(i: int) -> str:
        return values[i]
    return st.integers(0, len(values) - 1).map(value)


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        _pick(HOSTILE_TEXT),
        st.text(max_size=24),   # any code point but surrogates: control characters included
        st.builds(lambda c, n: c * n, st.characters(exclude_categories=["Cs"]),   # runs of one character
                  st.sampled_from([64, 255, 256, 4096, KIB64])),
        st.lists(_pick(NAME_PARTS), max_size=6).map("/".join),
        st.lists(_pick(NAME_PARTS), min_size=1, max_size=6).map(lambda p: "/" + "/".join(p)),
    )


# Pod and container names, namespaces and uids travel into CNI_ARGS, paths, cgroup
# names and argv: separators, path characters and lengths around every limit.
NAMES = ["a=b", "a;b", "a,b", "=", ";", "a b", "-a", ".", "..", "a/b", "/", "A", "é", "a\nb", "a\tb",
         "x" * 63, "x" * 64, "x" * 253, "x" * 254, "x" * 255, "x" * 256, "x" * 4096, "x" * KIB64,
         "x" * (300 * 1024)]


def hostile_name() -> st.SearchStrategy[str]:
    return st.one_of(_pick(NAMES), hostile_text())


def hostile_int(bits: int, signed: bool) -> st.SearchStrategy[int]:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    edges = sorted({v for v in (lo, lo + 1, -1, 0, 1, 2, 255, 256, 65535, 65536, hi - 1, hi) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


_INT_BITS = {
    FieldDescriptor.TYPE_INT32: (32, True), FieldDescriptor.TYPE_SINT32: (32, True),
    FieldDescriptor.TYPE_SFIXED32: (32, True), FieldDescriptor.TYPE_INT64: (64, True),
    FieldDescriptor.TYPE_SINT64: (64, True), FieldDescriptor.TYPE_SFIXED64: (64, True),
    FieldDescriptor.TYPE_UINT32: (32, False), FieldDescriptor.TYPE_FIXED32: (32, False),
    FieldDescriptor.TYPE_UINT64: (64, False), FieldDescriptor.TYPE_FIXED64: (64, False),
    FieldDescriptor.TYPE_ENUM: (32, True),   # proto3 enums are open: any int32 is a value
}


def contained(root: str, depth: int) -> st.SearchStrategy[str]:
    """Paths under `root` that may climb (`..`) but never out of it: `depth` is how
    far below the node's directory `root` is."""
    parts = st.lists(_pick(NAME_PARTS + ["log", "0.log"]), min_size=1, max_size=5)
    # A component over NAME_MAX, often: it is the one that reaches the kernel as ENAMETOOLONG.
    return st.one_of(parts.filter(lambda p: _stays(p, depth)).map(lambda p: f"{root}/" + "/".join(p)),
                     _pick([f"{root}/{'x' * 256}", f"{root}/a/{'é' * 128}/b"]))


def _stays(parts: list[str], depth: int) -> bool:
    level = depth
    for part in parts:
        level += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if level < 1:   # at the node's directory itself or above it
            return False
    return True


# ---- requests from descriptors -------------------------------------------------------------------


@dataclass
class Requests:
    """A strategy for each request type; `overrides` by field full name, or by plain
    name for string fields."""

    overrides: dict[str, st.SearchStrategy[Any]]
    _cache: dict[tuple[str, int], st.SearchStrategy[Message]] = field(default_factory=dict)

    def of(self, desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        key = (desc.full_name, depth)
        if key not in self._cache:
            cls = GetMessageClass(desc)
            optional = {fd.name: s for fd in desc.fields if (s := self.field(fd, depth)) is not None}
            built = st.fixed_dictionaries({}, optional=optional).map(lambda kw: _build(cls, kw))
            self._cache[key] = built.filter(lambda m: m.ByteSize() <= MAX_REQUEST) if depth == 0 else built
        return self._cache[key]

    def field(self, fd: FieldDescriptor, depth: int = 0) -> st.SearchStrategy[Any] | None:
        chosen = self.overrides.get(fd.full_name)
        if chosen is None and fd.type == FieldDescriptor.TYPE_STRING:   # ids: by name, wherever they are
            chosen = self.overrides.get(fd.name)
        if chosen is not None:
            return chosen
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key = self._scalar(fd.message_type.fields_by_name["key"])
            value_fd = fd.message_type.fields_by_name["value"]
            value = self.of(value_fd.message_type, depth + 1) if value_fd.message_type else self._scalar(value_fd)
            return st.dictionaries(key, value, max_size=_width(depth))
        if fd.message_type is not None:
            if depth >= MAX_DEPTH:
                return None
            one = self.of(fd.message_type, depth + 1)
        else:
            one = self._scalar(fd)
        return st.lists(one, max_size=_width(depth)) if fd.is_repeated else one

    def _scalar(self, fd: FieldDescriptor) -> st.SearchStrategy[Any]:
        if fd.type == FieldDescriptor.TYPE_STRING:
            return self.overrides.get(fd.full_name, hostile_text())
        if fd.type == FieldDescriptor.TYPE_BYTES:
            return hostile_text().map(lambda s: s.encode())
        if fd.type == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return st.floats(allow_nan=True, width=32 if fd.type == FieldDescriptor.TYPE_FLOAT else 64)
        bits, signed = _INT_BITS[fd.type]
        if fd.type == FieldDescriptor.TYPE_ENUM:
            return st.one_of(st.sampled_from([v.number for v in fd.enum_type.values]), hostile_int(bits, signed))
        return hostile_int(bits, signed)


# Requests nest about five deep (CreateContainerRequest.config.linux.security_context.
# namespace_options.userns_options.uids); lists of lists of 64 KiB strings would make
# requests of hundreds of megabytes, so lists shrink with depth and the whole is bounded.
MAX_DEPTH = 6
MAX_REQUEST = 1024 * 1024


def _width(depth: int) -> int:
    return 3 if depth < 2 else 1


def _build(cls: type[Message], fields: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in fields.items():
        _set(msg, name, value)
    return msg


def _set(msg: Message, name: str, value: Any) -> None:
    """Field `name` of `msg` made `value` (maps and lists replaced, messages copied)."""
    target = getattr(msg, name)
    if isinstance(value, dict):
        target.clear()
        for k, v in value.items():
            if isinstance(v, Message):
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif isinstance(value, list):
        del target[:]
        target.extend(value)
    elif isinstance(value, Message):
        target.CopyFrom(value)
    else:
        setattr(msg, name, value)


def field_paths(desc: Descriptor, depth: int = 0) -> list[tuple[FieldDescriptor, ...]]:
    """Every field of `desc` and of the messages inside it, as paths from the top."""
    out: list[tuple[FieldDescriptor, ...]] = []
    for fd in desc.fields:
        out.append((fd,))
        if fd.message_type is not None and not fd.message_type.GetOptions().map_entry and depth < MAX_DEPTH - 1:
            out.extend((fd, *rest) for rest in field_paths(fd.message_type, depth + 1))
    return out


# The fields that reach the host (paths, names, argv, CNI, cgroups, namespaces), by name.
MATTERS = frozenset({
    "name", "namespace", "uid", "attempt", "hostname", "log_directory", "log_path", "cgroup_parent", "sysctls",
    "servers", "searches", "options", "port_mappings", "host_port", "container_port", "host_ip", "protocol",
    "mounts", "container_path", "host_path", "propagation", "devices", "permissions", "command", "args",
    "working_dir", "envs", "key", "value", "cmd", "timeout", "image", "labels", "annotations", "runtime_handler",
    "network", "pid", "ipc", "target_id", "run_as_user", "run_as_group", "run_as_username", "supplemental_groups",
    "memory_limit_in_bytes", "cpu_shares", "cpu_quota", "cpu_period", "cpuset_cpus", "cpuset_mems", "unified",
    "oom_score_adj", "hugepage_limits", "stop_signal", "privileged", "add_capabilities", "drop_capabilities",
    "masked_paths", "readonly_paths", "readonly_rootfs", "seccomp", "apparmor", "userns_options", "uids", "gids",
    "container_id", "pod_sandbox_id", "tty", "stdin"})


# For each RPC the fuzz aims at, the fields where its own defects were (dotted prefixes).
HOT = {
    "RunPodSandbox": ("config.metadata", "config.hostname", "config.log_directory", "config.linux.cgroup_parent",
                      "config.dns_config", "config.port_mappings", "config.linux.sysctls", "runtime_handler",
                      "config.linux.security_context.namespace_options", "config.labels", "config.annotations"),
    "CreateContainer": ("config.metadata", "config.image", "config.command", "config.args", "config.working_dir",
                        "config.envs", "config.mounts", "config.devices", "config.log_path", "config.linux",
                        "config.stop_signal"),
    "ExecSync": ("cmd", "timeout"),
    "UpdateContainerResources": ("linux",),
    "PullImage": ("image.image", "auth"),
}


def mutated(data: st.DataObject, requests: Requests, base: Message, rpc: str) -> Message:
    """`base`, a valid request, with one to three of its fields (at any depth) made hostile:
    a request refused for its first bad field says nothing of the fields after it. A
    third of the fields come from HOT, a third from MATTERS, a third from all."""
    paths = field_paths(base.DESCRIPTOR)
    matters = [p for p in paths if p[-1].name in MATTERS]
    hot = [p for p in paths if ".".join(fd.name for fd in p).startswith(HOT[rpc])]
    chosen = st.one_of(st.sampled_from(hot), st.sampled_from(matters), st.sampled_from(paths))
    for path in data.draw(st.lists(chosen, min_size=1, max_size=3), label="fields"):
        msg = base
        for fd in path[:-1]:
            if fd.is_repeated:   # an element there already, or a new one
                items = getattr(msg, fd.name)
                msg = items[0] if len(items) and data.draw(st.booleans(), label="first") else items.add()
            else:
                msg = getattr(msg, fd.name)
        leaf = path[-1]
        strategy = requests.field(leaf, len(path) - 1)
        if strategy is not None:
            _set(msg, leaf.name, data.draw(strategy, label=".".join(fd.name for fd in path)))
    return base


def without_nul(msg: Message) -> Message:
    """`msg` with every NUL taken out of its text. The gRPC face refuses any request
    with a NUL before its handler: most examples go without, to reach the handlers."""
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            items = dict(value)
            value.clear()
            for k, v in items.items():
                k = k.replace("\0", "") if isinstance(k, str) else k
                if isinstance(v, Message):
                    value[k].CopyFrom(without_nul(v))
                else:
                    value[k] = _clean(v)
        elif fd.message_type is not None:
            for item in (value if fd.is_repeated else [value]):
                without_nul(item)
        elif fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            if fd.is_repeated:
                value[:] = [_clean(v) for v in value]
            else:
                setattr(msg, fd.name, _clean(value))
    return msg


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\0", "")
    return value.replace(b"\0", b"") if isinstance(value, bytes) else value


def draw_request(data: st.DataObject, f: Fuzz, method: MethodDescriptor) -> Message:
    request = data.draw(f.requests.of(method.input_type), label="request")
    return request if data.draw(st.integers(0, 3), label="keep NULs") == 0 else without_nul(request)


# ---- the node and what the fuzz keeps there ------------------------------------------------------


def safe_image(text: str) -> bool:
    """True if the daemon could only look `text` up locally or pull it from 127.0.0.1."""
    if reference.is_image_id(text):
        return True
    try:
        ref = reference.parse(text)
    except reference.InvalidReference:
        return True      # refused before any connection
    return ref.domain in (LOCAL_REGISTRY, CLOSED_REGISTRY)


@dataclass
class Problem:
    method: str
    code: str
    message: str
    request: str
    crash: str = ""     # for INTERNAL: the exception the daemon logged


@dataclass
class Fuzz:
    """The node, its long-lived pod and container (made again when a request removed
    them: ids are matched by prefix), and what the examples found."""

    node: Node
    channel: grpc.Channel
    base: Path
    requests: Requests = field(init=False)
    problems: dict[tuple[str, str, str], Problem] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)           # requests by method
    codes: dict[tuple[str, str], int] = field(default_factory=dict)  # outcomes by method and code
    cgroup_parents: set[str] = field(default_factory=set)
    _pod: str = ""
    _ctr: str = ""
    _made: int = 0

    def __post_init__(self) -> None:
        self.requests = Requests(self._overrides())

    # -- the target pod and container --

    def pod_config(self) -> pb.PodSandboxConfig:
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="fuzz-target", namespace="fuzz", uid="uid-fuzz-target"),
            log_directory=f"{self.base}/logs/a/b/c",
            linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pb.CONTAINER))))

    def target(self) -> tuple[str, str]:
        """The pod and its running container, made again if a request stopped or removed them."""
        rt = self.stub
        try:
            pod = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=self._pod), timeout=10)
            ctr = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=self._ctr), timeout=10)
            if pod.status.state == pb.SANDBOX_READY and ctr.status.state == pb.CONTAINER_RUNNING \
                    and pod.status.id == self._pod and ctr.status.id == self._ctr:
                return self._pod, self._ctr
        except grpc.RpcError:
            pass
        if self._pod:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=self._pod), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=self._pod), timeout=60)
        images = _stub(self.channel, "ImageService")
        images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=IMAGE)), timeout=120)  # a fuzz may remove it
        cfg = self.pod_config()
        self._pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
        sleeper = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="sleeper"), image=pb.ImageSpec(image=IMAGE), log_path="sleeper.log",
            command=["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"])
        self._ctr = rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=self._pod, config=sleeper, sandbox_config=cfg), timeout=60).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=self._ctr), timeout=60)
        return self._pod, self._ctr

    def valid_request(self, rpc: str) -> Message:
        """A request of `rpc` that succeeds as it is (a new pod or container each time)."""
        self._made += 1
        n = self._made
        if rpc == "RunPodSandbox":
            cfg = self.pod_config()
            cfg.metadata.name, cfg.metadata.uid = f"fz-{n}", f"uid-fz-{n}"
            cfg.log_directory = f"{self.base}/logs/a/b/c/p{n}"
            return pb.RunPodSandboxRequest(config=cfg)
        if rpc == "PullImage":
            return pb.PullImageRequest(image=pb.ImageSpec(image=IMAGE))
        pod, ctr = self.target()
        if rpc == "CreateContainer":
            return pb.CreateContainerRequest(
                pod_sandbox_id=pod, sandbox_config=self.pod_config(), config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name=f"c{n}"), image=pb.ImageSpec(image=IMAGE),
                    command=["sh", "-c", "sleep 1"], log_path=f"c{n}.log"))
        if rpc == "ExecSync":
            return pb.ExecSyncRequest(container_id=ctr, cmd=["true"], timeout=5)
        if rpc == "UpdateContainerResources":
            return pb.UpdateContainerResourcesRequest(container_id=ctr, linux=pb.LinuxContainerResources(
                cpu_shares=512, memory_limit_in_bytes=64 * 1024 * 1024))
        raise AssertionError(f"no valid {rpc} request here")

    @property
    def stub(self) -> Any:
        return _stub(self.channel, "RuntimeService")

    def _real_id(self, which: str) -> str:
        pod, ctr = self._pod, self._ctr
        return {"pod": pod, "ctr": ctr, "pod-prefix": pod[:12], "ctr-prefix": ctr[:12]}[which]

    # -- field strategies --

    def _overrides(self) -> dict[str, st.SearchStrategy[Any]]:
        base = str(self.base)
        ids = st.one_of(hostile_text(), st.text("0123456789abcdef", min_size=1, max_size=64),
                        st.sampled_from(["pod", "ctr", "pod-prefix", "ctr-prefix"]).map(self._real_id))
        images = st.one_of(
            st.sampled_from([IMAGE, f"{CLOSED_REGISTRY}/x",
                             f"{LOCAL_REGISTRY}/nope:1", "127.0.0.1:99999/x", "127.0.0.1:0/x"]),
            hostile_text().map(lambda t: f"{LOCAL_REGISTRY}/{t}"),
            hostile_text().filter(safe_image))
        # Valid ones under CGROUP_PREFIX (removed at the end, as a kubelet removes its own);
        # the rest must be refused.
        cgroup_parent = st.one_of(
            st.just(""),
            hostile_text().filter(lambda t: not t.startswith("/")),
            st.sampled_from(["/x/../y", "/x/./y", "/\0", "kubepods.slice", "/" + "x" * 256]),
            hostile_text().filter(lambda t: t and "/" not in t and t not in (".", "..") and "\0" not in t)
            .map(lambda t: f"{CGROUP_PREFIX}/{t}"))
        # Real names only where the kernel confines them to the pod's namespaces; the
        # rest are names no kernel has, to be refused.
        sysctl_key = st.one_of(st.sampled_from(["net.ipv4.ip_unprivileged_port_start", "kernel.shm_rmid_forced",
                                                "fuzz.nope", "", "\0", "net..", "x" * 300]),
                               hostile_text().filter(lambda t: "/" not in t and ".." not in t and "\0" not in t)
                               .map(lambda t: f"fuzz.{t}"))
        cgroup_file = st.one_of(st.sampled_from(["memory.high", "memory.max", "pids.max", "fuzz.nope", "", "\0"]),
                                hostile_text().filter(lambda t: "/" not in t and not t.startswith("cgroup.")))
        host_port = st.one_of(st.sampled_from([0, -1, 65536, 2 ** 31 - 1, -(2 ** 31)]), st.integers(40000, 40031))
        argv0 = st.one_of(st.sampled_from(["true", "echo", "/bin/echo", "ls", "nonexistent", "", "/", ".",
                                           "../../bin/true", "\0", "x" * KIB64]), hostile_text())
        return {
            **{f"runtime.v1.PodSandboxMetadata.{n}": hostile_name() for n in ("name", "namespace", "uid")},
            "runtime.v1.ContainerMetadata.name": hostile_name(),
            "runtime.v1.PodSandboxConfig.hostname": hostile_name(),
            # Ids, matched by prefix: hostile, or a real pod's or container's.
            "container_id": ids, "pod_sandbox_id": ids, "id": ids, "target_id": ids,
            "runtime.v1.ImageSpec.image": images,
            "runtime.v1.PodSandboxConfig.log_directory": st.one_of(
                contained(f"{base}/logs/a/b/c", 4),
                contained("logs/a/b/c", 4).map(lambda p: p.lstrip("/")),   # relative: the daemon's cwd is `base`
                st.sampled_from(["", "\0", f"{base}/{'x' * 256}"])),
            "runtime.v1.ContainerConfig.log_path": st.one_of(
                contained(".", 4).map(lambda p: p.removeprefix("./")), contained(f"{base}/abs", 2),
                st.sampled_from(["", "\0", "x" * 256, "a/" * 2100])),
            "runtime.v1.Mount.host_path": st.one_of(
                contained(f"{base}/host", 2), st.sampled_from(["", "relative", "\0", "/" + "x" * 256])),
            "runtime.v1.CheckpointContainerRequest.location": st.one_of(
                contained(f"{base}/ckpt", 2), st.sampled_from(["", "relative.tar", "\0"])),
            # Read as seccomp JSON: no FIFOs or endless files.
            "runtime.v1.SecurityProfile.localhost_ref": st.one_of(
                contained(f"{base}/profiles", 2), st.sampled_from(["", "relative", "/etc/hostname", "\0"])),
            "runtime.v1.LinuxContainerSecurityContext.seccomp_profile_path": st.sampled_from(
                ["", "runtime/default", "unconfined", "localhost/relative", "localhost/etc/hostname", "x\0"]),
            "runtime.v1.LinuxPodSandboxConfig.cgroup_parent": cgroup_parent,
            "runtime.v1.LinuxPodSandboxConfig.sysctls": st.dictionaries(sysctl_key, hostile_text(), max_size=2),
            "runtime.v1.LinuxContainerResources.unified": st.dictionaries(cgroup_file, hostile_text(), max_size=2),
            "runtime.v1.PortMapping.host_port": host_port,
            "runtime.v1.ExecSyncRequest.cmd": st.tuples(argv0, st.lists(hostile_text(), max_size=3))
            .map(lambda t: [t[0], *t[1]]),
            "runtime.v1.ExecSyncRequest.timeout": st.sampled_from([-1, 0, 1, 2, 2 ** 63 - 1, -(2 ** 63)]),
            "runtime.v1.StopContainerRequest.timeout": st.sampled_from([-1, 0, 1, 2 ** 63 - 1, -(2 ** 63)]),
        }

    # -- one request --

    def send(self, method: MethodDescriptor, request: Message | bytes) -> grpc.StatusCode:
        """`request` to `method`; its outcome checked and any problem kept; what it made removed."""
        service = method.containing_service.name
        path = f"/runtime.v1.{service}/{method.name}"
        raw = isinstance(request, bytes)
        out_cls = GetMessageClass(method.output_type)
        serialize = None if raw else type(request).SerializeToString
        deserialize = None if raw else out_cls.FromString
        timeout = CLIENT_DEADLINE.get(method.name, 60.0)
        code, message, response = grpc.StatusCode.OK, "", None
        try:
            if method.server_streaming:
                call = self.channel.unary_stream(path, request_serializer=serialize, response_deserializer=deserialize)
                for _ in call(request, timeout=timeout):
                    pass
            else:
                call = self.channel.unary_unary(path, request_serializer=serialize, response_deserializer=deserialize)
                response = call(request, timeout=timeout)
        except grpc.RpcError as e:
            code, message = e.code(), e.details() or ""
        self.counts[method.name] = self.counts.get(method.name, 0) + 1
        self.codes[method.name, code.name] = self.codes.get((method.name, code.name), 0) + 1
        self._check(method, code, message, request)
        if not raw and response is not None:
            self._undo(method, request, response)
        return code

    def _check(self, method: MethodDescriptor, code: grpc.StatusCode, message: str, request: Message | bytes) -> None:
        assert self.node.daemon.proc is not None and self.node.daemon.proc.poll() is None, \
            f"the daemon died on {method.name}: {_shown(request)}\n{self.node.daemon.log.read_text()[-4000:]}"
        allowed = code in WELL_DEFINED or (code == grpc.StatusCode.DEADLINE_EXCEEDED and method.name in CLIENT_DEADLINE)
        if not allowed or PYTHON_TEXT.search(message):
            crash = self._crash(message)
            # One problem per kind: ids and quoted values (closed or cut) do not tell kinds apart.
            kind = re.sub(r"[0-9a-f]{12,}|'[^']*(?:'|$)|\"[^\"]*(?:\"|$)", "…", crash or message)[:80]
            key = (method.name, code.name, kind)
            self.problems.setdefault(key, Problem(method.name, code.name, message[:600], _shown(request), crash))

    def _crash(self, message: str) -> str:
        """For an INTERNAL answer: the last line of the traceback the daemon logged with its error id."""
        found = re.search(r"error id ([0-9a-f]+)", message)
        if not found:
            return ""
        lines = self.node.daemon.log.read_text(errors="replace").splitlines()
        start = next((i for i, ln in enumerate(lines) if f"error_id={found[1]}" in ln), None)
        if start is None:
            return ""
        end = next((i for i in range(start + 1, len(lines)) if lines[i][:4].isdigit() and "level=" in lines[i]),
                   len(lines))
        return lines[end - 1][:300]

    def _undo(self, method: MethodDescriptor, request: Message, response: Message) -> None:
        """Remove what a request made at once: pods hold a network namespace each."""
        if method.name == "RunPodSandbox":
            assert isinstance(request, pb.RunPodSandboxRequest) and isinstance(response, pb.RunPodSandboxResponse)
            if request.config.linux.cgroup_parent:
                self.cgroup_parents.add(request.config.linux.cgroup_parent)
            for rpc, req in (("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=response.pod_sandbox_id)),
                             ("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=response.pod_sandbox_id))):
                self.send(_method(rpc), req)
        elif method.name == "CreateContainer":
            assert isinstance(response, pb.CreateContainerResponse)
            self.send(_method("RemoveContainer"), pb.RemoveContainerRequest(container_id=response.container_id))

    def report(self) -> str:
        return "\n".join(f"- {p.method} -> {p.code}: {p.message!r}\n    request: {p.request}"
                         + (f"\n    logged: {p.crash}" if p.crash else "") for p in self.problems.values())


def _stub(channel: grpc.Channel, service: str) -> Any:
    return getattr(api_pb2_grpc, f"{service}Stub")(channel)


def _method(name: str) -> MethodDescriptor:
    return next(m for m in METHODS if m.name == name)


def _shown(request: Message | bytes, limit: int = 400) -> str:
    text = repr(request) if isinstance(request, bytes) else \
        f"{type(request).__name__}({str(request).strip()!r})"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _cgroup_dirs() -> list[str]:
    """Every directory under CGROUP_PREFIX in every cgroup hierarchy (v1 controllers,
    v1's unified, or a v2 root), deepest first."""
    name = CGROUP_PREFIX.strip("/")
    tops = [p for p in (*Path("/sys/fs/cgroup").glob(f"*/{name}"), Path("/sys/fs/cgroup") / name) if p.is_dir()]
    out = [str(p) for top in tops for p, _dirs, _files in os.walk(top)]
    return sorted(out, key=lambda p: -p.count("/"))


def _cgroup_path(directory: str) -> str:
    """"/crs-fuzz/x" for "/sys/fs/cgroup/memory/crs-fuzz/x"."""
    return CGROUP_PREFIX + directory.split(CGROUP_PREFIX, 1)[1]


@pytest.fixture(scope="module")
def fuzz() -> Iterator[Fuzz]:
    base = Path(tempfile.mkdtemp(prefix="crs-fz", dir="/tmp"))
    # The daemon's working directory: a relative path from a request lands here, if anywhere.
    cwd = os.getcwd()
    os.chdir(base)
    try:
        with running_node(base, BRIDGE, SUBNET) as node, \
                grpc.insecure_channel("unix:" + node.daemon.socket) as channel:
            f = Fuzz(node, channel, base)
            yield f
            # The node removes every pod left and counts what is left on the host.
        # What the daemon made under the parents (pods' and containers' cgroups) is gone;
        # the parents themselves are the caller's, as a kubelet's are.
        parents = {os.path.normpath(p) for p in f.cgroup_parents}
        left = [d for d in _cgroup_dirs()
                if not any(p == _cgroup_path(d) or p.startswith(_cgroup_path(d) + "/") for p in parents)]
        assert not left, f"cgroups left under the fuzz's parents: {left[:10]}"
    finally:
        for d in _cgroup_dirs():
            with contextlib.suppress(OSError):   # one still in use was reported above
                os.rmdir(d)
        os.chdir(cwd)
        shutil.rmtree(base, ignore_errors=True)


def _verdict(f: Fuzz, what: str) -> None:
    """Fail on any problem, listing each kind once."""
    print(f"\n{what}: " + ", ".join(f"{m} {c} x{n}" for (m, c), n in sorted(f.codes.items())))
    f.codes.clear()
    assert not f.problems, f"{what}: {len(f.problems)} distinct problems\n{f.report()}"


# ---- the properties ------------------------------------------------------------------------------


def test_every_rpc_answers_hostile_requests_with_a_precise_code(fuzz: Fuzz) -> None:
    fuzz.problems.clear()
    fuzz.target()

    @settings(FUZZ, max_examples=900)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(METHODS), label="method")
        fuzz.send(method, draw_request(data, fuzz, method))

    run()
    assert set(fuzz.counts) == {m.name for m in METHODS}, "some RPCs were never fuzzed"
    _verdict(fuzz, "hostile requests")


@pytest.mark.parametrize("rpc,examples", [("RunPodSandbox", 200), ("CreateContainer", 300), ("ExecSync", 120),
                                          ("PullImage", 80), ("UpdateContainerResources", 80)])
def test_valid_requests_with_hostile_fields(fuzz: Fuzz, rpc: str, examples: int) -> None:
    """The RPCs with most to get wrong, from a request that works, at the real pod and
    container, with a few fields made hostile."""
    fuzz.problems.clear()
    method = _method(rpc)

    @settings(FUZZ, max_examples=examples)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        base = fuzz.valid_request(rpc)
        request = mutated(data, fuzz.requests, base, rpc)
        fuzz.send(method, request if data.draw(st.integers(0, 3), label="keep NULs") == 0 else without_nul(request))

    run()
    _verdict(fuzz, rpc)


# A string field somewhere in a request, its UTF-8 replaced by bytes that are not UTF-8.
_MARK = "\ue000\ue001"


def _undecodable(data: st.DataObject, f: Fuzz, method: MethodDescriptor) -> bytes:
    how = data.draw(st.sampled_from(["bad-utf8", "truncated", "random"]), label="how")
    if how == "random":
        return data.draw(st.binary(min_size=1, max_size=64), label="bytes")
    msg = data.draw(f.requests.of(method.input_type), label="request")
    wire = msg.SerializeToString()
    if how == "truncated":
        return wire[:data.draw(st.integers(0, max(0, len(wire) - 1)), label="cut")]
    paths = _string_fields(method.input_type)
    if not paths:
        return wire + b"\x0a\x02\xff\xfe"   # a field 1 of a message type that has no strings
    _set_path(msg, data.draw(st.sampled_from(paths), label="field"), _MARK)
    return msg.SerializeToString().replace(_MARK.encode(), b"\xff\xfe\xfd\xfc\xfb\xfa")


def _string_fields(desc: Descriptor, depth: int = 0) -> list[list[FieldDescriptor]]:
    out: list[list[FieldDescriptor]] = []
    for fd in desc.fields:
        if fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated:
            out.append([fd])
        elif fd.message_type is not None and not fd.is_repeated and depth < 4:
            out.extend([fd, *rest] for rest in _string_fields(fd.message_type, depth + 1))
    return out


def _set_path(msg: Message, path: list[FieldDescriptor], value: str) -> None:
    for fd in path[:-1]:
        msg = getattr(msg, fd.name)
    setattr(msg, path[-1].name, value)


def _decodes(method: MethodDescriptor, raw: bytes) -> bool:
    try:
        GetMessageClass(method.input_type).FromString(raw)
        return True
    except DecodeError:
        return False


def test_undecodable_requests_are_invalid_argument(fuzz: Fuzz) -> None:
    fuzz.problems.clear()
    codes: dict[grpc.StatusCode, int] = {}

    @settings(FUZZ, max_examples=300)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(METHODS), label="method")
        raw = _undecodable(data, fuzz, method)
        if _decodes(method, raw):   # bytes that do decode would be a random request: not sent
            return
        code = fuzz.send(method, raw)
        codes[code] = codes.get(code, 0) + 1

    run()
    _verdict(fuzz, "undecodable requests")
    assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}, codes


def test_nothing_crashed_meanwhile(fuzz: Fuzz) -> None:
    """The daemon's log holds no crash: every problem was an answer, not a swallowed traceback."""
    crashes = [ln for ln in fuzz.node.daemon.log.read_text(errors="replace").splitlines()
               if "request crashed" in ln]
    assert not crashes, "\n".join(c[:500] for c in crashes[:20])
