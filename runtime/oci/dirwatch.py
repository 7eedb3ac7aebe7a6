"""One inotify watcher for every wait on a file to appear (conmon's exit files, pid files)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from runtime.inotify import IN_CLOSE_WRITE, IN_CREATE, IN_IGNORED, IN_MOVED_TO, IN_ONLYDIR, IN_Q_OVERFLOW, Inotify

T = TypeVar("T")

_WATCH_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR


class DirWatcher:
    """inotify on the directories someone waits in, driven by the event loop.

    A waiter names a file and a check; the check runs again whenever that name is
    created, written or renamed into place. The check looks at the file itself, so
    a waiter never misses what happened before it started waiting.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._inotify = Inotify()
        self._refs: dict[int, int] = {}
        self._waiters: dict[tuple[int, str], set[asyncio.Future[None]]] = {}
        loop.add_reader(self._inotify.fd, self._on_readable)

    def close(self) -> None:
        if self._inotify.fd < 0:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self._inotify.fd)
        self._inotify.close()

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
        wd = self._inotify.add_watch(directory, _WATCH_MASK)
        self._refs[wd] = self._refs.get(wd, 0) + 1
        return wd

    def _unwatch(self, wd: int) -> None:
        refs = self._refs.get(wd, 0) - 1
        if refs > 0:
            self._refs[wd] = refs
            return
        self._refs.pop(wd, None)
        self._inotify.rm_watch(wd)

    def _forget(self, key: tuple[int, str], woken: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(woken)
            if not waiters:
                del self._waiters[key]

    def _on_readable(self) -> None:
        for event in self._inotify.read():
            if event.mask & IN_Q_OVERFLOW:
                self._wake(None, None)   # events were lost: everyone looks again
            elif event.mask & IN_IGNORED:
                self._wake(event.wd, None)   # the watch is gone (directory removed)
            else:
                self._wake(event.wd, event.name)

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
