"""inotify(7) through libc, for the watchers driven by the event loop: an instance,
its watches, and the events of one read."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000     # events were lost: whoever waits must look again
IN_IGNORED = 0x00008000        # the watch is gone (its file or directory was removed)
IN_ONLYDIR = 0x01000000
_EVENT = struct.Struct("iIII")   # wd, mask, cookie, len; then len bytes of NUL-padded name


@dataclass(frozen=True)
class Event:
    wd: int
    mask: int
    name: str                      # in a watched directory; "" for the watched file itself


class Inotify:
    """A non-blocking inotify descriptor; `fd` goes to the event loop's add_reader."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._check(self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")

    def add_watch(self, path: str, mask: int) -> int:
        return self._check(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask),
                           f"inotify_add_watch {path}")

    def rm_watch(self, wd: int) -> None:
        """EINVAL (the kernel dropped the watch already, its path removed) is no error."""
        if self.fd >= 0 and self._libc.inotify_rm_watch(self.fd, wd) < 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise OSError(err, f"inotify_rm_watch: {os.strerror(err)}")

    def read(self) -> list[Event]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            start = offset + _EVENT.size
            events.append(Event(wd, mask, os.fsdecode(data[start:start + length].rstrip(b"\0"))))
            offset = start + length
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @staticmethod
    def _check(result: int, what: str) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return result
