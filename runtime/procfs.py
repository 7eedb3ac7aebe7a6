"""Facts about processes from /proc."""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK") or 100


def start_time_ns(pid: int) -> int | None:
    """When the process started (wall clock, ns), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: fields count from the last ')'.
    ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
    boot_ns = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return boot_ns + ticks * 1_000_000_000 // _TICKS
