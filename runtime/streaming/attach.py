"""Attach: the container's own stdio, through conmon's attach socket.

The socket is SOCK_SEQPACKET. Each packet from conmon starts with a byte naming the pipe
(1 stdin, 2 stdout, 3 stderr; a terminal's output is stdout); what is sent to it is the
container's stdin as it is, and shutting down the write side ends that stdin when the
container was made with stdin_once. Terminal resizes go through conmon's FIFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Protocol

from runtime import errors
from runtime.streaming.channels import Outcome
from runtime.streaming.session import RemoteStreams

PIPE_STDOUT, PIPE_STDERR = 2, 3
BUF_SIZE = 8192          # conmon's STDIO_BUF_SIZE; a packet from it carries one more byte


class AttachRuntime(Protocol):
    def attach_socket(self, container_id: str) -> str: ...

    async def resize(self, container_id: str, height: int, width: int) -> None: ...


class AttachSession:
    def __init__(self, runtime: AttachRuntime, container_id: str, *, tty: bool, stdin_once: bool) -> None:
        self.runtime = runtime
        self.container_id = container_id
        self.tty = tty
        self.stdin_once = stdin_once

    async def __call__(self, streams: RemoteStreams) -> Outcome:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        tasks: list[asyncio.Future[Any]] = []
        try:
            try:
                await loop.sock_connect(sock, self.runtime.attach_socket(self.container_id))
            except OSError as e:
                raise errors.FailedPrecondition(
                    f"container {self.container_id}: conmon's attach socket: {e.strerror}") from None
            output = asyncio.ensure_future(self._output(sock, streams))
            gone = asyncio.ensure_future(streams.gone.wait())
            tasks += [output, gone]
            waits: set[asyncio.Future[Any]] = {output, gone}
            if streams.stdin is not None:
                stdin = asyncio.ensure_future(self._input(sock, streams))
                tasks.append(stdin)
                waits.add(stdin)
            if streams.resizes is not None:
                tasks.append(asyncio.ensure_future(self._resizes(streams)))
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not (done & {output, gone}) and (self.stdin_once or self.tty):
                # stdin ended: a stdin_once container (or a terminal) ends on its own
                await asyncio.wait({output, gone}, return_when=asyncio.FIRST_COMPLETED)
            # otherwise stdin ended and the container keeps its stdin: the session is over
            return Outcome()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            sock.close()

    async def _output(self, sock: socket.socket, streams: RemoteStreams) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError):
            while packet := await loop.sock_recv(sock, BUF_SIZE + 1):
                target = streams.stderr if packet[0] == PIPE_STDERR and not self.tty else streams.stdout
                if target is not None and len(packet) > 1:
                    await target.write(packet[1:])

    async def _input(self, sock: socket.socket, streams: RemoteStreams) -> None:
        assert streams.stdin is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError):
            while data := await streams.stdin.read():
                for start in range(0, len(data), BUF_SIZE):
                    await loop.sock_sendall(sock, data[start:start + BUF_SIZE])
            sock.shutdown(socket.SHUT_WR)

    async def _resizes(self, streams: RemoteStreams) -> None:
        assert streams.resizes is not None
        while True:
            width, height = await streams.resizes.get()
            with contextlib.suppress(errors.CRIError):
                await self.runtime.resize(self.container_id, height, width)
