"""What every CRI area of the daemon shares: the config, the state and the machinery."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from criservice.config import Config
from criservice.prometheus import Metrics
from runtime.state import SettingsStore, StateDB

if TYPE_CHECKING:
    from runtime.containers import ContainerManager
    from runtime.events import EventHub
    from runtime.images.puller import Puller
    from runtime.images.store import ImageStore
    from runtime.pods import PodManager
    from runtime.records import ContainerStore, SandboxStore
    from runtime.snapshots import Snapshots
    from runtime.streaming import StreamingServer
    from runtime.stats import Stats


@dataclass
class Deps:
    config: Config
    db: StateDB
    metrics: Metrics
    images: "ImageStore"
    puller: "Puller"
    snapshots: "Snapshots"
    # One noun per thing: `pods` and `containers` do things (run, stop, remove, recover),
    # their records are what the state database holds of them.
    pod_records: "SandboxStore"
    container_records: "ContainerStore"
    pods: "PodManager"
    containers: "ContainerManager"
    stats: "Stats"
    events: "EventHub"
    started_at: float = field(default_factory=time.time)
    streaming: "StreamingServer | None" = None

    @property
    def settings(self) -> SettingsStore:
        return SettingsStore(self.db)


class Area:
    """Base of the per-area servicer mixins (runtime info, sandboxes, images, ...)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
