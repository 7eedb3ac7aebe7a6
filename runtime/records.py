"""Pod sandbox and container records: typed, in memory for fast lists, durable in SQLite.

Every change goes to the database in its own transaction first and to the
in-memory copy after it committed, so what a list shows is always on disk.
Records change only through the store's methods, which say what is allowed;
`update` takes a function that makes the new record with `dataclasses.replace`,
so the type checker sees every field a change names.

Records are read back with msgspec, which checks every field's type. On disk,
each record's fields beyond its table's columns are one JSON object in
`details`, in the layout that the row's `format` says. Format 1 was an untyped
bag of keys; a store upgrades such rows when it loads them, in one transaction.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from runtime import errors
from runtime.oci.specinput import ResourcesInput
from runtime.podspec import PodSpec
from runtime.state import StateDB, StateError

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


FORMAT = 2   # of the details column: typed fields (1: the untyped bag of before)


@dataclass(frozen=True)
class SandboxRecord:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    state: str
    created_at: int
    handler: str                        # the runtime handler its containers run with
    config: bytes                       # the CRI PodSandboxConfig as asked, kept for later formats to derive from
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    pod: PodSpec = PodSpec()            # what RunPodSandbox asked for, converted once
    hostname: str = ""                  # the one the pod got: the kubelet's, or one made of the name
    pod_dir: str = ""                   # hostname, hosts, resolv.conf and the shm mount point
    # Progress markers: a crash between two steps is finished or undone from these.
    building: bool = False              # RunPodSandbox has not returned it yet
    removing: bool = False              # RemovePodSandbox began
    torn_down: bool = False             # every step of stopping it was done
    undo_failed: str = ""               # why undoing a failed start left something behind
    # Namespaces, each recorded before it is made, so that an undo knows where to look.
    netns: str = ""                     # the pinned network namespace; "" with the host network
    ipc_ns: str = ""                    # pinned; "" with the host IPC namespace
    uts_ns: str = ""                    # pinned; "" with the host network
    pid_ns: str = ""                    # the infra process's, when the pod shares one
    shm: str = ""                       # the pod's /dev/shm tmpfs; "" with host IPC
    # The network.
    cni_added: bool = False             # an ADD ran or may have, so a DEL is owed
    cni_network: str = ""               # the CNI network's name
    ips: tuple[str, ...] = ()           # the pod's addresses, the primary one first
    # The infra (pause) process of a pod whose containers share one PID namespace.
    infra_id: str = ""
    infra_pid: int = 0
    infra_cgroups_path: str = ""
    infra_conmon_cgroups_path: str = ""         # its monitor's; "" in records of before
    # What was measured, and what the kubelet said.
    phases_ms: Mapping[str, float] = field(default_factory=dict)    # RunPodSandbox, phase by phase
    timeline_ms: Mapping[str, float] = field(default_factory=dict)  # from RunPodSandbox to each container start
    overhead: ResourcesInput | None = None      # UpdatePodSandboxResources: the pod's overhead
    resources: ResourcesInput | None = None     # UpdatePodSandboxResources: the sum of its containers'

    @property
    def display_name(self) -> str:
        return f"{self.namespace}/{self.name} (uid {self.uid}, attempt {self.attempt})"

    @property
    def cni_args(self) -> dict[str, str]:
        """CNI_ARGS for ADD and DEL, as other runtimes send them."""
        return {"K8S_POD_NAMESPACE": self.namespace, "K8S_POD_NAME": self.name,
                "K8S_POD_INFRA_CONTAINER_ID": self.id, "K8S_POD_UID": self.uid}


@dataclass(frozen=True)
class ImageVolume:
    snapshot: str                       # the snapshot of its own the volume is mounted from
    image_id: str                       # the image the reference resolved to


@dataclass(frozen=True)
class ProcessUser:
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    state: str
    created_at: int
    image_id: str
    image_ref: str                      # the reference it was created from
    config: bytes                       # the CRI ContainerConfig, serialised by the gRPC face
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    handler: str = ""                   # its pod's runtime handler
    cgroups_path: str = ""              # as given to the OCI runtime (slice:prefix:name with systemd)
    conmon_cgroups_path: str = ""       # its monitor's, in the same pod; "" in records of before
    log_path: str = ""                  # under the pod's log directory; "" = container.log in the bundle
    # Progress markers, as on sandboxes.
    building: bool = False              # CreateContainer has not returned it yet
    removing: bool = False              # RemoveContainer began
    bundle: str = ""                    # the OCI bundle (and snapshot) directory
    pid: int = 0                        # its init process, as the OCI runtime reported it
    oom_killed: bool = False            # an OOM kill seen in its cgroup while it ran (cgroup v2)
    stop_signal: str = ""               # the config's, else the image's; "" = SIGTERM
    user: ProcessUser | None = None     # what the spec says it runs as
    image_volumes: Mapping[str, ImageVolume] = field(default_factory=dict)   # by container path
    resources: ResourcesInput | None = None     # as UpdateContainerResources last set them


class LegacyReader(Protocol):
    """What upgrading a format-1 row needs from the gRPC face, which alone reads the CRI."""

    def pod_spec(self, config: bytes) -> PodSpec: ...
    def resources(self, message: dict[str, Any]) -> ResourcesInput: ...


R = TypeVar("R", SandboxRecord, ContainerRecord)


class _Store(Generic[R]):
    table = ""
    kind = ""
    record_type: type[R]
    columns: tuple[str, ...] = ()       # the table's own columns; the other fields go to details

    def __init__(self, db: StateDB, legacy: LegacyReader | None = None) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._items: dict[str, R] = {}
        self._load(legacy)

    def get(self, ident: str) -> R:
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

    def find(self, ident: str) -> R | None:
        try:
            return self.get(ident)
        except errors.NotFound:
            return None

    def list(self) -> list[R]:
        return list(self._items.values())

    def update(self, ident: str, change: Callable[[R], R]) -> R:
        """`change` makes the new record of the current one; the id cannot change."""
        old = self.get(ident)
        rec = change(old)
        if rec.id != old.id:
            raise ValueError(f"a change of {self.kind} {old.id} made another id")
        self._replace(rec)
        return rec

    def _row(self, rec: R) -> dict[str, Any]:
        data = dataclasses.asdict(rec)
        row = {c: data.pop(c) for c in self.columns}
        for key in ("labels", "annotations"):
            row[key] = json.dumps(row[key], sort_keys=True)
        row["details"] = json.dumps(data, sort_keys=True)
        row["format"] = FORMAT
        return row

    def _insert(self, rec: R, conflict: str) -> None:
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

    def _replace(self, rec: R) -> None:
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

    def _load(self, legacy: LegacyReader | None) -> None:
        names = self.columns + ("details", "format")
        upgraded = []
        for row in self.db.query(f"SELECT {', '.join(names)} FROM {self.table}"):
            values = dict(zip(names, row))
            details, fmt = json.loads(values.pop("details")), values.pop("format")
            for key in ("labels", "annotations"):
                values[key] = json.loads(values[key])
            if fmt == 1:
                if legacy is None:
                    raise StateError(f"{self.db.path}: {self.table} of format 1 need the upgrade's reader")
                details = self._upgrade(details, values, legacy)
            elif fmt != FORMAT:
                raise StateError(f"{self.db.path}: a row of {self.table} has format {fmt}, "
                                 f"newer than this criservice understands ({FORMAT})")
            rec = msgspec.convert({**values, **details}, self.record_type, builtin_types=(bytes,))
            self._items[rec.id] = rec
            if fmt != FORMAT:
                upgraded.append(rec)
        if upgraded:   # all at once: a crash leaves every row in one format or the other
            with self.db.transaction() as conn:
                for rec in upgraded:
                    conn.execute(f"UPDATE {self.table} SET details = :details, format = :format "
                                 "WHERE id = :id", self._row(rec))

    def _upgrade(self, details: dict[str, Any], values: dict[str, Any], legacy: LegacyReader) -> dict[str, Any]:
        raise NotImplementedError


def _known(details: dict[str, Any], cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of a format-1 bag that kept their name and meaning as fields of `cls`
    (a null there, such as no UTS namespace, is the field's empty default)."""
    names = {f.name for f in fields(cls)} - set(skip)
    return {k: v for k, v in details.items() if k in names and v is not None}


class SandboxStore(_Store[SandboxRecord]):
    table, kind, record_type = "sandboxes", "pod sandbox", SandboxRecord
    columns = ("id", "name", "namespace", "uid", "attempt", "state", "created_at", "handler", "config",
               "labels", "annotations")

    def add(self, rec: SandboxRecord) -> None:
        self._insert(rec, f"a pod sandbox named {rec.display_name} exists already")

    def _upgrade(self, details: dict[str, Any], values: dict[str, Any], legacy: LegacyReader) -> dict[str, Any]:
        # The pod's settings came from the bag as the old code used them; what the bag
        # lacked (security context, namespace options, DNS) from the stored CRI config.
        spec = dataclasses.asdict(legacy.pod_spec(values["config"]))
        kept = _known(details, PodSpec, skip=("security", "namespaces", "dns_servers", "dns_searches",
                                               "dns_options", "hostname"))
        out = _known(details, SandboxRecord, skip=("pod", "overhead", "resources"))
        out["pod"] = {**spec, **kept}
        out["cni_network"] = details.get("network", "")
        told = details.get("pod_resources") or {}
        for key in ("overhead", "resources"):
            if told.get(key):
                out[key] = dataclasses.asdict(legacy.resources(told[key]))
        return out


class ContainerStore(_Store[ContainerRecord]):
    table, kind, record_type = "containers", "container", ContainerRecord
    columns = ("id", "sandbox_id", "name", "attempt", "state", "created_at", "started_at", "finished_at",
               "exit_code", "reason", "message", "image_id", "image_ref", "config", "labels", "annotations")

    def add(self, rec: ContainerRecord) -> None:
        self._insert(rec, f"a container named {errors.shown(rec.name)} (attempt {rec.attempt}) exists already "
                          f"in pod sandbox {rec.sandbox_id}")

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

    def _upgrade(self, details: dict[str, Any], values: dict[str, Any], legacy: LegacyReader) -> dict[str, Any]:
        out = _known(details, ContainerRecord, skip=("user", "resources"))
        user = details.get("user")
        if user:
            out["user"] = {"uid": user.get("uid", 0), "gid": user.get("gid", 0),
                           "additional_gids": user.get("additionalGids", [])}
        if details.get("resources") is not None:
            out["resources"] = dataclasses.asdict(legacy.resources(details["resources"]))
        return out


def now_ns() -> int:
    return time.time_ns()

