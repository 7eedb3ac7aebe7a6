"""Registries for tests: docker-registry processes on free loopback ports, and
small OCI images built in memory and pushed through the distribution API."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import datetime
import ipaddress
import tarfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

DOCKER_REGISTRY = shutil.which("docker-registry")
needs_registry = pytest.mark.skipif(DOCKER_REGISTRY is None,
                                    reason="needs docker-registry (Debian package docker-registry)")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Test images -------------------------------------------------------------------


@dataclass
class BuiltImage:
    blobs: dict[str, bytes]
    manifest: bytes
    config_digest: str
    layer_digests: list[str]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def layer_tar(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def make_image(arch: str = "amd64", big: bool = False) -> BuiltImage:
    return build_image([layer_tar({"hello.txt": f"hello from {arch}\n".encode()}),
                        layer_tar({"data.bin": os.urandom(3 << 20 if big else 4096)})], arch)


def build_image(layers: list[bytes], arch: str = "amd64", user: str = "",
                diff_ids: list[str] | None = None) -> BuiltImage:
    """An OCI image of gzip layers; `diff_ids` overrides the true ones (to test verification)."""
    config = json.dumps({
        "architecture": arch, "os": "linux", "config": {"Cmd": ["/hello"], "User": user},
        "rootfs": {"type": "layers",
                   "diff_ids": diff_ids or [sha256(gzip.decompress(layer)) for layer in layers]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)} for layer in layers],
    }).encode()
    blobs = {sha256(b): b for b in [config, *layers]}
    return BuiltImage(blobs, manifest, sha256(config), [sha256(layer) for layer in layers])


def push_blob(client: httpx.Client, base: str, repo: str, data: bytes) -> None:
    started = client.post(f"{base}/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    upload = httpx.URL(base).join(started.headers["location"]).copy_merge_params({"digest": sha256(data)})
    done = client.put(upload, content=data, headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text


def push_manifest(client: httpx.Client, base: str, repo: str, ref: str, body: bytes, media_type: str) -> None:
    put = client.put(f"{base}/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})
    assert put.status_code == 201, put.text


def push_image(client: httpx.Client, base: str, repo: str, tag: str, image: BuiltImage) -> None:
    for data in image.blobs.values():
        push_blob(client, base, repo, data)
    push_manifest(client, base, repo, tag, image.manifest, OCI_MANIFEST)


@dataclass
class Registry:
    host: str
    base: str
    proc: subprocess.Popen[bytes]
    log: Path


def start_registry(root: Path, extra: str = "", scheme: str = "http") -> Registry:
    assert DOCKER_REGISTRY is not None
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root / 'data'}
http:
  addr: 127.0.0.1:{port}
  secret: test-secret
{extra}""")
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    reg = Registry(f"127.0.0.1:{port}", f"{scheme}://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{reg.base}/v2/", verify=False, timeout=1).status_code in (200, 401):
                return reg
        except httpx.TransportError:
            time.sleep(0.02)
    stop_registry(reg)
    raise RuntimeError(f"docker-registry did not come up: {log.read_text()}")


def stop_registry(reg: Registry) -> None:
    reg.proc.terminate()
    try:
        reg.proc.wait(5)
    except subprocess.TimeoutExpired:
        reg.proc.kill()
        reg.proc.wait()




# TLS material and htpasswd ------------------------------------------------------


def self_signed(path: Path, name: str, key: Any) -> Path:
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def write_key(path: Path, key: Any) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def bcrypt_hash(password: str) -> str:
    """bcrypt through libc's crypt(3) (libxcrypt); docker-registry reads only bcrypt htpasswd."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if not hashed or not hashed.startswith("$2"):
        pytest.skip("libc crypt(3) cannot make bcrypt hashes for the htpasswd file")
    return hashed


# The registry of `hack/e2e-env.sh up`, with the conformance test images.
TEST_REGISTRY = "127.0.0.1:5000"


def registry_is_up() -> bool:
    try:
        return httpx.get(f"http://{TEST_REGISTRY}/v2/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
