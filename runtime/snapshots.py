"""Container root filesystems: an overlay of the image's layers plus a private upper dir.

A snapshot is recorded (with the layers it needs, so removing the image keeps
them) before anything is made on disk, and removed from the record only after
everything on disk is gone; `recover()` settles what a crash left between.

    <root>/<id>/upper   the container's writable layer
    <root>/<id>/work    overlayfs' work directory
    <root>/<id>/rootfs  the mount point
"""

from __future__ import annotations

import asyncio
import builtins  # `list` below is a method: the type is builtins.list
import logging
import os
import shutil
import time
from dataclasses import dataclass

from runtime import errors, mounts
from runtime.images.store import ImageRecord, ImageStore

log = logging.getLogger("criservice.snapshots")


@dataclass(frozen=True)
class Snapshot:
    id: str
    image_id: str
    path: str

    @property
    def rootfs(self) -> str:
        return os.path.join(self.path, "rootfs")

    @property
    def upper(self) -> str:
        return os.path.join(self.path, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.path, "work")


class Snapshots:
    def __init__(self, store: ImageStore, root: str) -> None:
        self.store = store
        self.root = root
        os.makedirs(root, mode=0o711, exist_ok=True)

    def _snapshot(self, snapshot_id: str, image_id: str) -> Snapshot:
        return Snapshot(snapshot_id, image_id, os.path.join(self.root, snapshot_id))

    def get(self, snapshot_id: str) -> Snapshot | None:
        rows = self.store.db.query("SELECT image_id FROM snapshots WHERE id = ?", (snapshot_id,))
        return self._snapshot(snapshot_id, rows[0][0]) if rows else None

    def list(self) -> list[Snapshot]:
        return [self._snapshot(i, img) for i, img in self.store.db.query("SELECT id, image_id FROM snapshots")]

    def create(self, snapshot_id: str, image: ImageRecord) -> Snapshot:
        if "/" in snapshot_id or snapshot_id in ("", ".", ".."):
            raise errors.InvalidArgument(f"snapshot id {snapshot_id!r} is not a plain name")
        with self.store.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone():
                raise errors.AlreadyExists(f"snapshot {snapshot_id} exists")
            conn.execute("INSERT INTO snapshots (id, image_id, created_at) VALUES (?, ?, ?)",
                         (snapshot_id, image.id, time.time_ns()))
            conn.executemany("INSERT INTO snapshot_layers (snapshot_id, position, layer_id) VALUES (?, ?, ?)",
                             [(snapshot_id, i, lid) for i, lid in enumerate(image.layer_ids)])
        snap = self._snapshot(snapshot_id, image.id)
        os.makedirs(snap.path, mode=0o711, exist_ok=True)
        for d in (snap.upper, snap.work, snap.rootfs):
            os.makedirs(d, mode=0o755, exist_ok=True)
        return snap

    def _lowers(self, snap: Snapshot) -> builtins.list[str]:
        ids = [r[0] for r in self.store.db.query(
            "SELECT layer_id FROM snapshot_layers WHERE snapshot_id = ? ORDER BY position DESC", (snap.id,))]
        return [str(i) for i in ids] or []

    def _mount(self, snap: Snapshot) -> None:
        if mounts.is_mount_point(snap.rootfs):
            return
        layers = self._lowers(snap)
        upper = f"upperdir={snap.upper},workdir={snap.work}"
        if not layers:
            mounts.mount("overlay", snap.rootfs, "overlay", 0,
                         f"lowerdir={self.store.empty_dir},{upper}")
            return
        absolute = "lowerdir=" + ":".join(self.store.layer_path(int(i)) for i in layers) + "," + upper
        if len(absolute) <= mounts.MAX_OPTIONS:
            mounts.mount("overlay", snap.rootfs, "overlay", 0, absolute)
        else:  # many layers: relative names, resolved in the layers directory
            mounts.mount_in(self.store.layers_dir, "overlay", snap.rootfs, "overlay",
                            "lowerdir=" + ":".join(layers) + "," + upper)

    async def mount(self, snapshot_id: str) -> str:
        snap = self.get(snapshot_id)
        if snap is None:
            raise errors.NotFound(f"snapshot {snapshot_id} not found")
        await asyncio.to_thread(self._mount, snap)
        return snap.rootfs

    async def unmount(self, snapshot_id: str) -> None:
        path = os.path.join(self.root, snapshot_id, "rootfs")
        await asyncio.to_thread(_unmount_all, path)

    async def remove(self, snapshot_id: str) -> None:
        """Idempotent: unmount, delete the directories, then the record."""
        path = os.path.join(self.root, snapshot_id)
        await asyncio.to_thread(_unmount_all, os.path.join(path, "rootfs"))
        await asyncio.to_thread(_remove_dir, path)
        with self.store.db.transaction() as conn:
            conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
        await asyncio.to_thread(self.store.gc)

    def recover(self, keep: set[str] | None = None) -> None:
        """At start: directories without a record are removed. With `keep`, records
        not in it (containers the caller no longer knows) are removed too."""
        recorded = {s.id for s in self.list()}
        for name in os.listdir(self.root):
            if name not in recorded:
                log.info("removing unrecorded snapshot", extra={"fields": {"snapshot": name}})
                _unmount_all(os.path.join(self.root, name, "rootfs"))
                _remove_dir(os.path.join(self.root, name))
        if keep is not None:
            for snapshot_id in recorded - keep:
                _unmount_all(os.path.join(self.root, snapshot_id, "rootfs"))
                _remove_dir(os.path.join(self.root, snapshot_id))
                with self.store.db.transaction() as conn:
                    conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
        self.store.gc()


def _unmount_all(path: str) -> None:
    # Deepest first: a container may have had mounts stacked on or inside its rootfs.
    for point in sorted(mounts.mount_points(path), key=len, reverse=True):
        mounts.unmount(point, detach=True)


def _remove_dir(path: str) -> None:
    if mounts.mount_points(path):
        raise errors.FailedPrecondition(f"{path} still has mounts; refusing to delete through them")
    if os.path.lexists(path):
        shutil.rmtree(path)
