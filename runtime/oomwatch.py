"""OOM kills of running containers on cgroup v2, seen as they happen.

The kernel marks a cgroup's memory.events modified (inotify IN_MODIFY) on every
memory event. With the systemd driver a container's scope, and its memory.events
with it, is removed as soon as its last process is gone, often before the exit is
recorded: the kill count must be read while the container still runs. A process
killed at once can take the scope with it before even that read; then the parent's
memory.events, whose counters include its children's and which stays, tells: a kill
there since the container was made, and the container killed by SIGKILL. (With
cgroupfs the directory stays until the container is removed, and reading it at
exit is enough; the watch costs one inotify watch per running container either way.)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable

from runtime.inotify import IN_IGNORED, IN_MODIFY, IN_Q_OVERFLOW, Inotify

log = logging.getLogger("criservice.oom")


def oom_kills(memory_events: str) -> int:
    """The oom_kill counter of a memory.events file's text (0 when absent)."""
    for line in memory_events.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


class OomWatch:
    """One inotify instance for every running container's memory.events."""

    def __init__(self, on_kill: Callable[[str], None]) -> None:
        self._on_kill = on_kill
        self._inotify: Inotify | None = None     # made with the first watch, in the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_wd: dict[int, tuple[str, str]] = {}    # wd -> (container id, memory.events path)
        self._by_id: dict[str, int] = {}
        self._parents: dict[str, tuple[str, int]] = {}  # container id -> (parent's memory.events, kills then)

    def watch(self, container_id: str, cgroup_dir: str) -> None:
        """Start watching (idempotent); a container whose cgroup is gone already is skipped.
        A kill that came before the watch is reported at once."""
        if container_id in self._by_id or container_id in self._parents:
            return
        path = os.path.join(cgroup_dir, "memory.events")
        parent = os.path.join(os.path.dirname(cgroup_dir.rstrip("/")), "memory.events")
        self._parents[container_id] = (parent, _read_kills(parent) or 0)
        try:
            wd = self._open().add_watch(path, IN_MODIFY)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                log.warning("cannot watch a container's memory events", extra={"fields": {
                    "container": container_id, "path": path, "error": str(e)}})
            return
        self._by_wd[wd] = (container_id, path)
        self._by_id[container_id] = wd
        self._check(wd)

    def killed_in_parent(self, container_id: str) -> bool:
        """Whether the parent cgroup counted an OOM kill since the watch began: what is
        left to tell once the container's own cgroup is gone."""
        parent, before = self._parents.get(container_id, ("", 0))
        now = _read_kills(parent) if parent else None
        return now is not None and now > before

    def forget(self, container_id: str) -> None:
        self._parents.pop(container_id, None)
        wd = self._by_id.pop(container_id, None)
        if wd is not None and self._inotify is not None:
            self._by_wd.pop(wd, None)
            self._inotify.rm_watch(wd)

    def close(self) -> None:
        if self._inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
        self._inotify, self._by_wd, self._by_id, self._parents = None, {}, {}, {}

    def _open(self) -> Inotify:
        if self._inotify is None:
            self._inotify, self._loop = Inotify(), asyncio.get_running_loop()
            self._loop.add_reader(self._inotify.fd, self._on_readable)
        return self._inotify

    def _on_readable(self) -> None:
        if self._inotify is None:
            return
        changed, gone = set(), set()
        for event in self._inotify.read():
            if event.mask & IN_Q_OVERFLOW:     # events were lost: every watch looks again
                changed |= set(self._by_wd)
            elif event.mask & IN_IGNORED:      # the cgroup went: nothing more will come
                gone.add(event.wd)
            elif event.mask & IN_MODIFY:
                changed.add(event.wd)
        # The changes first: a kill and the removal of its cgroup often come in one read.
        for wd in changed:
            if wd in self._by_wd:
                self._check(wd)
        for wd in gone:
            entry = self._by_wd.pop(wd, None)
            if entry is not None:
                self._by_id.pop(entry[0], None)

    def _check(self, wd: int) -> None:
        container_id, path = self._by_wd[wd]
        kills = _read_kills(path)
        if kills is None:   # gone meanwhile (IN_IGNORED follows): the parent may still tell
            if not self.killed_in_parent(container_id):
                return
        elif not kills:
            return
        self.forget(container_id)   # once is enough: the container is being killed
        self._on_kill(container_id)


def _read_kills(path: str) -> int | None:
    try:
        with open(path) as f:
            return oom_kills(f.read())
    except OSError:
        return None
