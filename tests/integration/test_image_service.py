"""ImageService through the daemon, against docker-registry processes the tests start."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import gzip
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest

from api import api_pb2 as pb, api_pb2_grpc
from tests.conftest import write_config
from tests.daemon import DaemonProcess
from tests.registry_helpers import (Registry, build_image, free_port, layer_tar, make_image, needs_registry,
                                    push_image, sha256, start_registry, stop_registry)

pytestmark = needs_registry


@pytest.fixture
def reg(short_tmp: Path) -> Iterator[Registry]:
    r = start_registry(short_tmp / "registry")
    yield r
    stop_registry(r)


@pytest.fixture
def daemon(short_tmp: Path, reg: Registry) -> Iterator[DaemonProcess]:
    port = free_port()
    extra = f"""
[metrics]
address = "127.0.0.1:{port}"
[image.registries."mirrored.example"]
mirrors = ["{reg.base}"]
[image.registries."{reg.host}"]
insecure = true
"""
    d = DaemonProcess(write_config(short_tmp, extra)).start()
    d.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    yield d
    d.kill()


def images(d: DaemonProcess) -> api_pb2_grpc.ImageServiceStub:
    return api_pb2_grpc.ImageServiceStub(grpc.insecure_channel("unix:" + d.socket))


def push(reg: Registry, repo: str, tag: str, image: object) -> None:
    with httpx.Client() as c:
        push_image(c, reg.base, repo, tag, image)  # type: ignore[arg-type]


def pull(d: DaemonProcess, ref: str, timeout: float = 60) -> str:
    return images(d).PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=timeout).image_ref


def status(d: DaemonProcess, ref: str) -> pb.Image | None:
    r = images(d).ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)))
    return r.image if r.HasField("image") else None


def store_dirs(short_tmp: Path) -> tuple[list[str], list[str]]:
    root = short_tmp / "state" / "images"
    return sorted(os.listdir(root / "layers")), sorted(os.listdir(root / "tmp"))


def test_pull_through_a_mirror_keeps_the_asked_name(daemon: DaemonProcess, reg: Registry) -> None:
    image = make_image()
    push(reg, "team/app", "v1", image)
    image_id = pull(daemon, "mirrored.example/team/app:v1")
    assert image_id == image.config_digest
    got = status(daemon, "mirrored.example/team/app:v1")
    assert got is not None
    assert list(got.repo_tags) == ["mirrored.example/team/app:v1"]
    assert list(got.repo_digests) == [f"mirrored.example/team/app@{image.digest}"]
    assert got.size == sum(len(b) for b in image.blobs.values())
    for ref in (image_id, image_id[7:], image_id[7:19], f"mirrored.example/team/app@{image.digest}"):
        assert status(daemon, ref).id == image_id, ref  # type: ignore[union-attr]


def test_list_filter_remove_and_shared_layers(daemon: DaemonProcess, reg: Registry, short_tmp: Path) -> None:
    base = layer_tar({"etc/os-release": b"ID=test\n"})
    a = build_image([base, layer_tar({"a": b"a"})], user="1002")
    b = build_image([base, layer_tar({"b": b"b"})], user="www-data:1004")
    push(reg, "x/a", "1", a)
    push(reg, "x/b", "1", b)
    pull(daemon, f"{reg.host}/x/a:1")
    pull(daemon, f"{reg.host}/x/b:1")
    assert len(store_dirs(short_tmp)[0]) == 3  # the base layer is stored once
    listed = images(daemon).ListImages(pb.ListImagesRequest()).images
    assert {i.id for i in listed} == {a.config_digest, b.config_digest}
    only_a = images(daemon).ListImages(pb.ListImagesRequest(
        filter=pb.ImageFilter(image=pb.ImageSpec(image=f"{reg.host}/x/a:1")))).images
    assert [i.id for i in only_a] == [a.config_digest]
    assert only_a[0].uid.value == 1002 and only_a[0].username == ""
    got_b = status(daemon, f"{reg.host}/x/b:1")
    assert got_b is not None and got_b.username == "www-data" and not got_b.HasField("uid")
    images(daemon).RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=f"{reg.host}/x/a:1")))
    images(daemon).RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=f"{reg.host}/x/a:1")))  # idempotent
    assert status(daemon, a.config_digest) is None
    assert len(store_dirs(short_tmp)[0]) == 2  # b still holds the base layer
    images(daemon).RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=b.config_digest)))
    assert store_dirs(short_tmp) == ([], [])


def test_bad_requests_get_precise_codes(daemon: DaemonProcess, reg: Registry) -> None:
    cases = [
        (pb.PullImageRequest(image=pb.ImageSpec(image="")), grpc.StatusCode.INVALID_ARGUMENT, "image.image is empty"),
        (pb.PullImageRequest(image=pb.ImageSpec(image="Bad/Name:x")), grpc.StatusCode.INVALID_ARGUMENT, "lowercase"),
        (pb.PullImageRequest(image=pb.ImageSpec(image=f"{reg.host}/no/such:tag")), grpc.StatusCode.NOT_FOUND,
         "no/such"),
        (pb.PullImageRequest(image=pb.ImageSpec(image="busybox", runtime_handler="kata")),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown runtime handler 'kata'"),
    ]
    for request, code, text in cases:
        with pytest.raises(grpc.RpcError) as e:
            images(daemon).PullImage(request, timeout=30)
        assert e.value.code() == code, e.value.details()
        assert text in e.value.details()
    assert status(daemon, "never/pulled:1") is None


def test_wrong_diff_id_stores_nothing(daemon: DaemonProcess, reg: Registry, short_tmp: Path) -> None:
    layer = layer_tar({"f": b"data"})
    push(reg, "bad/diffid", "1", build_image([layer], diff_ids=[sha256(b"something else")]))
    with pytest.raises(grpc.RpcError) as e:
        pull(daemon, f"{reg.host}/bad/diffid:1")
    assert "uncompressed content has digest" in e.value.details()
    assert store_dirs(short_tmp) == ([], [])
    assert not images(daemon).ListImages(pb.ListImagesRequest()).images


def _evil_layer(target: Path) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, str(target.parent)
        tar.addfile(link)
        data = b"owned"
        f = tarfile.TarInfo(f"escape/{target.name}")
        f.size = len(data)
        tar.addfile(f, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


def test_a_layer_that_escapes_is_refused_and_the_host_untouched(daemon: DaemonProcess, reg: Registry,
                                                               short_tmp: Path) -> None:
    target = short_tmp / "outside" / "victim"
    target.parent.mkdir()
    push(reg, "evil/escape", "1", build_image([_evil_layer(target)]))
    with pytest.raises(grpc.RpcError) as e:
        pull(daemon, f"{reg.host}/evil/escape:1")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "escape" in e.value.details()
    assert not target.exists()
    assert store_dirs(short_tmp) == ([], [])


def test_concurrent_pulls_share_one(daemon: DaemonProcess, reg: Registry) -> None:
    push(reg, "shared/img", "1", make_image(big=True))
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: pull(daemon, f"{reg.host}/shared/img:1"), range(4)))
    assert len(set(ids)) == 1
    metrics = urllib.request.urlopen(daemon.metrics_url).read().decode()  # type: ignore[attr-defined]
    assert 'criservice_image_pulls_total{result="success"} 1.0' in metrics


def test_kill_during_a_pull_leaves_nothing_and_the_next_pull_works(
        daemon: DaemonProcess, reg: Registry, short_tmp: Path) -> None:
    big = build_image([layer_tar({f"blob{i}": os.urandom(16 << 20)}) for i in range(3)])
    push(reg, "big/img", "1", big)
    tmp = short_tmp / "state" / "images" / "tmp"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(pull, daemon, f"{reg.host}/big/img:1")
        deadline = time.monotonic() + 20
        while not any(tmp.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert any(tmp.iterdir()), "the pull never started unpacking"
        daemon.stop(signal.SIGKILL)
        with pytest.raises(grpc.RpcError):
            pending.result()
    daemon.start()
    assert store_dirs(short_tmp)[1] == []  # leftovers cleaned at start
    assert status(daemon, f"{reg.host}/big/img:1") is None
    assert pull(daemon, f"{reg.host}/big/img:1") == big.config_digest
    layers = store_dirs(short_tmp)[0]
    assert len(layers) == 3
    rootfs_files = {f for layer in layers for f in os.listdir(short_tmp / "state/images/layers" / layer)}
    assert rootfs_files == {"blob0", "blob1", "blob2"}


def test_pull_with_basic_auth_over_tls(short_tmp: Path) -> None:
    """AuthConfig from the request reaches a registry that wants Basic auth over (self-signed) TLS."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.registry_helpers import bcrypt_hash, self_signed, write_key
    tls = short_tmp / "tls"
    tls.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    htpasswd = tls / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt_hash('s3cret')}\n")
    reg = start_registry(tls / "registry", f"""  tls:
    certificate: {self_signed(tls / 'tls.crt', '127.0.0.1', key)}
    key: {write_key(tls / 'tls.key', key)}
auth:
  htpasswd:
    realm: test
    path: {htpasswd}
""", scheme="https")
    d = DaemonProcess(write_config(short_tmp, f'[image.registries."{reg.host}"]\ninsecure = true\n'))
    try:
        image = make_image()
        with httpx.Client(verify=False, auth=("alice", "s3cret")) as c:
            push_image(c, reg.base, "private/app", "1", image)
        d.start()
        ref = f"{reg.host}/private/app:1"
        with pytest.raises(grpc.RpcError) as e:
            pull(d, ref)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and reg.host in e.value.details()
        bad = pb.PullImageRequest(image=pb.ImageSpec(image=ref), auth=pb.AuthConfig(username="alice", password="no"))
        with pytest.raises(grpc.RpcError) as e:
            images(d).PullImage(bad, timeout=30)
        assert "401" in e.value.details() and reg.host in e.value.details()
        good = pb.PullImageRequest(image=pb.ImageSpec(image=ref),
                                   auth=pb.AuthConfig(username="alice", password="s3cret"))
        assert images(d).PullImage(good, timeout=30).image_ref == image.config_digest
    finally:
        d.kill()
        stop_registry(reg)
