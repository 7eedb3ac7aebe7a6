"""Pod sandbox and container records: typed, in memory for fast lists, durable in SQLite.

Every change goes to the database in its own transaction first and to the
in-memory copy after it committed, so what a list shows is always on disk.
Records change only through the transition methods, which say what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from runtime import errors
from runtime.state import StateDB

SANDBOX_READY = "ready"
SANDBOX_NOTREADY = "notready"

CONTAINER_CREATED = "created"
CONTAINER_RUNNING = "running"
CONTAINER_EXITED = "exited"
CONTAINER_UNKNOWN = "unknown"

# Allowed container state changes; anything else is a bug in the caller.
_CONTAINER_TRANSITIONS = {
    CONTAINER_CREATED: {CONTAINER_RUNNING, CONTAINER_EXITED, CONTAINER_UNKNOWN},
    CONTAINER_RUNNING: {CONTAINER_EXITED, CONTAINER_UNKNOWN},
    CONTAINER_UNKNOWN: {CONTAINER_RUNNING, CONTAINER_EXITED},
    CONTAINER_EXITED: set(),
}


@dataclass(frozen=True)
class SandboxRecord:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    state: str
    created_at: int
    handler: str
    config: bytes                       # the CRI PodSandboxConfig, serialised by the gRPC face
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)   # namespaces, IPs, phases, paths

    @property
    def display_name(self) -> str:
        return f"{self.namespace}/{self.name} (uid {self.uid}, attempt {self.attempt})"


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    state: str
    created_at: int
    image_id: str
    image_ref: str
    config: bytes                       # the CRI ContainerConfig, serialised by the gRPC face
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)   # bundle, log path, pid, handler


class _Store:
    table = ""
    kind = ""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._items: dict[str, Any] = {}

    def get(self, ident: str) -> Any:
        """By full id or a unique id prefix (crictl shows truncated ids)."""
        if not ident:
            raise errors.InvalidArgument(f"{self.kind} id is empty")
        item = self._items.get(ident)
        if item is not None:
            return item
        matches = [v for k, v in list(self._items.items()) if k.startswith(ident)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise errors.InvalidArgument(f"{self.kind} id prefix {errors.shown(ident)} is ambiguous")
        raise errors.NotFound(f"{self.kind} {errors.shown(ident)} not found")

    def find(self, ident: str) -> Any | None:
        try:
            return self.get(ident)
        except errors.NotFound:
            return None

    def list(self) -> list[Any]:
        return list(self._items.values())

    def _row(self, rec: Any) -> dict[str, Any]:
        row = dataclasses.asdict(rec)
        for key in ("labels", "annotations", "details"):
            row[key] = json.dumps(row[key], sort_keys=True)
        return row

    def _insert(self, rec: Any, conflict: str) -> None:
        row = self._row(rec)
        columns = ", ".join(row)
        marks = ", ".join(f":{c}" for c in row)
        try:
            with self.db.transaction() as conn:
                conn.execute(f"INSERT INTO {self.table} ({columns}) VALUES ({marks})", row)
        except sqlite3.IntegrityError:
            raise errors.AlreadyExists(conflict) from None
        with self._lock:
            self._items[rec.id] = rec

    def _replace(self, rec: Any) -> None:
        row = self._row(rec)
        sets = ", ".join(f"{c} = :{c}" for c in row if c != "id")
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE {self.table} SET {sets} WHERE id = :id", row)
        with self._lock:
            self._items[rec.id] = rec

    def delete(self, ident: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(f"DELETE FROM {self.table} WHERE id = ?", (ident,))
        with self._lock:
            self._items.pop(ident, None)

    def _load(self, cls: type) -> None:
        names = [f.name for f in dataclasses.fields(cls)]
        rows = self.db.query(f"SELECT {', '.join(names)} FROM {self.table}")
        for row in rows:
            values = dict(zip(names, row))
            for key in ("labels", "annotations", "details"):
                values[key] = json.loads(values[key])
            self._items[values["id"]] = cls(**values)


class SandboxStore(_Store):
    table, kind = "sandboxes", "pod sandbox"

    def __init__(self, db: StateDB) -> None:
        super().__init__(db)
        self._load(SandboxRecord)

    def add(self, rec: SandboxRecord) -> None:
        self._insert(rec, f"a pod sandbox named {rec.display_name} exists already")

    def get(self, ident: str) -> SandboxRecord:
        return super().get(ident)

    def update_details(self, ident: str, **changes: Any) -> SandboxRecord:
        rec = self.get(ident)
        rec = dataclasses.replace(rec, details={**rec.details, **changes})
        self._replace(rec)
        return rec

    def update(self, ident: str, state: str, **changes: Any) -> SandboxRecord:
        """The state and details at once, in one transaction (no crash can split them)."""
        rec = self.get(ident)
        rec = dataclasses.replace(rec, state=state, details={**rec.details, **changes})
        self._replace(rec)
        return rec


class ContainerStore(_Store):
    table, kind = "containers", "container"

    def __init__(self, db: StateDB) -> None:
        super().__init__(db)
        self._load(ContainerRecord)

    def add(self, rec: ContainerRecord) -> None:
        self._insert(rec, f"a container named {errors.shown(rec.name)} (attempt {rec.attempt}) exists already "
                          f"in pod sandbox {rec.sandbox_id}")

    def get(self, ident: str) -> ContainerRecord:
        return super().get(ident)

    def in_sandbox(self, sandbox_id: str) -> list[ContainerRecord]:
        return [c for c in self._items.values() if c.sandbox_id == sandbox_id]

    def transition(self, ident: str, state: str, **changes: Any) -> ContainerRecord:
        rec = self.get(ident)
        if state != rec.state and state not in _CONTAINER_TRANSITIONS[rec.state]:
            raise errors.FailedPrecondition(
                f"container {rec.id} is {rec.state}; it cannot become {state}")
        rec = dataclasses.replace(rec, state=state, **changes)
        self._replace(rec)
        return rec

    def update_details(self, ident: str, **changes: Any) -> ContainerRecord:
        rec = self.get(ident)
        rec = dataclasses.replace(rec, details={**rec.details, **changes})
        self._replace(rec)
        return rec


def now_ns() -> int:
    return time.time_ns()

