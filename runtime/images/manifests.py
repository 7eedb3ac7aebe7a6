"""The OCI image model, pure: media types, platforms, descriptors, and the parsing and
platform selection of manifests and indexes (no I/O; runtime/images/registry.py fetches)."""

from __future__ import annotations

import json
import platform as _platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from runtime.images import reference as refs
from runtime.images.registry_errors import NotFoundError, UnsupportedManifest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
# Schema 1 is accepted only so it can be recognised and refused with a clear message.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST,
                             DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1])

CONFIG_TYPES = frozenset({"application/vnd.oci.image.config.v1+json",
                          "application/vnd.docker.container.image.v1+json"})
LAYER_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
})

SCHEMA1_MESSAGE = ("Docker schema 1 manifests are not supported; "
                   "push the image again with a current client")


_GOARCH = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"),
    "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}


def _host_arch() -> tuple[str, str]:
    machine = _platform.machine().lower()
    return _GOARCH.get(machine, (machine, ""))


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = field(default_factory=lambda: _host_arch()[0])
    variant: str = ""

    @classmethod
    def host(cls) -> Platform:
        arch, variant = _host_arch()
        return cls("linux", arch, variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=lambda: _frozen(None), hash=False)
    platform: Mapping[str, Any] | None = field(default=None, hash=False)


def _media_type_of(content_type: str, data: Mapping[str, Any]) -> str:
    if data.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    body_type = data.get("mediaType")
    if isinstance(body_type, str) and body_type:
        return body_type
    header = content_type.split(";")[0].strip().lower()
    if header and header not in ("application/json", "text/plain", "application/octet-stream"):
        return header
    # OCI allows omitting mediaType; the shape tells an index from a manifest.
    if "manifests" in data:
        return OCI_INDEX
    if "config" in data or "layers" in data:
        return OCI_MANIFEST
    return header or "(none)"


def parse_manifest(body: bytes, content_type: str, where: str) -> tuple[str, dict[str, Any]]:
    """The media type and JSON of a manifest or index; refuses schema 1 and unknown types.

    `where` names the image and registry for messages."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise UnsupportedManifest(f"{where}: manifest is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise UnsupportedManifest(f"{where}: manifest is not a JSON object")
    media_type = _media_type_of(content_type, data)
    if media_type in SCHEMA1_TYPES:
        raise UnsupportedManifest(f"{where}: {SCHEMA1_MESSAGE}")
    if media_type not in INDEX_TYPES | MANIFEST_TYPES:
        raise UnsupportedManifest(f"{where}: manifest media type {media_type!r} is not supported "
                                  "(expected an OCI or Docker v2 image manifest or index)")
    return media_type, data


def _descriptor(raw: Any, where: str, role: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise UnsupportedManifest(f"{where}: {role} descriptor is not a JSON object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise UnsupportedManifest(f"{where}: {role} descriptor has no mediaType")
    if not isinstance(digest, str) or (err := refs.validate_digest(digest)) is not None:
        raise UnsupportedManifest(f"{where}: {role} descriptor has a bad digest: "
                                  f"{err if isinstance(digest, str) else repr(digest)}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UnsupportedManifest(f"{where}: {role} descriptor {digest} has a bad size {size!r}")
    urls = raw.get("urls") or []
    annotations = raw.get("annotations") or {}
    plat = raw.get("platform")
    if not (isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
        raise UnsupportedManifest(f"{where}: {role} descriptor {digest} has malformed urls")
    if not (isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values())):
        raise UnsupportedManifest(f"{where}: {role} descriptor {digest} has malformed annotations")
    if plat is not None and not isinstance(plat, dict):
        raise UnsupportedManifest(f"{where}: {role} descriptor {digest} has a malformed platform")
    return Descriptor(media_type, digest, size, tuple(urls), _frozen(annotations),
                      _frozen(plat) if plat is not None else None)


def image_descriptors(data: Mapping[str, Any], where: str) -> tuple[Descriptor, tuple[Descriptor, ...]]:
    """The config and layer descriptors of an image manifest, each media type checked."""
    config = _descriptor(data.get("config"), where, "config")
    if config.media_type not in CONFIG_TYPES:
        raise UnsupportedManifest(f"{where}: config media type {config.media_type!r} is not a "
                                  "container image config (is this an artifact, not an image?)")
    raw_layers = data.get("layers")
    if raw_layers is None:
        raw_layers = []
    if not isinstance(raw_layers, list):
        raise UnsupportedManifest(f"{where}: manifest \"layers\" is not a list")
    layers = tuple(_descriptor(raw, where, f"layer {i}") for i, raw in enumerate(raw_layers))
    for i, layer in enumerate(layers):
        if layer.media_type not in LAYER_TYPES:
            raise UnsupportedManifest(f"{where}: layer {i} ({layer.digest}) has unsupported media "
                                      f"type {layer.media_type!r}")
    return config, layers


def _normalized(arch: str, variant: str) -> tuple[str, str]:
    arch, default_variant = _GOARCH.get(arch, (arch, ""))
    variant = variant or default_variant
    if arch == "arm64" and variant in ("", "8"):
        variant = "v8"
    elif arch == "amd64" and variant == "":
        variant = "v1"
    elif arch == "arm" and variant == "":
        variant = "v7"
    return arch, variant


def _compatible_variants(arch: str, variant: str) -> list[str]:
    """Variants that run on `variant`, best first (arm v7 runs v6 and v5; amd64 v3 runs v2, v1)."""
    if arch in ("arm", "amd64") and variant[1:].isdigit():
        lowest = 5 if arch == "arm" else 1
        return [f"v{n}" for n in range(int(variant[1:]), lowest - 1, -1)]
    return [variant]


def select_manifest(index: Mapping[str, Any], want: Platform, where: str) -> Descriptor:
    """The index entry for `want`, by os, architecture and variant; attestations are skipped."""
    raw_entries = index.get("manifests")
    if not isinstance(raw_entries, list):
        raise UnsupportedManifest(f"{where}: index has no \"manifests\" list")
    arch, variant = _normalized(want.architecture, want.variant)
    ranks = {v: i for i, v in enumerate(_compatible_variants(arch, variant))}
    best: tuple[int, Descriptor] | None = None
    available: list[str] = []
    for i, raw in enumerate(raw_entries):
        entry = _descriptor(raw, where, f"index entry {i}")
        plat = entry.platform or {}
        if (entry.media_type not in MANIFEST_TYPES
                or entry.annotations.get("vnd.docker.reference.type") == "attestation-manifest"
                or plat.get("os") in (None, "unknown")):
            continue
        entry_arch, entry_variant = _normalized(str(plat.get("architecture", "")),
                                                str(plat.get("variant", "")))
        available.append("/".join(str(plat[k]) for k in ("os", "architecture", "variant") if plat.get(k)))
        rank = ranks.get(entry_variant)
        if plat.get("os") == want.os and entry_arch == arch and rank is not None:
            if best is None or rank < best[0]:
                best = (rank, entry)
    if best is None:
        raise NotFoundError(f"{where}: no manifest for platform {want} "
                            f"(the index has: {', '.join(available) or 'no platform manifests'})")
    return best[1]
