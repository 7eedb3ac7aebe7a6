"""What cgroup files do not tell about a container's processes: open file descriptors,
sockets, and the soft limit on open files, read from /proc. Blocking: run in a thread."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessStats:
    file_descriptors: int
    sockets: int
    max_open_files_soft: int | None   # of the container's first process


def process_stats(pids: list[int], proc: str = "/proc") -> ProcessStats:
    fds = sockets = 0
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue  # exited meanwhile
        fds += len(names)
        for name in names:
            try:
                if os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                    sockets += 1
            except OSError:
                continue
    return ProcessStats(fds, sockets, _soft_nofile(f"{proc}/{pids[0]}/limits") if pids else None)


def _soft_nofile(path: str) -> int | None:
    """The "Max open files" line of /proc/PID/limits: soft, hard, unit."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line[len("Max open files"):].split()[0]
                    return None if soft == "unlimited" else int(soft)
    except (OSError, ValueError):
        return None
    return None


def filesystem_device(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The source (device) of the filesystem `path` is on, as cAdvisor labels it."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return ""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    best = ("", "")
    with open(mountinfo) as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            parts = fields.split()
            if len(parts) > 4 and parts[2] == want:
                mountpoint, source = parts[4], (tail.split() + ["", ""])[1]
                if path.startswith(mountpoint) and len(mountpoint) >= len(best[0]):
                    best = (mountpoint, source)
    return best[1]
