"""Every image the conformance suite pulls is in the local registry, as test-images.md says."""

from __future__ import annotations

import json
import subprocess

import pytest

BUSYBOX_LIKE = ["k8s-staging-cri-tools/test-image-tag:test", "k8s-staging-cri-tools/test-image-tag:all",
                "k8s-staging-cri-tools/test-image-latest:latest",
                "k8s-staging-cri-tools/test-image-1:latest", "k8s-staging-cri-tools/test-image-2:latest",
                "k8s-staging-cri-tools/test-image-3:latest",
                "k8s-staging-cri-tools/test-image-tags:1", "k8s-staging-cri-tools/test-image-tags:2",
                "k8s-staging-cri-tools/test-image-tags:3"]
USERS = {
    "k8s-staging-cri-tools/test-image-user-uid:latest": "1002",
    "k8s-staging-cri-tools/test-image-user-username:latest": "www-data",
    "k8s-staging-cri-tools/test-image-user-uid-group:latest": "1003:1004",
    "k8s-staging-cri-tools/test-image-user-username-group:latest": "www-data:1004",
    "k8s-staging-cri-tools/test-image-predefined-group:latest": "1000",
}
OTHERS = ["e2e-test-images/busybox:1.29-2", "e2e-test-images/nginx:1.14-2", "e2e-test-images/httpd:2.4.39-4",
          "e2e-test-images/nonewprivs:1.3", "k8s-staging-cri-tools/hostnet-nginx-amd64:latest",
          "pause:3.9", "pause:3.10"]


def skopeo(registry: str, ref: str, *flags: str) -> dict:
    res = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *flags, f"docker://{registry}/{ref}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"{ref}: {res.stderr}"
    return json.loads(res.stdout)


@pytest.mark.parametrize("ref", BUSYBOX_LIKE + list(USERS) + OTHERS)
def test_image_is_served_for_linux_amd64(registry: str, ref: str) -> None:
    info = skopeo(registry, ref)
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    assert info["Layers"]


@pytest.mark.parametrize("ref, user", USERS.items())
def test_user_images_carry_their_user(registry: str, ref: str, user: str) -> None:
    assert skopeo(registry, ref, "--config")["config"]["User"] == user


def test_tagged_and_numbered_images(registry: str) -> None:
    digests = {ref: skopeo(registry, ref)["Digest"] for ref in BUSYBOX_LIKE}
    tags = {digests[f"k8s-staging-cri-tools/test-image-tags:{n}"] for n in (1, 2, 3)}
    assert len(tags) == 1, "test-image-tags:1,2,3 must be one image"
    numbered = {digests[f"k8s-staging-cri-tools/test-image-{n}:latest"] for n in (1, 2, 3)}
    assert len(numbered) == 3, "test-image-1,2,3 must be three different images"


def test_infra_pause_is_not_the_pause_critest_removes(registry: str) -> None:
    assert skopeo(registry, "pause:3.9")["Digest"] != skopeo(registry, "pause:3.10")["Digest"]
