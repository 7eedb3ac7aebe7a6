"""A fake OCI runtime behind runtime/oci/runtime.py's interface, and fake snapshots, so
that ContainerManager's lifecycle logic (state transitions, undo, recovery decisions)
runs without root: containers are entries in a dict whose processes a test makes exit.
Failures are armed per call name (`fail["start"] = OCIError(...)`), and `started_anyway`
makes a failing start leave the container running, as runc can when it errs late."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from dataclasses import dataclass, field
from typing import Any

from runtime.oci.runtime import ContainerState, ExecResult, OCIError
from runtime.snapshots import Snapshot


@dataclass
class FakeContainer:
    bundle: str
    status: str = "created"           # created | running | stopped
    pid: int = 0
    exit_code: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class FakeRuntime:
    name = "fake"

    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, str]] = []       # (call, container id), in order
        self.fail: dict[str, Exception] = {}          # the next call of that name raises
        self.started_anyway = False
        self._pids = iter(range(4000, 1 << 22))

    def _call(self, name: str, container_id: str) -> None:
        self.calls.append((name, container_id))
        error = self.fail.pop(name, None)
        if error is not None:
            raise error

    def exit(self, container_id: str, code: int) -> None:
        """The container's process ends on its own."""
        c = self.containers[container_id]
        c.status, c.exit_code, c.pid = "stopped", code, 0
        c.exited.set()

    async def create(self, container_id: str, bundle: str, *, log_path: str, tty: bool = False,
                     stdin: bool = False, stdin_once: bool = False, systemd_cgroup: bool = False,
                     conmon_cgroup: str = "", timeout: float = 240) -> int:
        self._call("create", container_id)
        c = self.containers[container_id] = FakeContainer(bundle, pid=next(self._pids))
        return c.pid

    async def start(self, container_id: str) -> None:
        c = self.containers[container_id]
        try:
            self._call("start", container_id)
        except OCIError:
            if self.started_anyway:
                c.status = "running"
            raise
        c.status = "running"

    async def kill(self, container_id: str, signal: int, all_processes: bool = False) -> None:
        self._call("kill", container_id)
        if self.containers[container_id].status != "stopped":
            self.exit(container_id, 128 + signal)

    async def wait_exit(self, container_id: str, timeout: float | None) -> int | None:
        c = self.containers.get(container_id)
        if c is None:
            return None
        try:
            await asyncio.wait_for(c.exited.wait(), timeout)
        except TimeoutError:
            return None
        return c.exit_code

    async def stop(self, container_id: str, timeout: float, stop_signal: int = signal.SIGTERM) -> int | None:
        self._call("stop", container_id)
        if self.containers[container_id].status != "stopped":
            self.exit(container_id, 128 + stop_signal)
        return self.containers[container_id].exit_code

    async def delete(self, container_id: str, force: bool = False) -> None:
        self._call("delete", container_id)
        c = self.containers.get(container_id)
        if c is not None and c.status == "running" and not force:
            raise OCIError(f"cannot delete running container {container_id}")
        self.containers.pop(container_id, None)

    async def state(self, container_id: str) -> ContainerState:
        c = self.containers.get(container_id)
        if c is None:
            return ContainerState("unknown", 0, None, None, False)
        return ContainerState(c.status, c.pid, c.exit_code, 1 if c.exit_code is not None else None, False)

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        self._call("update", container_id)

    async def exec_sync(self, container_id: str, argv: list[str], *, timeout: float | None,
                        env: list[str] | None = None, max_output: int = 16 << 20) -> ExecResult:
        self._call("exec_sync", container_id)
        return ExecResult(0, b"", b"", False)

    async def reopen_log(self, container_id: str) -> None:
        self._call("reopen_log", container_id)

    async def resize(self, container_id: str, height: int, width: int) -> None:
        self._call("resize", container_id)

    def attach_socket(self, container_id: str) -> str:
        return f"/nonexistent/{container_id}/attach"


class FakeSnapshots:
    """Directories instead of overlay mounts; what exists is what the test can see."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fail_remove: Exception | None = None
        self.snapshots: dict[str, Snapshot] = {}

    def create(self, snapshot_id: str, image: Any) -> Snapshot:
        snap = Snapshot(snapshot_id, image.id, os.path.join(self.root, snapshot_id))
        os.makedirs(os.path.join(snap.path, "rootfs"))
        self.snapshots[snapshot_id] = snap
        return snap

    async def mount(self, snapshot_id: str) -> str:
        return os.path.join(self.snapshots[snapshot_id].path, "rootfs")

    async def remove(self, snapshot_id: str) -> None:
        if self.fail_remove is not None:
            error, self.fail_remove = self.fail_remove, None
            raise error
        self._drop(snapshot_id)

    def recover(self, keep: set[str]) -> None:
        """What the real one does at start: snapshots no record keeps go."""
        for snapshot_id in set(self.snapshots) - keep:
            self._drop(snapshot_id)

    def _drop(self, snapshot_id: str) -> None:
        snap = self.snapshots.pop(snapshot_id, None)
        if snap is not None:
            shutil.rmtree(snap.path)
