"""The image store's records and directories, with layers made by hand (no registry)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from runtime import errors
from runtime.images.store import ImageStore, chain_ids
from runtime.state import StateDB


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "images"), StateDB(tmp_path / "state.db"))


def _add_image(store: ImageStore, tag: str, files: list[str], user: str = "") -> str:
    diff_ids = [_digest(f.encode()) for f in files]
    layer_ids = []
    for chain, diff, name in zip(chain_ids(diff_ids), diff_ids, files):
        existing = store.layer_by_chain(chain)
        if existing:
            layer_ids.append(existing.id)
            continue
        staging = store.staging_dir()
        Path(staging, name).write_text(name)
        layer_ids.append(store.commit_layer(staging, chain, diff, 1).id)
    config = json.dumps({"config": {"User": user}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "tag": tag}).encode()
    manifest = json.dumps({"tag": tag}).encode()
    image_id = _digest(config)
    repo = tag.rsplit(":", 1)[0]
    store.commit_image(image_id=image_id, config=config, config_media_type="c", manifest=manifest,
                       manifest_digest=_digest(manifest), manifest_media_type="m", size=100,
                       layer_ids=layer_ids, names=[(tag, "tag"), (f"{repo}@{_digest(manifest)}", "digest")])
    return image_id


def test_chain_ids_follow_the_image_spec() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_ids([a]) == [a]
    assert chain_ids([a, b])[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()


def test_lookup_by_id_tag_digest_short_name_and_prefix(store: ImageStore) -> None:
    image_id = _add_image(store, "docker.io/library/busybox:latest", ["l1", "l2"])
    rec = store.get(image_id)
    assert rec is not None and rec.repo_tags == ("docker.io/library/busybox:latest",)
    for text in (image_id, image_id.removeprefix("sha256:"), "busybox", "busybox:latest",
                 "docker.io/library/busybox", rec.repo_digests[0], image_id[7:20]):
        found = store.lookup(text)
        assert found is not None and found.id == image_id, text
    assert store.lookup("busybox:other") is None
    with pytest.raises(errors.InvalidArgument):
        store.lookup("library/Busybox")


def test_layers_are_shared_and_outlive_one_image(store: ImageStore) -> None:
    first = _add_image(store, "docker.io/library/a:1", ["base", "one"])
    second = _add_image(store, "docker.io/library/b:1", ["base", "two"])
    base = store.layers_of(store.get(first))[0]  # type: ignore[arg-type]
    assert store.layers_of(store.get(second))[0].id == base.id  # type: ignore[arg-type]
    store.remove(first)
    assert store.get(first) is None
    assert os.path.isdir(store.layer_path(base.id))  # b still needs it
    assert len(os.listdir(store.layers_dir)) == 2
    store.remove(second)
    assert os.listdir(store.layers_dir) == []


def test_a_moved_tag_leaves_the_old_image_untagged(store: ImageStore) -> None:
    old = _add_image(store, "docker.io/library/a:latest", ["v1"])
    new = _add_image(store, "docker.io/library/a:latest", ["v2"])
    assert store.get(old).repo_tags == ()  # type: ignore[union-attr]
    assert store.get(new).repo_tags == ("docker.io/library/a:latest",)  # type: ignore[union-attr]


def test_user_split_into_uid_or_username(store: ImageStore) -> None:
    for user, expected in (("1002", (1002, "")), ("www-data", (None, "www-data")),
                           ("1003:1004", (1003, "")), ("www-data:1004", (None, "www-data")), ("", (None, ""))):
        image_id = _add_image(store, f"docker.io/library/u:{abs(hash(user))}", [f"u{user}"], user)
        assert store.get(image_id).uid_and_username == expected  # type: ignore[union-attr]


def test_held_layers_survive_gc(store: ImageStore) -> None:
    staging = store.staging_dir()
    layer = store.commit_layer(staging, "sha256:" + "c" * 64, "sha256:" + "c" * 64, 1)
    store.hold([layer.chain_id])
    assert store.gc() == []
    store.release([layer.chain_id])
    assert store.gc() == [layer.id]


def test_recover_cleans_what_a_crash_left(store: ImageStore, tmp_path: Path) -> None:
    keep = _add_image(store, "docker.io/library/keep:1", ["k"])
    broken = _add_image(store, "docker.io/library/broken:1", ["b1", "b2"])
    staging = store.staging_dir()  # a half-unpacked layer
    Path(staging, "partial").write_text("x")
    os.mkdir(os.path.join(store.layers_dir, "999"))  # renamed but never recorded
    gone = store.layers_of(store.get(broken))[1]  # type: ignore[arg-type]
    os.rename(store.layer_path(gone.id), tmp_path / "lost")  # recorded but missing
    store.recover()
    assert os.listdir(store.tmp_dir) == []
    assert not os.path.exists(os.path.join(store.layers_dir, "999"))
    assert store.get(broken) is None
    assert store.get(keep) is not None
    assert sorted(os.listdir(store.layers_dir)) == [str(l.id) for l in store.layers_of(store.get(keep))]  # type: ignore[arg-type]
