"""The state database: SQLite in WAL mode, one transaction per state change.

The schema is versioned with `PRAGMA user_version`; each entry of MIGRATIONS
moves it one step forward and runs in the same transaction as the version bump,
so a crash never leaves a half-migrated database. Later records (sandboxes,
containers, images) arrive as further migrations.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MIGRATIONS: list[str] = [
    # 1: settings that outlive a restart, e.g. the pod CIDR from UpdateRuntimeConfig.
    """
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: the image store. Layers are directories named by their row id (short
    # paths keep overlay's lowerdir option under one page); images are named by
    # tags and digests; snapshots pin the layers a container runs on.
    """
    CREATE TABLE blobs (
        digest     TEXT PRIMARY KEY,
        media_type TEXT NOT NULL,
        data       BLOB NOT NULL
    );
    CREATE TABLE layers (
        id         INTEGER PRIMARY KEY,
        chain_id   TEXT NOT NULL UNIQUE,
        diff_id    TEXT NOT NULL,
        size       INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE images (
        id              TEXT PRIMARY KEY,
        manifest_digest TEXT NOT NULL,
        size            INTEGER NOT NULL,
        created_at      INTEGER NOT NULL
    );
    CREATE TABLE image_layers (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        layer_id INTEGER NOT NULL REFERENCES layers(id),
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_layers_layer ON image_layers(layer_id);
    CREATE TABLE image_names (
        name     TEXT PRIMARY KEY,
        kind     TEXT NOT NULL CHECK (kind IN ('tag', 'digest')),
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    );
    CREATE INDEX image_names_image ON image_names(image_id);
    CREATE TABLE snapshots (
        id         TEXT PRIMARY KEY,
        image_id   TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE snapshot_layers (
        snapshot_id TEXT NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
        position    INTEGER NOT NULL,
        layer_id    INTEGER NOT NULL REFERENCES layers(id),
        PRIMARY KEY (snapshot_id, position)
    );
    CREATE INDEX snapshot_layers_layer ON snapshot_layers(layer_id);
    """,
    # 3: pod sandboxes and containers. `config` holds the CRI request's config as
    # the gRPC face serialised it: opaque here, so runtime/ stays protocol-free.
    """
    CREATE TABLE sandboxes (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        namespace   TEXT NOT NULL,
        uid         TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        handler     TEXT NOT NULL,
        config      BLOB NOT NULL,
        labels      TEXT NOT NULL,
        annotations TEXT NOT NULL,
        details     TEXT NOT NULL
    );
    CREATE UNIQUE INDEX sandboxes_name ON sandboxes(name, namespace, uid, attempt);
    CREATE TABLE containers (
        id          TEXT PRIMARY KEY,
        sandbox_id  TEXT NOT NULL REFERENCES sandboxes(id),
        name        TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        started_at  INTEGER NOT NULL DEFAULT 0,
        finished_at INTEGER NOT NULL DEFAULT 0,
        exit_code   INTEGER NOT NULL DEFAULT 0,
        reason      TEXT NOT NULL DEFAULT '',
        message     TEXT NOT NULL DEFAULT '',
        image_id    TEXT NOT NULL,
        image_ref   TEXT NOT NULL,
        config      BLOB NOT NULL,
        labels      TEXT NOT NULL,
        annotations TEXT NOT NULL,
        details     TEXT NOT NULL
    );
    CREATE UNIQUE INDEX containers_name ON containers(sandbox_id, name, attempt);
    """,
    # 4: `details` holds a record's typed fields in the layout `format` names; the rows
    # of before are format 1 (an untyped bag), which the record stores upgrade on load.
    """
    ALTER TABLE sandboxes ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE containers ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class StateError(Exception):
    pass


class StateDB:
    """Owns the connection. Callers use the typed stores built on it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE
        # takes the write lock up front, so a transaction never fails half-way on it).
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across crashes of us; WAL keeps it consistent
        self._conn.execute("PRAGMA foreign_keys=ON")
        os.chmod(self.path, 0o600)
        self._migrate()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} has schema version {current}, newer than this criservice "
                f"understands ({SCHEMA_VERSION}); run the newer criservice or move the state aside")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self.transaction() as conn:
                for statement in _statements(MIGRATIONS[version - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class SettingsStore:
    """Small persistent key/value settings (one row each)."""

    POD_CIDR = "pod_cidr"

    def __init__(self, db: StateDB) -> None:
        self._db = db

    def get(self, key: str) -> str | None:
        rows = self._db.query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set(self, key: str, value: str) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def delete(self, key: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM settings WHERE key = ?", (key,))

    @property
    def pod_cidr(self) -> str:
        return self.get(self.POD_CIDR) or ""

    @pod_cidr.setter
    def pod_cidr(self, cidr: str) -> None:
        if cidr:
            self.set(self.POD_CIDR, cidr)
        else:
            self.delete(self.POD_CIDR)
