"""Disk usage of a directory tree (bytes on disk and inodes), for ImageFsInfo and stats.

A walk of a large image store takes a while, so it runs in a thread and its
result is reused for a few seconds: the kubelet asks every 10 s or so.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from dataclasses import dataclass

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Usage:
    path: str
    bytes_used: int
    inodes_used: int
    timestamp_ns: int


def measure(path: str) -> Usage:
    """Blocks actually allocated (st_blocks), counting each hard-linked inode once.
    Mount points below `path` (a container's mounted rootfs) are not crossed."""
    seen: set[int] = set()
    used = inodes = 0
    try:
        root_dev = os.lstat(path).st_dev
    except FileNotFoundError:
        return Usage(path, 0, 0, time.time_ns())
    stack = [path]
    while stack:
        directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_dev != root_dev or st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
                used += st.st_blocks * 512
                inodes += 1
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return Usage(path, used, inodes, time.time_ns())


class UsageCache:
    def __init__(self, ttl: float = CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Usage]] = {}
        self._inflight: dict[str, asyncio.Future[Usage]] = {}

    def invalidate(self, path: str) -> None:
        """Forget a result: the tree changed (a pull or a removal finished)."""
        self._cache.pop(path, None)

    async def get(self, path: str) -> Usage:
        hit = self._cache.get(path)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        # Concurrent askers share one walk.
        if path not in self._inflight:
            self._inflight[path] = asyncio.ensure_future(asyncio.to_thread(measure, path))
        future = self._inflight[path]
        try:
            usage = await asyncio.shield(future)
        finally:
            if future.done():
                self._inflight.pop(path, None)
        self._cache[path] = (time.monotonic(), usage)
        return usage
