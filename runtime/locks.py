"""Single-instance locks: a second daemon on the same socket or state must not start."""

from __future__ import annotations

import fcntl
import os


class LockHeld(Exception):
    def __init__(self, path: str, holder: str) -> None:
        who = f"pid {holder}" if holder else "another process"
        super().__init__(f"{path} is locked by {who}: another criservice is running with this "
                         f"socket or state directory")
        self.path, self.holder = path, holder


class PidLock:
    """An flock on a file that also records the holder's pid (for the error message).

    flock dies with the process, so a crash never leaves a stale lock behind."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LockHeld(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def holder(self) -> str | None:
        """The pid holding the lock, or None if nobody does (without taking it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
