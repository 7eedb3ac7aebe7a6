"""Pod sandboxes: pinned namespaces, pod files, CNI, and (only when the pod shares
one PID namespace) an infra process.

RunPodSandbox checks the request, records the sandbox (that is where name
uniqueness is decided, atomically), then builds it phase by phase, timing each
phase. Every step is recorded before it is taken, so that an undo knows where to
look. A failure undoes what was made; an undo step that fails does not stop the
others, and what it left is kept in the record (shown NOTREADY) for the next
Stop, Remove or start to retry. Stop marks the sandbox NOTREADY and Remove marks
it as going before they begin, so that `recover()` at the next start finishes
whatever a crash interrupted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime import cgroups, errors, mounts, namespaces
from runtime.cni import CniError, CniNetwork, can_carry
from runtime.crashpoints import crash_point
from runtime.logpaths import NAME_MAX, PATH_MAX
from runtime.oci.specinput import ResourcesInput
from runtime.podspec import PodSpec
from runtime.records import SANDBOX_NOTREADY, SANDBOX_READY, SandboxRecord, SandboxStore, now_ns
from runtime.tasks import every, together

log = logging.getLogger("criservice.pods")

SHM_SIZE = 64 * 1024 * 1024
# Pod metadata travels in CNI_ARGS ("K=V;K=V", one environment string) and in log
# lines: Kubernetes names are at most 253 bytes, uids 36.
METADATA_MAX = 253
HOSTNAME_MAX = 64            # HOST_NAME_MAX
LABELS_MAX = 256 * 1024      # Kubernetes' limit on a pod's annotations, applied to each map


@dataclass(frozen=True)
class PodRequest:
    name: str
    namespace: str
    uid: str
    attempt: int
    handler: str
    config: bytes                       # opaque to runtime/: the gRPC face's serialised config
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    pod: PodSpec = PodSpec()


class InfraRunner(Protocol):
    """Runs the pause process of a PID-sharing pod (implemented with the container machinery)."""

    async def start_infra(self, sandbox: SandboxRecord) -> tuple[str, int]: ...
    async def stop_infra(self, sandbox: SandboxRecord) -> None: ...
    async def remove_infra(self, sandbox: SandboxRecord) -> None: ...


class Phases:
    """Wall-clock milliseconds per phase of building a sandbox."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    async def run(self, name: str, step: Awaitable[Any]) -> Any:
        start = time.perf_counter()
        try:
            return await step
        finally:
            self.ms[name] = round((time.perf_counter() - start) * 1000, 3)


class PodManager:
    def __init__(self, store: SandboxStore, *, run_dir: str, netns_dir: str,
                 network: Callable[[], CniNetwork], infra: InfraRunner, cgroup_driver: str = "cgroupfs",
                 on_phases: Callable[[dict[str, float]], None] | None = None,
                 on_event: Callable[[str, str, str, int], None] | None = None) -> None:
        self.store = store
        self.pods_dir = os.path.join(run_dir, "pods")
        self.netns_dir = netns_dir
        self.network = network
        self.infra = infra
        self.cgroup_driver = cgroup_driver
        self.on_phases = on_phases
        self.on_event = on_event  # (kind, sandbox id, sandbox id, time ns): see runtime.events
        self._locks: dict[str, asyncio.Lock] = {}
        os.makedirs(self.pods_dir, mode=0o711, exist_ok=True)

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        """Serialises stop/remove of one sandbox (the kubelet may retry while one runs)."""
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def _event(self, kind: str, sandbox_id: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, sandbox_id, sandbox_id, now_ns())

    def pod_dir(self, sandbox_id: str) -> str:
        return os.path.join(self.pods_dir, sandbox_id)

    # ---- run -------------------------------------------------------------------

    async def run(self, req: PodRequest) -> SandboxRecord:
        validate(req, self.cgroup_driver)
        sandbox_id = secrets.token_hex(32)
        pod_dir = self.pod_dir(sandbox_id)
        pod = dataclasses.replace(req.pod, log_directory=os.path.normpath(req.pod.log_directory)
                                  if req.pod.log_directory else "")
        record = SandboxRecord(sandbox_id, req.name, req.namespace, req.uid, req.attempt, SANDBOX_NOTREADY,
                               now_ns(), req.handler, req.config, dict(req.labels), dict(req.annotations),
                               pod=pod, hostname=_hostname(req), pod_dir=pod_dir, building=True)
        self.store.add(record)  # ALREADY_EXISTS for a live duplicate name
        crash_point("pod.run.recorded")
        phases = Phases()
        try:
            await phases.run("files", asyncio.to_thread(_write_pod_files, pod_dir, pod, record.hostname))
            crash_point("pod.run.files")
            await phases.run("namespaces", self._namespaces(sandbox_id, pod, record.hostname))
            crash_point("pod.run.namespaces")
            # The network and the infra process need the namespaces, not each other.
            steps = []
            if not pod.host_network:
                steps.append(phases.run("network", self._network_up(sandbox_id)))
            if pod.shared_pid and not pod.host_pid:
                steps.append(phases.run("infra", self._start_infra(sandbox_id)))
            await together(*steps)
        except BaseException as e:
            log.warning("pod sandbox failed; undoing it", extra={"fields": {
                "sandbox": sandbox_id, "pod": record.display_name, "error": str(e)}})
            await asyncio.shield(self._undo(sandbox_id))
            raise
        self.store.update(sandbox_id, lambda r: dataclasses.replace(
            r, state=SANDBOX_READY, building=False, phases_ms=phases.ms))
        crash_point("pod.run.ready")
        record = self.store.get(sandbox_id)
        self._event("created", sandbox_id)
        self._event("started", sandbox_id)
        if self.on_phases is not None:
            self.on_phases(phases.ms)
        log.info("pod sandbox ready", extra={"fields": {
            "sandbox": sandbox_id, "pod": record.display_name, "phases_ms": phases.ms}})
        return record

    async def _namespaces(self, sandbox_id: str, pod: PodSpec, hostname: str) -> None:
        steps: list[Coroutine[Any, Any, object]] = [self._ipc_uts(sandbox_id, pod, hostname)]
        if not pod.host_network:
            name = _netns_name(sandbox_id)
            # Recorded before it exists, so an undo after a crash knows where to look.
            path = os.path.join(self.netns_dir, name)
            self.store.update(sandbox_id, lambda r: dataclasses.replace(r, netns=path))
            steps.append(namespaces.create_netns(name, self.netns_dir))
        await together(*steps)

    async def _ipc_uts(self, sandbox_id: str, pod: PodSpec, hostname: str) -> None:
        pod_dir = self.pod_dir(sandbox_id)
        ipc, uts = await namespaces.create_ipc_uts(pod_dir, hostname, ipc=not pod.host_ipc,
                                                   uts=not pod.host_network)
        shm = "" if pod.host_ipc else os.path.join(pod_dir, "shm")
        self.store.update(sandbox_id, lambda r: dataclasses.replace(r, ipc_ns=ipc or "", uts_ns=uts or "", shm=shm))
        if shm:
            await asyncio.to_thread(_mount_shm, shm)

    async def _network_up(self, sandbox_id: str) -> None:
        record = self.store.get(sandbox_id)
        network = self.network()
        # DEL must run even if ADD dies half-way.
        self.store.update(sandbox_id, lambda r: dataclasses.replace(r, cni_added=True))
        try:
            result = await network.add(sandbox_id, record.netns, args=record.cni_args,
                                       capabilities=_capabilities(record))
        except CniError as e:
            raise errors.Unavailable(f"setting up the pod network ({network.name}): {e}") from None
        crash_point("pod.run.network")
        ips = tuple(ip.address.split("/")[0] for ip in result.ips)
        self.store.update(sandbox_id, lambda r: dataclasses.replace(r, ips=ips, cni_network=network.name))
        if ips:
            await asyncio.to_thread(_add_hosts_entry, self.pod_dir(sandbox_id), ips[0], record.hostname)

    async def _start_infra(self, sandbox_id: str) -> None:
        # The runner records the infra id in the sandbox before it makes anything.
        infra_id, pid = await self.infra.start_infra(self.store.get(sandbox_id))
        crash_point("pod.run.infra")
        self.store.update(sandbox_id, lambda r: dataclasses.replace(
            r, infra_id=infra_id, infra_pid=pid, pid_ns=f"/proc/{pid}/ns/pid"))

    def told_resources(self, sandbox_id: str, *, overhead: ResourcesInput | None,
                       resources: ResourcesInput | None) -> SandboxRecord:
        """UpdatePodSandboxResources: the kubelet sizes the pod cgroup itself; what it
        said is kept (shown by `crictl inspectp`) for accounting and for plugins."""
        return self.store.update(sandbox_id, lambda r: dataclasses.replace(r, overhead=overhead, resources=resources))

    # ---- stop and remove ------------------------------------------------------------

    async def stop(self, sandbox_id: str, stop_containers: Callable[[str], Awaitable[None]]) -> None:
        """Idempotent: containers stopped, infra stopped, network torn down, shm unmounted.
        The sandbox is NOTREADY from the first step on; `torn_down` says all steps were done."""
        async with self.lock(sandbox_id):
            record = self.store.get(sandbox_id)
            self.store.update(sandbox_id, lambda r: dataclasses.replace(r, state=SANDBOX_NOTREADY, torn_down=False))
            crash_point("pod.stop.marked")
            await stop_containers(sandbox_id)
            crash_point("pod.stop.containers")
            await self._teardown(self.store.get(sandbox_id))
            crash_point("pod.stop.network")
            self.store.update(sandbox_id, lambda r: dataclasses.replace(r, torn_down=True))
            if record.state == SANDBOX_READY:
                self._event("stopped", sandbox_id)

    async def _teardown(self, record: SandboxRecord) -> None:
        """Infra, network, namespaces and shm: every step is tried; the first failure is
        raised after the others ran, and what failed stays recorded for the next try."""
        steps: list[Callable[[], Awaitable[object]]] = []
        if record.infra_id:
            steps.append(lambda: self.infra.stop_infra(self.store.get(record.id)))
        if record.cni_added:
            steps.append(lambda: self._network_down(self.store.get(record.id)))
        if record.netns:
            steps.append(lambda: namespaces.remove_ns_file(record.netns))
        if record.shm:
            steps.append(lambda: asyncio.to_thread(mounts.unmount, record.shm, True))
        await _all_of(steps, record.id)

    async def _network_down(self, record: SandboxRecord) -> None:
        netns = record.netns
        # A record from before metadata was checked up front may hold values CNI_ARGS cannot
        # carry; DEL finds the attachment by id and interface, so those are left out.
        args = {k: v for k, v in record.cni_args.items() if can_carry(v) and "\0" not in v}
        try:
            await self.network().delete(record.id, netns if netns and namespaces.netns_exists(netns) else None,
                                        args=args, capabilities=_capabilities(record))
        except CniError as e:
            raise errors.Unavailable(f"tearing down the pod network: {e}") from None
        self.store.update(record.id, lambda r: dataclasses.replace(r, cni_added=False))

    async def remove(self, sandbox_id: str, stop_containers: Callable[[str], Awaitable[None]],
                     remove_containers: Callable[[str], Awaitable[None]]) -> None:
        """Idempotent: everything of the sandbox goes, then its record."""
        record = self.store.find(sandbox_id)
        if record is None:
            return
        self.store.update(record.id, lambda r: dataclasses.replace(r, removing=True))
        crash_point("pod.remove.marked")
        await self.stop(record.id, stop_containers)
        async with self.lock(record.id):
            await remove_containers(record.id)
            crash_point("pod.remove.containers")
            await self._remove_rest(self.store.get(record.id))
            crash_point("pod.remove.files")
            self.store.delete(record.id)
        self._event("deleted", record.id)
        self._locks.pop(record.id, None)

    async def _remove_rest(self, record: SandboxRecord) -> None:
        """The infra container, the namespace files and the pod directory."""
        steps: list[Callable[[], Awaitable[None]]] = []
        if record.infra_id:
            steps.append(lambda: self.infra.remove_infra(self.store.get(record.id)))
        steps += [functools.partial(namespaces.remove_ns_file, path) for path in (record.ipc_ns, record.uts_ns) if path]
        pod_dir = record.pod_dir or self.pod_dir(record.id)
        steps.append(lambda: asyncio.to_thread(_remove_pod_dir, pod_dir))
        await _all_of(steps, record.id)

    async def _undo(self, sandbox_id: str) -> None:
        """Undo a sandbox that failed (or a crash left) half-built. When a step cannot be
        undone the record stays, visible as NOTREADY with what failed, so that Stop,
        Remove and the next start try again; nothing of it is hidden."""
        if self.store.find(sandbox_id) is None:
            return
        try:
            await every([lambda: self._teardown(self.store.get(sandbox_id)),
                         lambda: self._remove_rest(self.store.get(sandbox_id))])
        except Exception as e:  # noqa: BLE001 - kept in the record; each step logged its own
            failed = errors.shown(str(e), 512)
            self.store.update(sandbox_id, lambda r: dataclasses.replace(
                r, state=SANDBOX_NOTREADY, building=False, torn_down=False, undo_failed=failed))
            return
        self.store.delete(sandbox_id)

    async def recover(self, stop_containers: Callable[[str], Awaitable[None]],
                      remove_containers: Callable[[str], Awaitable[None]]) -> None:
        """At start, after the containers were recovered: sandboxes a crash left half-built
        are undone, half-removed ones removed and half-stopped ones stopped."""
        for record in self.store.list():
            try:
                if record.building:
                    log.info("undoing a pod sandbox a crash left half-built",
                             extra={"fields": {"sandbox": record.id, "pod": record.display_name}})
                    await self._undo(record.id)
                elif record.removing:
                    log.info("removing a pod sandbox whose removal a crash interrupted",
                             extra={"fields": {"sandbox": record.id, "pod": record.display_name}})
                    await self.remove(record.id, stop_containers, remove_containers)
                elif record.state == SANDBOX_NOTREADY and not record.torn_down:
                    log.info("stopping a pod sandbox whose stop did not finish",
                             extra={"fields": {"sandbox": record.id, "pod": record.display_name}})
                    await self.stop(record.id, stop_containers)
            except Exception:  # noqa: BLE001 - one stuck pod must not keep the daemon down
                log.exception("recovering a pod sandbox failed; Stop or Remove will try again",
                              extra={"fields": {"sandbox": record.id}})


async def _all_of(steps: Sequence[Callable[[], Awaitable[object]]], sandbox_id: str) -> None:
    """Every step of a pod teardown, each failure logged with the pod; the first raised."""
    def logged(e: Exception) -> None:
        log.warning("a step of tearing down a pod sandbox failed", exc_info=e,
                    extra={"fields": {"sandbox": sandbox_id, "error": str(e)}})
    await every(steps, logged)


def _text_field(field_name: str, value: str, limit: int, forbidden: str = "") -> None:
    if len(value.encode()) > limit:
        raise errors.InvalidArgument(f"{field_name} is {len(value.encode())} bytes long; at most {limit}")
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7f or c in forbidden), None)
    if bad is not None:
        raise errors.InvalidArgument(f"{field_name} must not contain {bad!r}")


def validate(req: PodRequest, cgroup_driver: str) -> None:
    """Everything that can be checked before anything is made, with the field it names."""
    for field_name in ("name", "namespace", "uid"):
        value = getattr(req, field_name)
        if not value:
            raise errors.InvalidArgument(f"config.metadata.{field_name} is empty")
        # ';' and '=' cannot be carried in CNI_ARGS; '/' would make a path of a name.
        _text_field(f"config.metadata.{field_name}", value, METADATA_MAX, ";=/")
    if req.attempt < 0:
        raise errors.InvalidArgument(f"config.metadata.attempt {req.attempt} is negative")
    pod = req.pod
    if pod.hostname:
        _text_field("config.hostname", pod.hostname, HOSTNAME_MAX, " ")
        if not pod.host_network and not namespaces.valid_hostname(pod.hostname):
            raise errors.InvalidArgument(f"config.hostname {errors.shown(pod.hostname)}: 1-64 letters, "
                                         "digits, '.' or '-', starting with a letter or digit")
    if pod.log_directory:
        if not os.path.isabs(pod.log_directory):
            raise errors.InvalidArgument(f"config.log_directory {errors.shown(pod.log_directory)} is not absolute")
        too_long = next((p for p in pod.log_directory.split("/") if len(p.encode()) > NAME_MAX), None)
        if too_long is not None or len(pod.log_directory.encode()) >= PATH_MAX:
            raise errors.InvalidArgument(f"config.log_directory {errors.shown(pod.log_directory)}: a component "
                                         f"is over {NAME_MAX} bytes or the path over {PATH_MAX - 1}")
    for i, server in enumerate(pod.dns_servers):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise errors.InvalidArgument(
                f"config.dns_config.servers[{i}] {errors.shown(server)} is not an IP address") from None
    for kind, values in (("searches", pod.dns_searches), ("options", pod.dns_options)):
        for i, value in enumerate(values):  # a line break would add lines to resolv.conf
            _text_field(f"config.dns_config.{kind}[{i}]", value, METADATA_MAX, " ")
    for i, pm in enumerate(pod.port_mappings):
        if not 0 <= pm.host_port <= 65535 or not 0 < pm.container_port <= 65535:
            raise errors.InvalidArgument(
                f"config.port_mappings[{i}]: host port {pm.host_port} / container port {pm.container_port} "
                "out of range")
        if pm.host_ip:
            try:
                ipaddress.ip_address(pm.host_ip)
            except ValueError:
                raise errors.InvalidArgument(
                    f"config.port_mappings[{i}].host_ip {errors.shown(pm.host_ip)} is not an IP address") from None
    for name, labels in (("config.labels", req.labels), ("config.annotations", req.annotations)):
        size = sum(len(k.encode()) + len(v.encode()) for k, v in labels.items())
        if size > LABELS_MAX:
            raise errors.InvalidArgument(f"{name} hold {size} bytes; at most {LABELS_MAX}")
    try:
        cgroups.cgroups_path(cgroup_driver, pod.cgroup_parent, "0")
    except ValueError as e:
        raise errors.InvalidArgument(f"config.linux.cgroup_parent: {e}") from None


def _hostname(req: PodRequest) -> str:
    """The kubelet always sends one; others fall back to the pod name, cut as the kubelet cuts it."""
    return req.pod.hostname or req.name[:63].rstrip("-.").replace("_", "-") or "pod"


def _netns_name(sandbox_id: str) -> str:
    return f"cri-{sandbox_id[:16]}"


def _capabilities(record: SandboxRecord) -> dict[str, Any]:
    mappings = [{"hostPort": pm.host_port, "containerPort": pm.container_port,
                 "protocol": pm.protocol, "hostIP": pm.host_ip}
                for pm in record.pod.port_mappings if pm.host_port > 0]
    return {"portMappings": mappings} if mappings else {}


def _write_pod_files(pod_dir: str, pod: PodSpec, hostname: str) -> None:
    os.makedirs(pod_dir, mode=0o711, exist_ok=True)
    _write(os.path.join(pod_dir, "hostname"), hostname + "\n")
    _write(os.path.join(pod_dir, "hosts"),
           "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
           "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
    if pod.dns_servers or pod.dns_searches or pod.dns_options:
        lines = [f"nameserver {s}" for s in pod.dns_servers]
        if pod.dns_searches:
            lines.append("search " + " ".join(pod.dns_searches))
        if pod.dns_options:
            lines.append("options " + " ".join(pod.dns_options))
        _write(os.path.join(pod_dir, "resolv.conf"), "\n".join(lines) + "\n")
    else:  # no cluster DNS given: the host's resolver, as other runtimes do
        try:
            shutil.copyfile("/etc/resolv.conf", os.path.join(pod_dir, "resolv.conf"))
        except FileNotFoundError:
            _write(os.path.join(pod_dir, "resolv.conf"), "")
    if pod.log_directory:
        os.makedirs(pod.log_directory, mode=0o755, exist_ok=True)


def _add_hosts_entry(pod_dir: str, ip: str, hostname: str) -> None:
    with open(os.path.join(pod_dir, "hosts"), "a") as f:
        f.write(f"{ip}\t{hostname}\n")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)


def _mount_shm(path: str) -> None:
    os.makedirs(path, mode=0o1777, exist_ok=True)
    if not mounts.is_mount_point(path):
        mounts.mount("shm", path, "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC,
                     f"mode=1777,size={SHM_SIZE}")


def _remove_pod_dir(pod_dir: str) -> None:
    for point in sorted(mounts.mount_points(pod_dir), key=len, reverse=True):
        mounts.unmount(point, detach=True)
    if os.path.lexists(pod_dir):
        shutil.rmtree(pod_dir)
