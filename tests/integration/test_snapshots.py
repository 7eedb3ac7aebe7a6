"""Container root filesystems as real overlay mounts of store layers."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from runtime import mounts
from runtime.images.store import ImageStore, chain_ids
from runtime.snapshots import Snapshots
from runtime.state import StateDB


def _image(store: ImageStore, nlayers: int, tag: str = "docker.io/library/many:1") -> str:
    diff_ids = ["sha256:" + hashlib.sha256(f"{tag}{i}".encode()).hexdigest() for i in range(nlayers)]
    ids = []
    for i, (chain, diff) in enumerate(zip(chain_ids(diff_ids), diff_ids)):
        staging = store.staging_dir()
        Path(staging, f"file{i}").write_text(str(i))
        Path(staging, "top").write_text(str(i))  # the uppermost layer's copy must win
        ids.append(store.commit_layer(staging, chain, diff, 1).id)
    config = json.dumps({"rootfs": {"diff_ids": diff_ids}, "tag": tag}).encode()
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    store.commit_image(image_id=image_id, config=config, config_media_type="c", manifest=b"{}",
                       manifest_digest="sha256:" + hashlib.sha256(b"{}" + tag.encode()).hexdigest(),
                       manifest_media_type="m", size=1, layer_ids=ids, names=[(tag, "tag")])
    return image_id


@pytest.fixture
def snaps(short_tmp: Path) -> Snapshots:
    store = ImageStore(str(short_tmp / "images"), StateDB(short_tmp / "state.db"))
    s = Snapshots(store, str(short_tmp / "containers"))
    yield s
    for snap in s.list():
        for point in sorted(mounts.mount_points(snap.rootfs), reverse=True):
            mounts.unmount(point, detach=True)


@pytest.mark.parametrize("nlayers", [0, 1, 3, 200])
async def test_mount_shows_every_layer_in_order(snaps: Snapshots, nlayers: int) -> None:
    image = snaps.store.get(_image(snaps.store, nlayers, f"docker.io/library/l:{nlayers}"))
    assert image is not None
    snap = snaps.create("c1", image)
    rootfs = await snaps.mount("c1")
    assert mounts.is_mount_point(rootfs)
    assert sorted(os.listdir(rootfs)) == sorted([f"file{i}" for i in range(nlayers)] + (["top"] if nlayers else []))
    if nlayers:
        assert Path(rootfs, "top").read_text() == str(nlayers - 1)
    Path(rootfs, "written").write_text("mine")
    assert Path(snap.upper, "written").read_text() == "mine"
    await snaps.mount("c1")  # idempotent
    assert mounts.mount_points(rootfs) == [rootfs]
    await snaps.remove("c1")
    assert not os.path.exists(snap.path) and not mounts.mount_points(snap.path)
    await snaps.remove("c1")  # idempotent


async def test_layers_stay_while_a_snapshot_uses_them(snaps: Snapshots) -> None:
    image_id = _image(snaps.store, 2)
    image = snaps.store.get(image_id)
    assert image is not None
    snaps.create("c2", image)
    rootfs = await snaps.mount("c2")
    snaps.store.remove(image_id)
    assert snaps.store.get(image_id) is None
    assert Path(rootfs, "top").read_text() == "1"  # still readable
    await snaps.remove("c2")
    assert os.listdir(snaps.store.layers_dir) == []


async def test_recover_removes_unknown_snapshots(snaps: Snapshots) -> None:
    image = snaps.store.get(_image(snaps.store, 1))
    assert image is not None
    snaps.create("keep", image)
    snaps.create("drop", image)
    await snaps.mount("drop")
    os.makedirs(os.path.join(snaps.root, "stray", "rootfs"))
    snaps.recover(keep={"keep"})
    assert sorted(os.listdir(snaps.root)) == ["keep"]
    assert [s.id for s in snaps.list()] == ["keep"]
