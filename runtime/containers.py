"""Containers: root filesystem, OCI bundle, conmon + runc, exit records.

CreateContainer does the expensive part (snapshot, spec, `runc create` through
conmon), so StartContainer is one `runc start`. Every container has a watcher
task that records its exit as soon as conmon writes the exit file. The record
is written first and marked as being built, so a crash in the middle is undone
by `recover()` at the next start. A container that is being removed is marked so
first; a crash at any step of any request is finished or undone by `recover()`, which
also asks runc about every container whose record is not final, so that a record
never says what the host contradicts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from runtime import cgroups, errors, logpaths, procfs
from runtime.crashpoints import crash_point
from runtime.images.puller import Puller
from runtime.images.reference import parse as parse_reference
from runtime.images.store import ImageRecord, ImageStore
from runtime.oci.runtime import OCIRuntime
from runtime.oci.spec import build_infra_spec, build_spec, linux_resources
from runtime.oci.specinput import ContainerInput, ImageInput, ResourcesInput, SandboxInput
from runtime.oomwatch import OomWatch
from runtime.records import (CONTAINER_CREATED, CONTAINER_EXITED, CONTAINER_RUNNING, SANDBOX_READY,
                             ContainerRecord, ContainerStore, ImageVolume, ProcessUser, SandboxRecord,
                             SandboxStore, now_ns)
from runtime.snapshots import Snapshots
from runtime.tasks import every

log = logging.getLogger("criservice.containers")


def image_input(image: ImageRecord, rootfs: str, name: str) -> ImageInput:
    cfg = image.config.get("config") or {}
    return ImageInput(
        rootfs=rootfs, name=name, entrypoint=tuple(cfg.get("Entrypoint") or ()), cmd=tuple(cfg.get("Cmd") or ()),
        env=tuple(cfg.get("Env") or ()), working_dir=cfg.get("WorkingDir") or "", user=cfg.get("User") or "",
        stop_signal=cfg.get("StopSignal") or "", volumes=tuple(cfg.get("Volumes") or {}),
        exposed_ports=tuple(cfg.get("ExposedPorts") or {}))


def sandbox_input(record: SandboxRecord) -> SandboxInput:
    """What the OCI spec builder needs of a pod: its record, spec and made namespaces."""
    pod = record.pod
    return SandboxInput(
        id=record.id, name=record.name, namespace=record.namespace, uid=record.uid, attempt=record.attempt,
        hostname=record.hostname, netns_path=record.netns or None, ipc_ns_path=record.ipc_ns or None,
        uts_ns_path=record.uts_ns or None, pid_ns_path=record.pid_ns or None,
        host_network=pod.host_network, host_pid=pod.host_pid, host_ipc=pod.host_ipc,
        cgroup_parent=pod.cgroup_parent, sysctls=pod.sysctls, resolv_conf_path=f"{record.pod_dir}/resolv.conf",
        hosts_path=f"{record.pod_dir}/hosts", hostname_path=f"{record.pod_dir}/hostname", shm_path=record.shm,
        labels=record.labels, annotations=record.annotations, log_directory=pod.log_directory,
        runtime_handler=record.handler, security=pod.security)


async def _remove_cgroups(*paths: str) -> None:
    """Each one that was recorded; the first failure after all were tried."""
    await every([functools.partial(asyncio.to_thread, cgroups.remove_cgroup, p) for p in paths if p])


def _process_user(spec: dict[str, Any]) -> ProcessUser | None:
    user = spec.get("process", {}).get("user")
    if not user:
        return None
    return ProcessUser(user.get("uid", 0), user.get("gid", 0), tuple(user.get("additionalGids", ())))


def _signal_number(name: str) -> int:
    if not name:
        return signal.SIGTERM
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        raise errors.InvalidArgument(f"unknown stop signal {name!r}") from None


class ContainerManager:
    def __init__(self, store: ContainerStore, sandboxes: SandboxStore, images: ImageStore,
                 snapshots: Snapshots, puller: Puller, runtimes: dict[str, OCIRuntime], *,
                 cgroup_driver: str, pause_image: str,
                 on_oom: Callable[[ContainerRecord], None] | None = None,
                 on_event: Callable[[str, str, str, int], None] | None = None) -> None:
        self.store = store
        self.sandboxes = sandboxes
        self.images = images
        self.snapshots = snapshots
        self.puller = puller
        self.runtimes = runtimes
        self.cgroup_driver = cgroup_driver
        self.pause_image = pause_image
        self.on_oom = on_oom
        self.on_event = on_event  # (kind, container id, sandbox id, time ns): see runtime.events
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._v2 = cgroups.detect().mode == "v2"
        self._oom = OomWatch(self._saw_oom_kill)
        self._locks: dict[str, asyncio.Lock] = {}

    def runtime_for(self, handler: str) -> OCIRuntime:
        try:
            return self.runtimes[handler]
        except KeyError:
            raise errors.FailedPrecondition(f"runtime handler {handler!r} is not available") from None

    def _cgroups_path(self, sandbox: SandboxRecord, ident: str, kind: str = "container") -> str:
        try:
            return cgroups.cgroups_path(self.cgroup_driver, sandbox.pod.cgroup_parent, ident, kind=kind)
        except ValueError as e:
            raise errors.InvalidArgument(f"pod sandbox config.linux.cgroup_parent: {e}") from None

    def lock(self, container_id: str) -> asyncio.Lock:
        return self._locks.setdefault(container_id, asyncio.Lock())

    def _event(self, kind: str, record: ContainerRecord) -> None:
        if self.on_event is not None:
            self.on_event(kind, record.id, record.sandbox_id, now_ns())

    # ---- create -----------------------------------------------------------------------

    async def create(self, sandbox_id: str, container: ContainerInput, *, image_ref: str,
                     config: bytes) -> ContainerRecord:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox.state != SANDBOX_READY:
            raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        if not container.name:
            raise errors.InvalidArgument("config.metadata.name is empty")
        if not image_ref:
            raise errors.InvalidArgument("config.image.image is empty")
        image = self.images.lookup(image_ref)
        if image is None:
            raise errors.NotFound(f"image {image_ref!r} not found: pull it first")
        log_dir = sandbox.pod.log_directory
        log_path = logpaths.join(log_dir, container.log_path) if log_dir and container.log_path else ""
        container_id = secrets.token_hex(32)
        cgroups_path = self._cgroups_path(sandbox, container_id)
        conmon_cgroups_path = self._cgroups_path(sandbox, container_id, kind="conmon")
        record = ContainerRecord(
            container_id, sandbox.id, container.name, container.attempt, CONTAINER_CREATED, now_ns(),
            image.id, image_ref, config, labels=dict(container.labels), annotations=dict(container.annotations),
            handler=sandbox.handler, cgroups_path=cgroups_path, conmon_cgroups_path=conmon_cgroups_path,
            log_path=log_path, building=True)
        self.store.add(record)  # ALREADY_EXISTS for a live duplicate name
        crash_point("container.create.recorded")
        try:
            await self._build(record, sandbox, container, image)
        except BaseException:
            await asyncio.shield(self._undo(container_id))
            raise
        record = self.store.get(container_id)
        self._event("created", record)
        return record

    async def _build(self, record: ContainerRecord, sandbox: SandboxRecord, container: ContainerInput,
                     image: ImageRecord) -> None:
        snap = self.snapshots.create(record.id, image)
        rootfs = await self.snapshots.mount(record.id)
        container = await self._image_volumes(record.id, container)
        crash_point("container.create.rootfs")
        target_ns = None
        if container.security.namespaces.pid == "target":
            target = self.store.get(container.security.namespaces.target_id)
            if not target.pid:
                raise errors.FailedPrecondition(f"target container {target.id} is not running")
            target_ns = f"/proc/{target.pid}/ns/pid"
        spec = await asyncio.to_thread(
            build_spec, container, sandbox_input(sandbox), image_input(image, rootfs, record.image_ref),
            container_id=record.id, rootfs=rootfs, cgroups_path=record.cgroups_path, target_pid_ns_path=target_ns)
        await asyncio.to_thread(_write_json, os.path.join(snap.path, "config.json"), spec)
        crash_point("container.create.spec")
        if record.log_path:
            await asyncio.to_thread(logpaths.prepare, sandbox.pod.log_directory, record.log_path)
        log_path = record.log_path or os.path.join(snap.path, "container.log")
        runtime = self.runtime_for(sandbox.handler)
        pid = await runtime.create(record.id, snap.path, log_path=log_path, tty=container.tty,
                                   stdin=container.stdin, stdin_once=container.stdin_once,
                                   systemd_cgroup=self.cgroup_driver == "systemd",
                                   conmon_cgroup=record.conmon_cgroups_path)
        crash_point("container.create.runtime")
        # From now: its process may be killed as soon as it starts, and with systemd the
        # scope (and the kill count in it) goes with that process.
        self._watch_oom(record.id)
        stop_signal = container.stop_signal or image_input(image, "", "").stop_signal
        user = _process_user(spec)
        self.store.update(record.id, lambda r: dataclasses.replace(
            r, building=False, bundle=snap.path, pid=pid, stop_signal=stop_signal, user=user))

    async def _image_volumes(self, container_id: str, container: ContainerInput) -> ContainerInput:
        """Each image volume becomes a snapshot of its image of its own (which keeps the
        image's layers alive), mounted and bound read-only, or the sub path of it."""
        volumes: dict[str, ImageVolume] = {}
        resolved = []
        for i, m in enumerate(container.mounts):
            if not m.image:
                resolved.append(m)
                continue
            where = f"mount {m.container_path!r}"
            image = self.images.lookup(m.image)
            if image is None:
                raise errors.NotFound(f"{where}: image {m.image!r} of the image volume is not present: pull it first")
            snapshot_id = f"{container_id}-vol{i}"
            self.snapshots.create(snapshot_id, image)
            volumes[m.container_path] = ImageVolume(snapshot_id, image.id)
            made = dict(volumes)
            self.store.update(container_id, lambda r: dataclasses.replace(r, image_volumes=made))
            root = await self.snapshots.mount(snapshot_id)
            resolved.append(dataclasses.replace(m, host_path=_inside(root, m.image_sub_path, where)))
        return dataclasses.replace(container, mounts=tuple(resolved)) if volumes else container

    async def _remove_snapshots(self, record: ContainerRecord) -> None:
        for volume in record.image_volumes.values():
            await self.snapshots.remove(volume.snapshot)
        await self.snapshots.remove(record.id)

    async def _undo(self, container_id: str) -> None:
        """Undo a container that failed (or a crash left) half-made. If that fails, the
        record stays, EXITED with what failed, so that RemoveContainer tries again."""
        record = self.store.find(container_id)
        if record is None:
            return
        try:
            await self._remove_parts(record)
        except Exception as e:  # noqa: BLE001 - kept in the record; Remove retries
            log.exception("undoing a failed container left something behind",
                          extra={"fields": {"container": container_id}})
            self.store.transition(container_id, CONTAINER_EXITED, finished_at=now_ns(), exit_code=128,
                                  reason="CreateError", message=errors.shown(str(e), 512))
            self.store.update(container_id, lambda r: dataclasses.replace(r, building=False))
            return
        self.store.delete(container_id)

    async def _remove_parts(self, record: ContainerRecord) -> None:
        """The runtime's container (and its conmon), the root filesystem and image
        volumes, and the cgroup: every step is tried, then the first failure raised."""
        self._oom.forget(record.id)
        runtime = self.runtimes.get(record.handler)
        steps: list[Callable[[], Awaitable[None]]] = []
        if runtime is not None:
            steps.append(lambda: runtime.delete(record.id, force=True))
        steps.append(lambda: self._remove_snapshots(self.store.get(record.id)))
        steps.append(lambda: _remove_cgroups(record.cgroups_path, record.conmon_cgroups_path))
        await every(steps)

    # ---- start, stop, exits ---------------------------------------------------------------

    async def start(self, container_id: str) -> ContainerRecord:
        async with self.lock(container_id):
            record = self.store.get(container_id)
            if record.state != CONTAINER_CREATED or record.building:
                raise errors.FailedPrecondition(f"container {record.id} is {record.state}, not created")
            sandbox = self.sandboxes.get(record.sandbox_id)
            if sandbox.state != SANDBOX_READY:
                raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
            runtime = self.runtime_for(record.handler)
            # Taken before: the process may exit before `runc start` returns, and its exit
            # time (conmon's) must not come before its start.
            started = now_ns()
            try:
                await runtime.start(record.id)
            except errors.CRIError as e:
                # Recorded as the host has it: runc may have started it after all.
                if await self._adopt(record.id):
                    return self.store.get(record.id)
                self._event("stopped", self.store.transition(
                    record.id, CONTAINER_EXITED, finished_at=now_ns(), exit_code=128,
                    reason="StartError", message=str(e)))
                raise
            crash_point("container.start.started")
            record = self.store.transition(record.id, CONTAINER_RUNNING, started_at=started)
            self._event("started", record)
            self._watch(record.id)
            return record

    async def _adopt(self, container_id: str) -> bool:
        """A CREATED record whose process runs (a crash came between `runc start` and the
        record, or start failed late) becomes RUNNING; one that ran and exited gets its
        exit. False when the runtime says it never started."""
        record = self.store.get(container_id)
        state = await self.runtime_for(record.handler).state(container_id)
        if state.status in ("running", "paused"):
            started = procfs.start_time_ns(state.pid) or now_ns()
            self._event("started", self.store.transition(container_id, CONTAINER_RUNNING, started_at=started))
            log.info("container found running; adopted", extra={"fields": {"container": container_id}})
            self._watch(container_id)
            return True
        if state.exit_code is not None and state.status == "stopped":
            await self._record_exit(container_id)
            return True
        return False

    def _watch(self, container_id: str) -> None:
        self._watch_oom(container_id)
        if container_id not in self._watchers:
            task = asyncio.ensure_future(self._wait_and_record(container_id))
            self._watchers[container_id] = task
            task.add_done_callback(lambda _t: self._watchers.pop(container_id, None))

    def _watch_oom(self, container_id: str) -> None:
        record = self.store.find(container_id)
        if self._v2 and record is not None and record.cgroups_path:
            self._oom.watch(container_id, cgroups.CGROUP_ROOT + cgroups.cgroup_dir(record.cgroups_path))

    def _saw_oom_kill(self, container_id: str) -> None:
        record = self.store.find(container_id)
        if record is not None and record.state != CONTAINER_EXITED:
            self.store.update(container_id, lambda r: dataclasses.replace(r, oom_killed=True))

    async def _wait_and_record(self, container_id: str) -> None:
        record = self.store.find(container_id)
        if record is None:
            return
        runtime = self.runtime_for(record.handler)
        await runtime.wait_exit(container_id, None)
        await self._record_exit(container_id)

    async def _record_exit(self, container_id: str) -> ContainerRecord | None:
        """Write the exit from conmon's exit file into the record (idempotent)."""
        record = self.store.find(container_id)
        if record is None or record.state == CONTAINER_EXITED:
            return record
        state = await self.runtime_for(record.handler).state(container_id)
        if state.exit_code is None:
            return record
        # conmon's mark, the kill seen while it ran, or the cgroup's count, which systemd
        # removes with the scope as soon as the last process is gone.
        oom = state.oom_killed or self.store.get(container_id).oom_killed
        if record.cgroups_path and not oom:
            try:
                oom = await asyncio.to_thread(cgroups.oom_killed, record.cgroups_path)
            except FileNotFoundError:
                oom = state.exit_code == 128 + signal.SIGKILL and self._oom.killed_in_parent(container_id)
        reason = "OOMKilled" if oom else ("Completed" if state.exit_code == 0 else "Error")
        # stop() and the exit watcher both come here when a stop makes the container
        # exit: the first to get past the awaits records the exit, once.
        current = self.store.find(container_id)
        if current is None or current.state == CONTAINER_EXITED:
            return current
        record = self.store.transition(container_id, CONTAINER_EXITED, exit_code=state.exit_code,
                                       finished_at=state.finished_at_ns or now_ns(), reason=reason)
        self._oom.forget(container_id)
        self._event("stopped", record)
        if oom and self.on_oom is not None:
            self.on_oom(record)
        log.info("container exited", extra={"fields": {
            "container": container_id, "exit_code": state.exit_code, "reason": reason}})
        return record

    async def stop(self, container_id: str, timeout: float) -> ContainerRecord:
        """Idempotent: the stop signal, then SIGKILL after `timeout` seconds."""
        async with self.lock(container_id):
            record = self.store.get(container_id)
            if record.state == CONTAINER_EXITED:
                return record
            runtime = self.runtime_for(record.handler)
            if record.state == CONTAINER_CREATED:
                # Never started: kill the waiting init process so conmon writes an exit.
                await runtime.kill(container_id, signal.SIGKILL, all_processes=False)
                await runtime.wait_exit(container_id, 10)
            else:
                await runtime.stop(container_id, max(timeout, 0),
                                   _signal_number(record.stop_signal))
            crash_point("container.stop.signalled")
            return await self._record_exit(container_id) or record

    async def remove(self, container_id: str) -> None:
        """Idempotent: a running container is killed first, then everything of it goes."""
        record = self.store.find(container_id)
        if record is None:
            return
        if record.building:
            raise errors.FailedPrecondition(f"container {record.id} is still being created")
        self.store.update(container_id, lambda r: dataclasses.replace(r, removing=True))
        crash_point("container.remove.marked")
        if record.state != CONTAINER_EXITED:
            await self.stop(container_id, 0)
        async with self.lock(container_id):
            record = self.store.find(container_id)
            if record is None:
                return
            watcher = self._watchers.pop(container_id, None)
            if watcher is not None:
                watcher.cancel()
            self._oom.forget(container_id)
            runtime = self.runtime_for(record.handler)
            await runtime.delete(container_id)
            crash_point("container.remove.runtime")
            await self._remove_snapshots(record)
            await _remove_cgroups(record.cgroups_path, record.conmon_cgroups_path)
            crash_point("container.remove.rootfs")
            self.store.delete(container_id)
        self._event("deleted", record)
        self._locks.pop(container_id, None)

    async def stop_all(self, sandbox_id: str) -> None:
        """At once, without a grace period: the CRI says StopPodSandbox must force them
        (the kubelet has stopped each with its own grace already)."""
        await asyncio.gather(*(self.stop(c.id, 0) for c in self.store.in_sandbox(sandbox_id)
                               if c.state != CONTAINER_EXITED))

    async def remove_all(self, sandbox_id: str) -> None:
        await asyncio.gather(*(self.remove(c.id) for c in self.store.in_sandbox(sandbox_id)))

    # ---- the infra process of PID-sharing pods -------------------------------------------

    async def _pause_image(self) -> ImageRecord:
        image = self.images.lookup(self.pause_image)
        if image is None:
            image = await self.puller.pull(parse_reference(self.pause_image))
        return image

    async def start_infra(self, sandbox: SandboxRecord) -> tuple[str, int]:
        image = await self._pause_image()
        infra_id = "infra-" + sandbox.id
        cgroups_path = self._cgroups_path(sandbox, infra_id)
        conmon_cgroups_path = self._cgroups_path(sandbox, infra_id, kind="conmon")
        # Recorded before anything is made, so that an undo finds all of it.
        self.sandboxes.update(sandbox.id, lambda r: dataclasses.replace(
            r, infra_id=infra_id, infra_cgroups_path=cgroups_path, infra_conmon_cgroups_path=conmon_cgroups_path))
        snap = self.snapshots.create(infra_id, image)
        rootfs = await self.snapshots.mount(infra_id)
        spec = await asyncio.to_thread(build_infra_spec, sandbox_input(sandbox),
                                       image_input(image, rootfs, self.pause_image),
                                       rootfs=rootfs, cgroups_path=cgroups_path)
        await asyncio.to_thread(_write_json, os.path.join(snap.path, "config.json"), spec)
        runtime = self.runtime_for(sandbox.handler)
        pid = await runtime.create(infra_id, snap.path, log_path=os.path.join(snap.path, "infra.log"),
                                   systemd_cgroup=self.cgroup_driver == "systemd",
                                   conmon_cgroup=conmon_cgroups_path)
        await runtime.start(infra_id)
        return infra_id, pid

    async def stop_infra(self, sandbox: SandboxRecord) -> None:
        infra_id = sandbox.infra_id
        if not infra_id:
            return
        runtime = self.runtime_for(sandbox.handler)
        # A crash may have come between recording the id and creating the process.
        if (await runtime.state(infra_id)).status not in ("unknown", "stopped"):
            await runtime.stop(infra_id, 2, signal.SIGTERM)

    async def remove_infra(self, sandbox: SandboxRecord) -> None:
        infra_id = sandbox.infra_id
        if not infra_id:
            return
        await self.runtime_for(sandbox.handler).delete(infra_id, force=True)
        await self.snapshots.remove(infra_id)
        await _remove_cgroups(sandbox.infra_cgroups_path, sandbox.infra_conmon_cgroups_path)

    # ---- exec, update, logs -------------------------------------------------------------------

    async def update(self, container_id: str, resources: ResourcesInput) -> ContainerRecord:
        record = self.store.get(container_id)
        if record.state not in (CONTAINER_CREATED, CONTAINER_RUNNING):
            raise errors.FailedPrecondition(f"container {record.id} is {record.state}; nothing to update")
        linux = await asyncio.to_thread(linux_resources, resources)
        await self.runtime_for(record.handler).update(record.id, linux)
        return self.store.update(record.id, lambda r: dataclasses.replace(r, resources=resources))

    def running(self, container_id: str) -> ContainerRecord:
        record = self.store.get(container_id)
        if record.state != CONTAINER_RUNNING:
            raise errors.FailedPrecondition(f"container {record.id} is not running (it is {record.state})")
        return record

    # ---- restart -------------------------------------------------------------------------------

    async def recover(self) -> None:
        """At start: undo half-built containers, finish interrupted removals, and make
        every record that is not final say what runc and conmon say: exits that happened
        while the daemon was down are recorded, a container a crash left CREATED that
        runs is adopted as RUNNING, and every running one is watched."""
        for record in self.store.list():
            try:
                await self._recover_one(record)
            except Exception:  # noqa: BLE001 - one stuck container must not keep the daemon down
                log.exception("recovering a container failed; it is retried by RemoveContainer",
                              extra={"fields": {"container": record.id}})
        keep = {r.id for r in self.store.list()}
        keep |= {v.snapshot for r in self.store.list() for v in r.image_volumes.values()}
        keep |= {s.infra_id for s in self.sandboxes.list() if s.infra_id}
        await asyncio.to_thread(self.snapshots.recover, keep)

    async def _recover_one(self, record: ContainerRecord) -> None:
        if record.building:
            log.info("removing a container a crash left half-built", extra={"fields": {"container": record.id}})
            await self._undo(record.id)
            return
        if record.removing:
            log.info("finishing the removal of a container", extra={"fields": {"container": record.id}})
            await self.remove(record.id)
            return
        if record.state == CONTAINER_EXITED:
            return
        runtime = self.runtimes.get(record.handler)
        if runtime is None:
            return
        state = await runtime.state(record.id)
        if state.exit_code is not None:
            await self._record_exit(record.id)
        elif state.status in ("stopped", "unknown"):  # gone without an exit file (host reboot)
            self._event("stopped", self.store.transition(
                record.id, CONTAINER_EXITED, finished_at=now_ns(), exit_code=255, reason="Error",
                message="the container was lost while criservice was down"))
        elif record.state == CONTAINER_CREATED:
            if state.status != "created":
                await self._adopt(record.id)
        else:
            self._watch(record.id)

    async def reopen_log(self, container_id: str) -> None:
        """conmon reopens the log path by name: what is there now (the kubelet rotated the
        file away; a container may have planted something) is checked first."""
        record = self.running(container_id)
        if record.log_path:
            sandbox = self.sandboxes.get(record.sandbox_id)
            await asyncio.to_thread(logpaths.prepare, sandbox.pod.log_directory, record.log_path)
        await self.runtime_for(record.handler).reopen_log(record.id)

    async def close(self) -> None:
        self._oom.close()
        for task in list(self._watchers.values()):
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)


def _inside(root: str, sub_path: str, where: str) -> str:
    """`sub_path` of an image volume, which must exist and may not lead out of it."""
    if not sub_path:
        return root
    if os.path.isabs(sub_path) or ".." in sub_path.split("/"):
        raise errors.InvalidArgument(f"{where}: image_sub_path {sub_path!r} must be relative, without '..'")
    path = os.path.realpath(os.path.join(root, sub_path))
    if path != root and not path.startswith(root + os.sep):
        raise errors.InvalidArgument(f"{where}: image_sub_path {sub_path!r} leads out of the image")
    if not os.path.exists(path):
        raise errors.InvalidArgument(f"{where}: image_sub_path {sub_path!r} does not exist in the image")
    return path


def _write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
