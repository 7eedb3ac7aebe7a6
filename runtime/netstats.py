"""Interface counters of pod network namespaces, read over netlink with pyroute2.

A netlink socket stays bound to the namespace it was made in, so one is made per
pod and kept until the pod's namespace goes (`forget`); a dump of the links on it
takes about 1 ms. The socket is made by a short-lived thread of its own that
enters the namespace (setns acts on the calling thread only) and ends right
after, so no thread that runs anything else is ever in a pod's namespace; pyroute2
then drives the socket by its file descriptor. pyroute2's own `netns=` argument is
not used: it forks the daemon, and a forked copy of a gRPC server with asyncio
signal handlers can stop its parent.

pyroute2's sockets belong to the thread that first used them, so every netlink
call runs in one worker thread of this module.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("criservice.netstats")

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0


@dataclass(frozen=True)
class InterfaceStats:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


@dataclass(frozen=True)
class NetworkSample:
    timestamp_ns: int
    interfaces: list[InterfaceStats]

    @property
    def default(self) -> InterfaceStats | None:
        """eth0 as the kubelet's default interface, else the first one."""
        for i in self.interfaces:
            if i.name == "eth0":
                return i
        return self.interfaces[0] if self.interfaces else None


def netlink_socket_in(netns_path: str) -> int:
    """A NETLINK_ROUTE socket made inside the namespace at `netns_path` (its fd).
    The namespace file is opened without O_CREAT: a path that is gone is an error."""
    result: dict[str, Any] = {}

    def enter_and_open() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns_path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            result["fd"] = sock.detach()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = e

    t = threading.Thread(target=enter_and_open, name="netns-socket", daemon=True)
    t.start()
    t.join()  # the thread ends here, still in the pod's namespace: nothing else ever runs on it
    if "error" in result:
        raise result["error"]
    return int(result["fd"])


class NetStats:
    def __init__(self) -> None:
        self._sockets: dict[str, Any] = {}
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="netstats")

    def _read(self, netns_path: str) -> NetworkSample:
        from pyroute2 import IPRoute
        ipr = self._sockets.get(netns_path)
        if ipr is None:
            ipr = self._sockets[netns_path] = IPRoute(fileno=netlink_socket_in(netns_path))
        try:
            links = ipr.get_links()
        except Exception:
            self._sockets.pop(netns_path, None)
            ipr.close()
            raise
        return NetworkSample(time.time_ns(), [s for s in map(_interface, links) if s is not None])

    def _read_many(self, paths: list[str]) -> dict[str, NetworkSample | None]:
        out: dict[str, NetworkSample | None] = {}
        for path in paths:
            try:
                out[path] = self._read(path)
            except Exception as e:  # noqa: BLE001 - a namespace going away under us is no error
                log.debug("pod network stats unavailable", extra={"fields": {"netns": path, "error": str(e)}})
                out[path] = None
        return out

    async def read(self, paths: Iterable[str]) -> dict[str, NetworkSample | None]:
        """Counters of every interface but loopback, per namespace path (None: unreadable)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._read_many, list(paths))

    def _forget(self, netns_path: str) -> None:
        ipr = self._sockets.pop(netns_path, None)
        if ipr is not None:
            ipr.close()

    def forget(self, netns_path: str) -> None:
        """Close the socket of a namespace that goes away (it would keep the namespace alive)."""
        try:
            self._worker.submit(self._forget, netns_path)
        except RuntimeError:  # shut down: every socket is closed already
            pass

    def close(self) -> None:
        for path in list(self._sockets):
            self._worker.submit(self._forget, path)
        self._worker.shutdown(wait=True)


def _interface(link: Any) -> InterfaceStats | None:
    name = link.get_attr("IFLA_IFNAME")
    stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
    if name == "lo" or not stats:
        return None
    return InterfaceStats(name, stats["rx_bytes"], stats["rx_packets"], stats["rx_errors"],
                          stats["rx_dropped"], stats["tx_bytes"], stats["tx_packets"], stats["tx_errors"],
                          stats["tx_dropped"])
