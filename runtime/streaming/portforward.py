"""Port-forward: TCP connections to a port of a pod, made inside the pod's network namespace.

A socket belongs to the network namespace it was created in. So one thread of our own
enters the pod's namespace, creates the socket and returns to the daemon's namespace;
the event loop connects it and carries the bytes.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from runtime.streaming.session import Dialer

CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 10.0
_libc = ctypes.CDLL(None, use_errno=True)
_netns_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _socket_in(netns: str, family: int) -> socket.socket:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        finally:
            _setns(own)   # failing here leaves this thread elsewhere: the error surfaces
    finally:
        os.close(own)


async def _socket(netns: str | None, family: int) -> socket.socket:
    if netns is None:
        return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    return await asyncio.get_running_loop().run_in_executor(_netns_thread, _socket_in, netns, family)


def dialer(netns: str | None) -> Dialer:
    """Connects to localhost:<port> in `netns` (None: the host's, for host-network pods),
    IPv4 first, then IPv6."""

    async def dial(port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = await _socket(netns, family)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), CONNECT_TIMEOUT)
                return sock
            except (OSError, TimeoutError) as e:
                sock.close()
                if error is None:
                    error = e if isinstance(e, OSError) else OSError(f"connecting to port {port} timed out")
        assert error is not None
        raise error

    return dial
