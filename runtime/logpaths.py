"""Container log files: always inside their pod's log directory, never through a symlink.

conmon runs as root and opens the log path it is given with O_CREAT|O_APPEND, so a
path that leaves the directory, or a symlink planted where the file goes (a pod
with a hostPath of /var/log/pods can plant one), would let it create and append to
any file on the host. The daemon therefore makes every directory and the file
itself, one component at a time relative to the directory it just opened with
O_NOFOLLOW, before conmon opens the path, and again before conmon reopens it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat

from runtime import errors

NAME_MAX = 255      # bytes in one path component
PATH_MAX = 4096     # bytes in a path, with its NUL
LOG_MODE = 0o600            # what conmon itself gives a log file it makes


def join(log_directory: str, log_path: str) -> str:
    """`log_path` of a container, taken relative to its pod's `log_directory` (an absolute
    one as well, as containerd does); one that leaves the directory is refused."""
    rel = posixpath.normpath(log_path.lstrip("/")) if log_path.strip("/") else ""
    if rel in ("", ".") or rel == ".." or rel.startswith("../"):
        raise errors.InvalidArgument(f"config.log_path {errors.shown(log_path)} does not name a file "
                                     "inside the pod's log directory")
    for part in rel.split("/"):
        if len(part.encode()) > NAME_MAX:
            raise errors.InvalidArgument(f"config.log_path: a component is {len(part.encode())} bytes long; "
                                         f"at most {NAME_MAX}")
    return posixpath.join(log_directory, rel)


def prepare(log_directory: str, path: str) -> None:
    """Make `path` (from `join`) a regular file inside `log_directory`, creating the
    directories between them; refuses a symlink or a non-directory on the way."""
    rel = posixpath.relpath(path, log_directory)
    if rel.startswith("..") or posixpath.isabs(rel):
        raise errors.InvalidArgument(f"log path {errors.shown(path)} is outside {errors.shown(log_directory)}")
    os.makedirs(log_directory, mode=0o755, exist_ok=True)
    *dirs, name = rel.split("/")
    fd = os.open(log_directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in dirs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            fd = _swap(fd, _open_nofollow(part, os.O_RDONLY | os.O_DIRECTORY, fd, path))
        file_fd = _open_nofollow(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, fd, path)
        try:
            if not stat.S_ISREG(os.fstat(file_fd).st_mode):
                raise errors.FailedPrecondition(f"log path {errors.shown(path)} exists and is not a regular file")
        finally:
            os.close(file_fd)
    finally:
        os.close(fd)


def _open_nofollow(name: str, flags: int, dir_fd: int, path: str) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, LOG_MODE, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise errors.FailedPrecondition(
                f"log path {errors.shown(path)}: {name!r} is a symlink or not a directory; "
                "it is not followed") from None
        # ENXIO: a FIFO without a reader; EACCES, ENOSPC...: the host's state, said in its words.
        raise errors.FailedPrecondition(f"log path {errors.shown(path)}: {e.strerror}") from None


def _swap(old: int, new: int) -> int:
    os.close(old)
    return new
