"""crictl's image commands against the e2e daemon, through the mirrors and directly."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import crictl

MIRRORED = "registry.k8s.io/e2e-test-images/nginx:1.14-2"


@pytest.fixture
def clean(endpoint: str, registry: str) -> list[str]:
    refs = [MIRRORED, f"{registry}/k8s-staging-cri-tools/test-image-user-uid:latest"]
    yield refs
    for ref in refs:
        crictl(endpoint, "rmi", ref)


def test_pull_list_inspect_remove(endpoint: str, clean: list[str]) -> None:
    mirrored, direct = clean
    for ref in clean:
        res = crictl(endpoint, "pull", ref)
        assert res.returncode == 0, res.stderr
        assert "Image is up to date for sha256:" in res.stdout

    listed = json.loads(crictl(endpoint, "images", "-o", "json").stdout)["images"]
    tags = {t for image in listed for t in image["repoTags"]}
    assert {mirrored, direct} <= tags  # the names asked for, not the mirror's

    inspected = json.loads(crictl(endpoint, "inspecti", direct).stdout)
    assert inspected["status"]["uid"]["value"] == "1002"
    assert inspected["info"]["imageSpec"]["config"]["User"] == "1002"
    image_id = inspected["status"]["id"]
    assert crictl(endpoint, "inspecti", image_id[7:19]).returncode == 0  # a short id

    quiet = crictl(endpoint, "images", "-q").stdout.split()
    assert image_id in quiet

    assert crictl(endpoint, "rmi", mirrored).returncode == 0
    assert mirrored not in crictl(endpoint, "images").stdout.replace("   ", ":")
    gone = crictl(endpoint, "inspecti", mirrored)
    assert gone.returncode != 0 and "no such image" in gone.stderr


def test_pull_of_an_unknown_image_fails_naming_it(endpoint: str) -> None:
    res = crictl(endpoint, "pull", "registry.k8s.io/e2e-test-images/no-such-image:1")
    assert res.returncode != 0
    assert "no-such-image" in res.stderr


def test_imagefsinfo_counts_pulled_layers(endpoint: str, clean: list[str]) -> None:
    assert crictl(endpoint, "pull", clean[0]).returncode == 0
    status = json.loads(crictl(endpoint, "imagefsinfo").stdout)["status"]
    image_fs = status["imageFilesystems"][0]
    assert int(image_fs["usedBytes"]["value"]) > 1_000_000, status
    assert int(image_fs["inodesUsed"]["value"]) > 20  # busybox applets are hard links: one inode
