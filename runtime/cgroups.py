"""What the host's cgroup hierarchy looks like (v1 legacy, hybrid, or v2 unified)."""

from __future__ import annotations

import os
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"
# What containers need limits from: CPU, memory, pids (and devices on v1).
REQUIRED_V1 = ("cpu", "cpuacct", "memory", "pids", "devices")
REQUIRED_V2 = ("cpu", "memory", "pids")


@dataclass(frozen=True)
class CgroupLayout:
    mode: str                 # "v2", "hybrid" or "v1"
    controllers: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        need = REQUIRED_V2 if self.mode == "v2" else REQUIRED_V1
        return tuple(c for c in need if c not in self.controllers)


def detect(root: str = CGROUP_ROOT) -> CgroupLayout:
    unified = os.path.join(root, "cgroup.controllers")
    if os.path.exists(unified):
        with open(unified) as f:
            return CgroupLayout("v2", tuple(sorted(f.read().split())))
    controllers: set[str] = set()
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, _ = line.rstrip("\n").split(":", 2)
            controllers.update(n for n in names.split(",") if n and not n.startswith("name="))
    mode = "hybrid" if os.path.ismount(os.path.join(root, "unified")) else "v1"
    return CgroupLayout(mode, tuple(sorted(controllers)))
