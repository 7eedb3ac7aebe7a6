"""Named crash points: places between two steps of a request where a test can make the
daemon die at once, to prove that a crash there loses nothing (the idea of etcd's
failpoints, reduced to the one action that matters here).

They are armed only through the environment the daemon starts with:
`CRISERVICE_CRASH_AT=pod.run.namespaces` makes it SIGKILL itself the first time a
request passes that point. Unarmed, a point costs one set lookup.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("criservice.crashpoints")

ENV = "CRISERVICE_CRASH_AT"

# Every point, in the order a request passes them; tests arm each in turn.
POINTS: tuple[str, ...] = (
    # RunPodSandbox
    "pod.run.recorded", "pod.run.files", "pod.run.namespaces", "pod.run.network", "pod.run.infra",
    "pod.run.ready",
    # StopPodSandbox
    "pod.stop.marked", "pod.stop.containers", "pod.stop.network",
    # RemovePodSandbox
    "pod.remove.marked", "pod.remove.containers", "pod.remove.files",
    # CreateContainer
    "container.create.recorded", "container.create.rootfs", "container.create.spec",
    "container.create.runtime",
    # StartContainer
    "container.start.started",
    # StopContainer
    "container.stop.signalled",
    # RemoveContainer
    "container.remove.marked", "container.remove.runtime", "container.remove.rootfs",
    # PullImage
    "image.pull.layer", "image.pull.committed",
)

_armed = frozenset(name for name in os.environ.get(ENV, "").split(",") if name)


def crash_point(name: str) -> None:
    """Die here, without any cleanup, if a test armed this point."""
    if name in _armed:
        log.warning("crash point reached: killing the daemon", extra={"fields": {"point": name}})
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def unknown_armed() -> list[str]:
    """Armed names that are no point (a typo in a test would otherwise arm nothing)."""
    return sorted(_armed - set(POINTS))
