"""The image store: records in the state database, layer directories on disk.

Layout under the image root:
    layers/<n>/     one unpacked layer in overlayfs form; <n> is its row id
    tmp/            layers being unpacked; emptied at every start
    empty/          the lower directory of an image without layers

A layer directory is renamed into layers/ inside the transaction that records
it, and an image row is written only once all its layers are recorded, so a
crash at any moment leaves either the whole image or leftovers that
`recover()` removes at the next start.
"""

from __future__ import annotations

import builtins  # `list` below is a method: the type is builtins.list
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime import errors
from runtime.images import reference
from runtime.state import StateDB

log = logging.getLogger("criservice.images")


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """OCI image spec: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


@dataclass(frozen=True)
class ImageRecord:
    id: str                       # sha256 digest of the image config
    manifest_digest: str
    size: int
    created_at: int
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    config: dict[str, Any] = field(compare=False, repr=False)
    layer_ids: tuple[int, ...] = ()

    @property
    def user(self) -> str:
        return str((self.config.get("config") or {}).get("User") or "")

    @property
    def uid_and_username(self) -> tuple[int | None, str]:
        """The CRI's split of the config User: a numeric user is a uid, a name a username."""
        user = self.user.split(":", 1)[0]
        if not user:
            return None, ""
        return (int(user), "") if user.isdigit() else (None, user)


@dataclass(frozen=True)
class LayerRecord:
    id: int
    chain_id: str
    diff_id: str
    size: int


class ImageStore:
    def __init__(self, root: str, db: StateDB) -> None:
        self.root = root
        self.db = db
        self.layers_dir = os.path.join(root, "layers")
        self.tmp_dir = os.path.join(root, "tmp")
        self.empty_dir = os.path.join(root, "empty")
        for d in (root, self.layers_dir, self.tmp_dir, self.empty_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(self.empty_dir, 0o755)
        # Layers that pulls in flight rely on before their image is recorded: gc skips them.
        self._held: Counter[str] = Counter()
        self._gc_lock = threading.Lock()

    # ---- layers ------------------------------------------------------------

    def layer_path(self, layer_id: int) -> str:
        return os.path.join(self.layers_dir, str(layer_id))

    def layer_by_chain(self, chain_id: str) -> LayerRecord | None:
        rows = self.db.query("SELECT id, chain_id, diff_id, size FROM layers WHERE chain_id = ?", (chain_id,))
        return LayerRecord(*rows[0]) if rows else None

    def hold(self, chain_ids: Iterable[str]) -> None:
        """Keep gc away from these layers (present or still to come) until `release`:
        a pull holds its image's layers from before the first is fetched until the
        image that needs them is recorded."""
        with self._gc_lock:
            self._held.update(chain_ids)

    def release(self, chain_ids: Iterable[str]) -> None:
        with self._gc_lock:
            self._held.subtract(chain_ids)
            for chain_id in [c for c, n in self._held.items() if n <= 0]:
                del self._held[chain_id]

    def staging_dir(self) -> str:
        path = os.path.join(self.tmp_dir, uuid.uuid4().hex)
        os.mkdir(path, 0o755)
        return path

    def commit_layer(self, staging: str, chain_id: str, diff_id: str, size: int) -> LayerRecord:
        """Move an unpacked, verified layer into place and record it (idempotent per chain id)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT id, chain_id, diff_id, size FROM layers WHERE chain_id = ?",
                               (chain_id,)).fetchone()
            if row is not None:  # another pull got there first
                shutil.rmtree(staging, ignore_errors=True)
                return LayerRecord(*row)
            cur = conn.execute("INSERT INTO layers (chain_id, diff_id, size, created_at) VALUES (?, ?, ?, ?)",
                               (chain_id, diff_id, size, time.time_ns()))
            layer_id = int(cur.lastrowid or 0)
            os.rename(staging, self.layer_path(layer_id))
        return LayerRecord(layer_id, chain_id, diff_id, size)

    # ---- images ------------------------------------------------------------

    def commit_image(self, *, image_id: str, config: bytes, config_media_type: str,
                     manifest: bytes, manifest_digest: str, manifest_media_type: str,
                     size: int, layer_ids: list[int], names: list[tuple[str, str]]) -> None:
        """Record a complete image and point its names at it, in one transaction.
        A name held by another image moves to this one (a tag that was re-pushed)."""
        now = time.time_ns()
        with self.db.transaction() as conn:
            for digest, media_type, data in ((image_id, config_media_type, config),
                                              (manifest_digest, manifest_media_type, manifest)):
                conn.execute("INSERT OR IGNORE INTO blobs (digest, media_type, data) VALUES (?, ?, ?)",
                             (digest, media_type, data))
            exists = conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone()
            if not exists:
                conn.execute("INSERT INTO images (id, manifest_digest, size, created_at) VALUES (?, ?, ?, ?)",
                             (image_id, manifest_digest, size, now))
                conn.executemany("INSERT INTO image_layers (image_id, position, layer_id) VALUES (?, ?, ?)",
                                 [(image_id, i, lid) for i, lid in enumerate(layer_ids)])
            _set_names(conn, image_id, names)

    def add_names(self, image_id: str, names: list[tuple[str, str]]) -> None:
        with self.db.transaction() as conn:
            _set_names(conn, image_id, names)

    def _record(self, image_id: str) -> ImageRecord | None:
        rows = self.db.query("SELECT id, manifest_digest, size, created_at FROM images WHERE id = ?", (image_id,))
        if not rows:
            return None
        names = self.db.query("SELECT name, kind FROM image_names WHERE image_id = ? ORDER BY name", (image_id,))
        config = self.db.query("SELECT data FROM blobs WHERE digest = ?", (image_id,))
        layers = self.db.query("SELECT layer_id FROM image_layers WHERE image_id = ? ORDER BY position",
                               (image_id,))
        id_, manifest_digest, size, created = rows[0]
        return ImageRecord(
            id_, manifest_digest, size, created,
            tuple(n for n, k in names if k == "tag"), tuple(n for n, k in names if k == "digest"),
            json.loads(config[0][0]) if config else {}, tuple(r[0] for r in layers))

    def list(self) -> list[ImageRecord]:
        ids = [r[0] for r in self.db.query("SELECT id FROM images ORDER BY created_at")]
        return [rec for rec in map(self._record, ids) if rec is not None]

    def get(self, image_id: str) -> ImageRecord | None:
        return self._record(image_id)

    def lookup(self, text: str) -> ImageRecord | None:
        """Find an image by id (full, bare hex, or a unique prefix of 12+ hex),
        by any tag or digest name, or by a short name (`busybox`)."""
        text = text.strip()
        if not text:
            raise errors.InvalidArgument("image reference is empty")
        hexpart = text.removeprefix("sha256:")
        if reference.is_image_id(text):
            return self._record("sha256:" + hexpart)
        try:
            ref = reference.parse(text)
        except reference.InvalidReference as e:
            if _is_hex(hexpart) and len(hexpart) >= 12:
                return self._by_prefix(hexpart)
            raise errors.InvalidArgument(str(e)) from None
        name = ref.with_digest(ref.digest) if ref.digest else ref.repo_tag
        rows = self.db.query("SELECT image_id FROM image_names WHERE name = ?", (name,))
        if rows:
            return self._record(rows[0][0])
        if _is_hex(text) and len(text) >= 12:
            return self._by_prefix(text)
        return None

    def _by_prefix(self, prefix: str) -> ImageRecord | None:
        rows = self.db.query("SELECT id FROM images WHERE id LIKE ?", (f"sha256:{prefix}%",))
        if len(rows) > 1:
            raise errors.InvalidArgument(f"image id prefix {prefix!r} is ambiguous ({len(rows)} images)")
        return self._record(rows[0][0]) if rows else None

    def remove(self, image_id: str) -> None:
        """Forget the image and all its names; its layers go unless something else uses them."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
            still = conn.execute("SELECT 1 FROM snapshots WHERE image_id = ?", (image_id,)).fetchone()
            if not still:
                conn.execute("DELETE FROM blobs WHERE digest = ?", (image_id,))
        self.gc()

    def layers_of(self, image: ImageRecord) -> builtins.list[LayerRecord]:
        rows = self.db.query(
            "SELECT l.id, l.chain_id, l.diff_id, l.size FROM image_layers il JOIN layers l ON l.id = il.layer_id "
            "WHERE il.image_id = ? ORDER BY il.position", (image.id,))
        return [LayerRecord(*r) for r in rows]

    def layer_paths(self, image: ImageRecord) -> builtins.list[str]:
        """Lower directories, uppermost first (overlay's lowerdir order)."""
        return [self.layer_path(i) for i in reversed(image.layer_ids)] or [self.empty_dir]

    # ---- garbage and crash leftovers ---------------------------------------

    def gc(self) -> builtins.list[int]:
        """Delete layers no image and no snapshot uses; returns their ids."""
        with self._gc_lock, self.db.transaction() as conn:
            unused = [r[0] for r in conn.execute(
                "SELECT id, chain_id FROM layers WHERE id NOT IN (SELECT layer_id FROM image_layers) "
                "AND id NOT IN (SELECT layer_id FROM snapshot_layers)") if r[1] not in self._held]
            conn.executemany("DELETE FROM layers WHERE id = ?", [(i,) for i in unused])
            conn.execute("DELETE FROM blobs WHERE digest NOT IN (SELECT id FROM images) "
                         "AND digest NOT IN (SELECT manifest_digest FROM images) "
                         "AND digest NOT IN (SELECT image_id FROM snapshots)")
        for layer_id in unused:
            self._remove_tree(self.layer_path(layer_id))
        return unused

    def recover(self) -> None:
        """At start: drop half-unpacked layers, layer directories with no record,
        and records whose directory is gone (with the images that needed them)."""
        for name in os.listdir(self.tmp_dir):
            self._remove_tree(os.path.join(self.tmp_dir, name))
        known = {r[0] for r in self.db.query("SELECT id FROM layers")}
        for name in os.listdir(self.layers_dir):
            if not (name.isdigit() and int(name) in known):
                log.info("removing unrecorded layer directory", extra={"fields": {"dir": name}})
                self._remove_tree(os.path.join(self.layers_dir, name))
        missing = [i for i in known if not os.path.isdir(self.layer_path(i))]
        if missing:
            log.warning("layers missing on disk; dropping the images that use them",
                        extra={"fields": {"layers": missing}})
            with self.db.transaction() as conn:
                marks = ",".join("?" * len(missing))
                conn.execute(f"DELETE FROM images WHERE id IN (SELECT image_id FROM image_layers "
                             f"WHERE layer_id IN ({marks}))", missing)
                conn.execute(f"DELETE FROM layers WHERE id IN ({marks}) AND id NOT IN "
                             f"(SELECT layer_id FROM snapshot_layers)", missing)
        self.gc()

    @staticmethod
    def _remove_tree(path: str) -> None:
        if os.path.lexists(path):
            shutil.rmtree(path)


def _set_names(conn: Any, image_id: str, names: list[tuple[str, str]]) -> None:
    """Point names at an image; a name another image held moves (a re-pushed tag)."""
    conn.executemany(
        "INSERT INTO image_names (name, kind, image_id) VALUES (?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, image_id = excluded.image_id",
        [(name, kind, image_id) for name, kind in names])


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)
