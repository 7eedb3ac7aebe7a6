"""Exec: a process started by `runc exec` in a running container, wired to the client.

Without a terminal the process gets pipes. With one, `runc exec --tty` makes the
container's terminal and relays it to its own stdio, a pty of ours; resizes are set on our
pty and runc, told with SIGWINCH, copies them. When the client goes away the process is
hung up on (SIGHUP to its process group), then killed if it is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import struct
import termios
from collections.abc import Sequence
from typing import Any, Protocol

from runtime.oci.runc import ExecCommand
from runtime.streaming.channels import Outcome
from runtime.streaming.session import RemoteStreams, pump

log = logging.getLogger("criservice.streaming")

DRAIN_TIMEOUT = 1.0        # for output after the process exited (background children may hold it)
HANGUP_GRACE = 5.0         # from SIGHUP to SIGKILL
FIRST_SIZE_WAIT = 1.0      # for the client's terminal size before the process starts


class ExecRuntime(Protocol):
    def exec_command(self, container_id: str, argv: list[str], *, tty: bool = False,
                     env: list[str] | None = None) -> ExecCommand: ...

    async def end_exec(self, proc: asyncio.subprocess.Process, command: ExecCommand, *,
                       grace: float = ...) -> None: ...


async def _copy_out(read: "asyncio.StreamReader | _PtyReader", stream: object) -> None:
    while data := await read.read(65536):
        if stream is not None:
            await stream.write(data)   # type: ignore[attr-defined]


async def _ready(fd: int, *, writable: bool) -> None:
    """Until `fd` can be read (or written) without blocking."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    def wake() -> None:
        if not ready.done():
            ready.set_result(None)
    add(fd, wake)
    try:
        await ready
    finally:
        remove(fd)


class _PtyReader:
    """Reads a pty master; the end is EIO once no process holds the terminal."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def read(self, n: int) -> bytes:
        while True:
            try:
                return os.read(self.fd, n)
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno == errno.EIO:
                    return b""
                raise
            await _ready(self.fd, writable=False)


async def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
            continue
        except BlockingIOError:
            pass
        await _ready(fd, writable=True)


def set_window_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class ExecSession:
    """Runs one exec for one client (a `RemoteCommand`)."""

    def __init__(self, runtime: ExecRuntime, container_id: str, cmd: list[str], *, tty: bool) -> None:
        self.runtime = runtime
        self.container_id = container_id
        self.cmd = cmd
        self.tty = tty

    async def __call__(self, streams: RemoteStreams) -> Outcome:
        command = self.runtime.exec_command(self.container_id, self.cmd, tty=self.tty)
        try:
            if self.tty:
                return await self._with_terminal(command, streams)
            return await self._with_pipes(command, streams)
        finally:
            command.cleanup()

    async def _spawn(self, command: ExecCommand, *, stdin: int, stdout: int,
                     stderr: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*command.argv, start_new_session=True, stdin=stdin,
                                                    stdout=stdout, stderr=stderr)

    def _outcome(self, proc: asyncio.subprocess.Process, command: ExecCommand) -> Outcome:
        code = proc.returncode or 0
        message = command.error() if code != 0 else ""
        if message:
            return Outcome(error=f"exec in container {self.container_id} failed: {message}")
        return Outcome(exit_code=code if code >= 0 else 128 - code)

    async def _finish(self, proc: asyncio.subprocess.Process, command: ExecCommand, streams: RemoteStreams,
                      outputs: Sequence[asyncio.Future[Any]], others: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for the process or the client's departure, then leave nothing behind."""
        exited = asyncio.ensure_future(proc.wait())
        gone = asyncio.ensure_future(streams.gone.wait())
        try:
            await asyncio.wait({exited, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await self.runtime.end_exec(proc, command, grace=HANGUP_GRACE)
            elif outputs:
                await asyncio.wait(outputs, timeout=DRAIN_TIMEOUT)
        finally:
            if proc.returncode is None:   # cancelled: the daemon is stopping
                await asyncio.shield(self.runtime.end_exec(proc, command, grace=0.5))
            for task in (exited, gone, *outputs, *others):
                task.cancel()
            await asyncio.gather(exited, gone, *outputs, *others, return_exceptions=True)
            for out in outputs:
                if out.done() and not out.cancelled() and out.exception() is not None:
                    log.debug("exec output failed", extra={"fields": {"error": repr(out.exception())}})

    async def _with_pipes(self, command: ExecCommand, streams: RemoteStreams) -> Outcome:
        pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        proc = await self._spawn(command, stdin=pipe if streams.stdin else null,
                                 stdout=pipe if streams.stdout else null, stderr=pipe if streams.stderr else null)
        outputs: list[asyncio.Future[None]] = []
        others: list[asyncio.Future[None]] = []
        if proc.stdout is not None:
            outputs.append(asyncio.ensure_future(_copy_out(proc.stdout, streams.stdout)))
        if proc.stderr is not None:
            outputs.append(asyncio.ensure_future(_copy_out(proc.stderr, streams.stderr)))
        if proc.stdin is not None and streams.stdin is not None:
            others.append(asyncio.ensure_future(self._feed(proc.stdin, streams)))
        try:
            await self._finish(proc, command, streams, outputs, others)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
        return self._outcome(proc, command)

    @staticmethod
    async def _feed(stdin: asyncio.StreamWriter, streams: RemoteStreams) -> None:
        assert streams.stdin is not None

        async def write(data: bytes) -> None:
            stdin.write(data)
            await stdin.drain()

        with contextlib.suppress(ConnectionError, BrokenPipeError):
            await pump(streams.stdin, write)
        stdin.close()

    async def _with_terminal(self, command: ExecCommand, streams: RemoteStreams) -> Outcome:
        # runc relays between the container's terminal and its own stdio, which must be a
        # terminal: ours, from openpty. runc puts our side in raw mode and copies our
        # window size to the container's terminal on SIGWINCH.
        master, slave = os.openpty()
        try:
            try:
                await self._first_size(master, streams)
                proc = await self._spawn(command, stdin=slave, stdout=slave, stderr=slave)
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            outputs = [asyncio.ensure_future(_copy_out(_PtyReader(master), streams.stdout))]
            others = [asyncio.ensure_future(self._resizes(master, proc, streams))]
            if streams.stdin is not None:
                others.append(asyncio.ensure_future(self._type(master, streams)))
            # The master is closed (in finally) only after the tasks using it are done, so
            # its number cannot be reused under them.
            await self._finish(proc, command, streams, outputs, others)
            return self._outcome(proc, command)
        finally:
            os.close(master)

    @staticmethod
    async def _first_size(master: int, streams: RemoteStreams) -> None:
        """kubectl and crictl send their terminal's size as soon as the streams are up; the
        process starts with it (runc copies it at start), so that a command run at once
        (`stty size`, a full-screen program) never sees 0x0. A client that sends none
        gets the default after a short wait."""
        if streams.resizes is None:
            return
        with contextlib.suppress(TimeoutError):
            width, height = await asyncio.wait_for(streams.resizes.get(), FIRST_SIZE_WAIT)
            with contextlib.suppress(OSError):
                set_window_size(master, width, height)

    @staticmethod
    async def _resizes(master: int, proc: asyncio.subprocess.Process, streams: RemoteStreams) -> None:
        if streams.resizes is None:
            return
        while True:
            width, height = await streams.resizes.get()
            with contextlib.suppress(OSError):
                set_window_size(master, width, height)
                if proc.returncode is None:
                    os.kill(proc.pid, signal.SIGWINCH)

    @staticmethod
    async def _type(master: int, streams: RemoteStreams) -> None:
        assert streams.stdin is not None
        with contextlib.suppress(OSError):
            await pump(streams.stdin, lambda data: _write_fd(master, data))

