"""mount(2) and umount2(2) through libc, and a look at /proc/self/mountinfo.

Calling the syscalls directly saves a mount(8) process per container; the
process is still used when an option string must be resolved relative to a
working directory (overlay's long lowerdir lists), since the daemon's threads
share one cwd and must never chdir.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import subprocess
from collections.abc import Iterator

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
# The kernel copies at most one page of mount data.
MAX_OPTIONS = os.sysconf("SC_PAGE_SIZE") - 1


# mountinfo escapes space, tab, newline and backslash as octal.
_OCTAL = re.compile(r"\\([0-7]{3})")
_ESCAPES = {ord(c): f"\\{ord(c):03o}" for c in " \t\n\\"}


class MountError(OSError):
    pass


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise MountError(err, f"mount {fstype} on {target} ({data[:200]}): {os.strerror(err)}")


def mount_in(cwd: str, source: str, target: str, fstype: str, options: str) -> None:
    """mount(8) run in `cwd`, so relative paths in `options` resolve there."""
    res = subprocess.run(["mount", "-t", fstype, "-o", options, source, target], cwd=cwd,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise MountError(errno.EINVAL, f"mount {fstype} on {target}: {res.stderr.strip()}")


def unmount(target: str, detach: bool = False) -> bool:
    """Unmount; False when nothing was mounted there."""
    if _libc.umount2(target.encode(), MNT_DETACH if detach else 0) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):  # not a mount point / gone already
            return False
        raise MountError(err, f"umount {target}: {os.strerror(err)}")
    return True


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


def _escaped(path: str) -> str:
    """`path` without trailing slashes, as mountinfo writes it."""
    return (path.rstrip("/") or "/").translate(_ESCAPES)


def _targets() -> Iterator[str]:
    """Every mount point in mountinfo's escaped form. Callers match in that form: a pod
    start looks here with hundreds of mounts on the host, and unescaping every line
    cost milliseconds."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            yield line.split(" ", 5)[4]


def mount_points(under: str = "/") -> list[str]:
    """Mount points at or below `under`, from /proc/self/mountinfo."""
    wanted = _escaped(under)
    prefix = wanted if wanted == "/" else wanted + "/"
    return [_unescape(t) for t in _targets() if t == wanted or t.startswith(prefix)]


def is_mount_point(path: str) -> bool:
    return _escaped(path) in _targets()
