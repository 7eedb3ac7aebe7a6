"""What every CRI area of the daemon shares: the config, the state and the metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from criservice.config import Config
from criservice.metrics import Metrics
from runtime.state import SettingsStore, StateDB


@dataclass
class Deps:
    config: Config
    db: StateDB
    metrics: Metrics
    started_at: float = field(default_factory=time.time)

    @property
    def settings(self) -> SettingsStore:
        return SettingsStore(self.db)


class Area:
    """Base of the per-area servicer mixins (runtime info, sandboxes, images, ...)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
