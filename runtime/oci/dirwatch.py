"""One inotify watcher for every wait on a file to appear (conmon's exit files, pid files)."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import struct
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_ONLYDIR = 0x01000000
_WATCH_MASK = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_ONLYDIR
_EVENT = struct.Struct("iIII")   # wd, mask, cookie, len; then len bytes of NUL-padded name


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class DirWatcher:
    """inotify on the directories someone waits in, driven by the event loop.

    A waiter names a file and a check; the check runs again whenever that name is
    created, written or renamed into place. The check looks at the file itself, so
    a waiter never misses what happened before it started waiting.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = _check(self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")
        self._refs: dict[int, int] = {}
        self._waiters: dict[tuple[int, str], set[asyncio.Future[None]]] = {}
        loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        if self._fd < 0:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1

    async def wait_until(self, directory: str, name: str, check: Callable[[], T | None], *,
                         deadline: float | None, until: asyncio.Future[Any] | None = None) -> T | None:
        """check()'s first non-None result; None once `deadline` (loop time) passed or
        `until` completed without check() succeeding."""
        wd = self._watch(directory)
        key = (wd, name)
        try:
            while True:
                woken: asyncio.Future[None] = self.loop.create_future()
                self._waiters.setdefault(key, set()).add(woken)
                try:
                    result = check()
                    if result is not None or (until is not None and until.done()):
                        return result
                    timeout = None if deadline is None else deadline - self.loop.time()
                    if timeout is not None and timeout <= 0:
                        return None
                    waits: set[asyncio.Future[Any]] = {woken} if until is None else {woken, until}
                    done, _ = await asyncio.wait(waits, timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        return check()
                finally:
                    self._forget(key, woken)
        finally:
            self._unwatch(wd)

    def _watch(self, directory: str) -> int:
        wd = _check(self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _WATCH_MASK),
                    f"inotify_add_watch {directory}")
        self._refs[wd] = self._refs.get(wd, 0) + 1
        return wd

    def _unwatch(self, wd: int) -> None:
        refs = self._refs.get(wd, 0) - 1
        if refs > 0:
            self._refs[wd] = refs
            return
        self._refs.pop(wd, None)
        if self._fd >= 0 and self._libc.inotify_rm_watch(self._fd, wd) < 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:   # EINVAL: the kernel dropped it already (directory removed)
                raise OSError(err, f"inotify_rm_watch: {os.strerror(err)}")

    def _forget(self, key: tuple[int, str], woken: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(woken)
            if not waiters:
                del self._waiters[key]

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            start = offset + _EVENT.size
            name = os.fsdecode(data[start:start + length].rstrip(b"\0"))
            offset = start + length
            if mask & _IN_Q_OVERFLOW:
                self._wake(None, None)   # events were lost: everyone looks again
            elif mask & _IN_IGNORED:
                self._wake(wd, None)     # the watch is gone (directory removed)
            else:
                self._wake(wd, name)

    def _wake(self, wd: int | None, name: str | None) -> None:
        """Wake the waiters for `name` in watch `wd`; None matches any."""
        for (key_wd, key_name), waiters in self._waiters.items():
            if wd in (None, key_wd) and name in (None, key_name):
                for fut in waiters:
                    resolve(fut)


def resolve(fut: asyncio.Future[None]) -> None:
    """Wake a waiter, unless its wait ended already (timed out or cancelled)."""
    if not fut.done():
        fut.set_result(None)
