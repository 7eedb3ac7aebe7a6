"""The OCI runtime interface: what the RPC code needs from runc, crun or a future VM
runtime (runtime/oci/runc.py drives runc and crun, each container held by conmon)."""

from __future__ import annotations

import signal as signals
from dataclasses import dataclass
from typing import Any, Protocol

from runtime import errors

TIMED_OUT_EXIT_CODE = -1   # ExecResult.exit_code of a timed-out exec: it has no exit status


class OCIError(errors.FailedPrecondition):
    """The OCI runtime (or conmon) refused an operation; the message is the runtime's."""


@dataclass(frozen=True)
class ContainerState:
    """From `runc state` and conmon's files."""
    status: str                  # "created" | "running" | "stopped" | "paused" | "unknown"
    pid: int                     # 0 when not running
    exit_code: int | None        # from conmon's exit file once the container exited
    finished_at_ns: int | None   # the exit file's mtime
    oom_killed: bool             # always False here: the caller checks the cgroup


@dataclass(frozen=True)
class ExecResult:
    exit_code: int       # TIMED_OUT_EXIT_CODE when timed_out
    stdout: bytes
    stderr: bytes
    timed_out: bool      # the CRI wants DEADLINE_EXCEEDED for this


class OCIRuntime(Protocol):
    """What the RPC code needs from an OCI runtime; runc and crun both implement it."""
    name: str

    async def create(self, container_id: str, bundle: str, *, log_path: str, tty: bool = False,
                     stdin: bool = False, stdin_once: bool = False, systemd_cgroup: bool = False,
                     conmon_cgroup: str = "", timeout: float = 240) -> int: ...
    async def start(self, container_id: str) -> None: ...
    async def kill(self, container_id: str, signal: int, all_processes: bool = False) -> None: ...
    async def wait_exit(self, container_id: str, timeout: float | None) -> int | None: ...
    async def stop(self, container_id: str, timeout: float,
                   stop_signal: int = signals.SIGTERM) -> int | None: ...
    async def delete(self, container_id: str, force: bool = False) -> None: ...
    async def state(self, container_id: str) -> ContainerState: ...
    async def update(self, container_id: str, resources: dict[str, Any]) -> None: ...
    async def exec_sync(self, container_id: str, argv: list[str], *, timeout: float | None,
                        env: list[str] | None = None, max_output: int = 16 << 20) -> ExecResult: ...
    async def reopen_log(self, container_id: str) -> None: ...
    async def resize(self, container_id: str, height: int, width: int) -> None: ...
    def attach_socket(self, container_id: str) -> str: ...
