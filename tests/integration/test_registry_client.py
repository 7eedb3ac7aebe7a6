"""The registry client against real registries (CNCF distribution's docker-registry) and a fake one.

Registries run on free loopback ports in temporary directories: plain HTTP,
TLS with htpasswd Basic auth, and token auth with a token server these tests
run. A small fake registry serves corrupt, truncated, stalling and redirected
blobs that a real registry never would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from runtime.images import reference, registry
from tests.registry_helpers import (OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, bcrypt_hash, self_signed, write_key,
                                    BuiltImage, Registry, free_port, make_image, needs_registry,
                                    push_blob, push_image, push_manifest, sha256, start_registry,
                                    stop_registry)
from runtime.images.registry import (AuthError, ConnectionFailed, Credentials, DigestMismatch,
                                     NotFoundError, Platform, ProgressTimeout, RegistryClient,
                                     RegistryError, ResolvedImage, UnsupportedManifest)

USER, PASSWORD = "alice", "s3cret"
REFRESH_TOKEN = "refresh-123"
AMD64 = Platform("linux", "amd64")


@dataclass(frozen=True)
class Cfg:
    mirrors: list[str] = field(default_factory=list)
    insecure: bool = False


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="crs-reg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# TLS material, htpasswd, JWTs --------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(key: rsa.RSAPrivateKey) -> str:
    """The key id distribution matches a token's `kid` against: base32 of the first 240 bits of
    sha256(DER public key), in 12 groups of 4."""
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(encoded[i:i + 4] for i in range(0, 48, 4))


def make_jwt(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    header = {"typ": "JWT", "alg": "RS256", "kid": libtrust_key_id(key)}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


# Servers ------------------------------------------------------------------------


class ThreadedServer:
    """An http.server in a thread, for the token server and the fake registry."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.owner = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def owner(self) -> Any:
        return self.server.owner  # type: ignore[attr-defined]

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TokenServer(ThreadedServer):
    """Issues distribution JWTs: pull and push for alice, nothing for anonymous clients."""

    def __init__(self, key: rsa.RSAPrivateKey, issuer: str, service: str) -> None:
        self.key, self.issuer, self.service = key, issuer, service
        self.requests: list[tuple[str, dict[str, list[str]], str]] = []
        self.post_status = 200     # 405: no OAuth2 POST support
        super().__init__(TokenHandler)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def issue(self, subject: str, scopes: list[str]) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in ("pull", "push")] if subject else []
            access.append({"type": kind, "name": name, "actions": granted})
        return make_jwt(self.key, {"iss": self.issuer, "sub": subject, "aud": self.service,
                                   "exp": now + 300, "nbf": now - 10, "iat": now,
                                   "jti": uuid.uuid4().hex, "access": access})


class TokenHandler(QuietHandler):
    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        owner: TokenServer = self.owner
        owner.requests.append(("GET", query, self.headers.get("Authorization", "")))
        subject = ""
        if auth := self.headers.get("Authorization"):
            user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
            if user != USER or password not in (PASSWORD, REFRESH_TOKEN):
                self.reply(401, b'{"details": "bad credentials"}', {"Content-Type": "application/json"})
                return
            subject = user
        token = owner.issue(subject, query.get("scope", []))
        self.reply(200, json.dumps({"token": token, "expires_in": 300}).encode(),
                   {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        owner: TokenServer = self.owner
        owner.requests.append(("POST", form, self.headers.get("Authorization", "")))
        if owner.post_status != 200:
            self.reply(owner.post_status)
            return
        if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [REFRESH_TOKEN]:
            self.reply(401, b'{"error": "invalid_grant"}', {"Content-Type": "application/json"})
            return
        token = owner.issue(USER, form.get("scope", [""])[0].split(" "))
        self.reply(200, json.dumps({"access_token": token, "expires_in": 300}).encode(),
                   {"Content-Type": "application/json"})


@pytest.fixture
def registries(tmp: Path) -> Iterator[Callable[..., Registry]]:
    """A factory of docker-registry processes, all stopped at the end of the test."""
    started: list[Registry] = []

    def start(extra: str = "", scheme: str = "http") -> Registry:
        reg = start_registry(tmp / f"reg{len(started)}", extra, scheme)
        started.append(reg)
        return reg
    yield start
    for reg in started:
        stop_registry(reg)


@pytest.fixture
def plain(registries: Callable[..., Registry]) -> Registry:
    return registries()


@pytest.fixture
def tls_basic(registries: Callable[..., Registry], tmp: Path) -> Registry:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(tmp / "tls.crt", "127.0.0.1", key)
    htpasswd = tmp / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
    return registries(f"""  tls:
    certificate: {cert}
    key: {write_key(tmp / 'tls.key', key)}
auth:
  htpasswd:
    realm: test-realm
    path: {htpasswd}
""", scheme="https")


@pytest.fixture
def token_server(tmp: Path) -> Iterator[TokenServer]:
    server = TokenServer(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                         "test-issuer", "test-registry")
    yield server
    server.stop()


@pytest.fixture
def token_registry(registries: Callable[..., Registry], token_server: TokenServer, tmp: Path) -> Registry:
    bundle = self_signed(tmp / "token-signer.crt", "token-signer", token_server.key)
    return registries(f"""auth:
  token:
    realm: {token_server.realm}
    service: {token_server.service}
    issuer: {token_server.issuer}
    rootcertbundle: {bundle}
""")


@pytest.fixture
async def client_factory() -> Any:
    clients: list[RegistryClient] = []

    def make(registries: dict[str, Cfg] | None = None, **kwargs: Any) -> RegistryClient:
        client = RegistryClient(registries or {}, platform=kwargs.pop("platform", AMD64), **kwargs)
        clients.append(client)
        return client
    yield make
    for client in clients:
        await client.aclose()


async def pull_all(client: RegistryClient, image: ResolvedImage, creds: Credentials | None = None
                   ) -> tuple[bytes, list[bytes], list[list[int]]]:
    """The config, every layer, and each layer's chunk sizes."""
    config = await client.fetch_config(image, creds)
    layers: list[bytes] = []
    sizes: list[list[int]] = []
    for desc in image.layers:
        parts: list[bytes] = []
        async with client.blob_stream(image, desc, creds) as chunks:
            async for chunk in chunks:
                parts.append(chunk)
        layers.append(b"".join(parts))
        sizes.append([len(p) for p in parts])
    return config, layers, sizes


def assert_pulled(image: ResolvedImage, expected: BuiltImage, config: bytes, layers: list[bytes]) -> None:
    assert image.manifest == expected.manifest
    assert image.manifest_digest == expected.digest
    assert image.config.digest == expected.config_digest
    assert config == expected.blobs[expected.config_digest]
    assert layers == [expected.blobs[d] for d in expected.layer_digests]


# Plain HTTP registry --------------------------------------------------------------


@needs_registry
async def test_pull_from_plain_http_registry(plain: Registry, client_factory: Any) -> None:
    expected = make_image(big=True)
    with httpx.Client() as push:
        push_image(push, plain.base, "test/plain", "v1", expected)
    client = client_factory()
    image = await client.resolve(reference.parse(f"{plain.host}/test/plain:v1"))
    # A loopback registry: https fails to handshake, so its plain-http twin answers.
    assert image.endpoint.url == plain.base and not image.endpoint.mirror
    assert image.index_digest is None
    assert image.repo_digest == f"{plain.host}/test/plain@{expected.digest}"
    config, layers, sizes = await pull_all(client, image)
    assert_pulled(image, expected, config, layers)
    big = sizes[1]     # 3 MiB: large chunks, only the last one short
    assert registry.BLOB_CHUNK_SIZE >= 256 << 10
    assert len(big) == 4 and set(big[:-1]) == {registry.BLOB_CHUNK_SIZE}

    by_digest = await client.resolve(reference.parse(f"{plain.host}/test/plain@{expected.digest}"))
    assert by_digest.manifest_digest == expected.digest and by_digest.layers == image.layers


@needs_registry
async def test_insecure_registry_and_parallel_blobs(plain: Registry, client_factory: Any) -> None:
    expected = make_image(big=True)
    with httpx.Client() as push:
        push_image(push, plain.base, "test/par", "v1", expected)
    client = client_factory({plain.host: Cfg(insecure=True)})
    image = await client.resolve(reference.parse(f"{plain.host}/test/par:v1"))
    assert image.endpoint == registry.Endpoint(plain.base, plain.host, mirror=False, insecure=True)

    async def fetch(desc: registry.Descriptor) -> bytes:
        async with client.blob_stream(image, desc) as chunks:
            return b"".join([chunk async for chunk in chunks])
    layers = await asyncio.gather(*(fetch(desc) for desc in image.layers * 4))
    assert layers == [expected.blobs[d] for d in expected.layer_digests] * 4


@needs_registry
async def test_unknown_tag_and_repository(plain: Registry, client_factory: Any) -> None:
    with httpx.Client() as push:
        push_image(push, plain.base, "test/known", "v1", make_image())
    client = client_factory()
    with pytest.raises(NotFoundError) as info:
        await client.resolve(reference.parse(f"{plain.host}/test/known:nope"))
    message = str(info.value)
    assert f"image {plain.host}/test/known:nope not found" in message
    assert f"registry {plain.host} answered HTTP 404" in message
    assert "MANIFEST_UNKNOWN" in message and "/v2/test/known/manifests/nope" in message
    with pytest.raises(NotFoundError, match="/v2/test/never/manifests/v1"):
        await client.resolve(reference.parse(f"{plain.host}/test/never:v1"))


@needs_registry
async def test_index_selects_the_platform(plain: Registry, client_factory: Any) -> None:
    amd64, arm64 = make_image("amd64"), make_image("arm64")
    attestation_config = b"{}"
    attestation_layer = b'{"predicateType": "x"}'
    attestation = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(attestation_config), "size": 2},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": sha256(attestation_layer),
                    "size": len(attestation_layer)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256(attestation), "size": len(attestation),
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                         "vnd.docker.reference.digest": amd64.digest}},
        {"mediaType": OCI_MANIFEST, "digest": arm64.digest, "size": len(arm64.manifest),
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": OCI_MANIFEST, "digest": amd64.digest, "size": len(amd64.manifest),
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}).encode()
    with httpx.Client() as push:
        for image in (amd64, arm64):
            push_image(push, plain.base, "test/multi", image.digest, image)
        push_blob(push, plain.base, "test/multi", attestation_config)
        push_blob(push, plain.base, "test/multi", attestation_layer)
        push_manifest(push, plain.base, "test/multi", sha256(attestation), attestation, OCI_MANIFEST)
        push_manifest(push, plain.base, "test/multi", "v1", index, OCI_INDEX)
    ref = reference.parse(f"{plain.host}/test/multi:v1")

    image = await client_factory().resolve(ref)
    assert (image.index_digest, image.manifest_digest) == (sha256(index), amd64.digest)
    assert image.repo_digest == f"{plain.host}/test/multi@{sha256(index)}"
    config, layers, _ = await pull_all(client_factory(), image)
    assert_pulled(image, amd64, config, layers)

    arm = await client_factory(platform=Platform("linux", "arm64", "v8")).resolve(ref)
    assert arm.manifest_digest == arm64.digest
    with pytest.raises(NotFoundError, match="no manifest for platform linux/s390x"):
        await client_factory(platform=Platform("linux", "s390x")).resolve(ref)


# Mirrors --------------------------------------------------------------------------


@needs_registry
async def test_mirror_down_falls_back_to_upstream(plain: Registry, client_factory: Any) -> None:
    expected = make_image()
    with httpx.Client() as push:
        push_image(push, plain.base, "test/m", "v1", expected)
    down = f"http://127.0.0.1:{free_port()}"
    client = client_factory({plain.host: Cfg(mirrors=[down])})
    image = await client.resolve(reference.parse(f"{plain.host}/test/m:v1"))
    assert image.endpoint.url == plain.base and not image.endpoint.mirror
    config, layers, _ = await pull_all(client, image)
    assert_pulled(image, expected, config, layers)


@needs_registry
async def test_mirror_with_the_image_is_used_first(registries: Callable[..., Registry],
                                                   client_factory: Any) -> None:
    upstream, empty_mirror, mirror = registries(), registries(), registries()
    expected = make_image()
    with httpx.Client() as push:
        push_image(push, upstream.base, "test/m", "v1", expected)
        push_image(push, mirror.base, "test/m", "v1", expected)
    client = client_factory({upstream.host: Cfg(mirrors=[empty_mirror.base, mirror.base])})
    image = await client.resolve(reference.parse(f"{upstream.host}/test/m:v1"))
    # The first mirror answers 404 and is skipped; the second has it.
    assert image.endpoint.mirror and image.endpoint.url == mirror.base
    stop_registry(upstream)     # blobs come from the mirror that resolved the image
    config, layers, _ = await pull_all(client, image)
    assert_pulled(image, expected, config, layers)


@needs_registry
async def test_when_everything_fails_the_upstream_answer_wins(plain: Registry, client_factory: Any) -> None:
    down_port = free_port()
    client = client_factory({plain.host: Cfg(mirrors=[f"http://127.0.0.1:{down_port}"])})
    with pytest.raises(NotFoundError) as info:
        await client.resolve(reference.parse(f"{plain.host}/test/absent:v1"))
    message = str(info.value)
    assert message.startswith(f"image {plain.host}/test/absent:v1 not found: registry {plain.host} "
                              "answered HTTP 404")
    assert (f"also tried: mirror 127.0.0.1:{down_port}: GET /v2/test/absent/manifests/v1: "
            "cannot connect: All connection attempts failed (Connection refused)") in message


# TLS and Basic auth -----------------------------------------------------------------


@needs_registry
async def test_basic_auth_over_tls(tls_basic: Registry, client_factory: Any) -> None:
    expected = make_image()
    with httpx.Client(auth=(USER, PASSWORD), verify=False) as push:
        push_image(push, tls_basic.base, "test/private", "v1", expected)
    client = client_factory({tls_basic.host: Cfg(insecure=True)})
    ref = reference.parse(f"{tls_basic.host}/test/private:v1")
    for creds in (Credentials(username=USER, password=PASSWORD),
                  Credentials(auth=base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())):
        image = await client.resolve(ref, creds)
        assert image.endpoint.url == tls_basic.base and image.endpoint.insecure
        config, layers, _ = await pull_all(client, image, creds)
        assert_pulled(image, expected, config, layers)

    with pytest.raises(AuthError) as info:
        await client.resolve(ref, Credentials(username=USER, password="wrong"))
    assert str(info.value).startswith(f"registry {tls_basic.host} refused the credentials: HTTP 401")
    assert info.value.status == 401
    with pytest.raises(AuthError) as info:
        await client.resolve(ref)
    assert str(info.value).startswith(f"registry {tls_basic.host} requires authentication (Basic) "
                                      "and no credentials were given: HTTP 401")


@needs_registry
async def test_tls_verification_failure_is_explained(tls_basic: Registry, client_factory: Any) -> None:
    with pytest.raises(ConnectionFailed) as info:
        await client_factory().resolve(reference.parse(f"{tls_basic.host}/test/private:v1"),
                                       Credentials(username=USER, password=PASSWORD))
    message = str(info.value)
    assert message.startswith(f"registry {tls_basic.host}: GET /v2/test/private/manifests/v1: "
                              "TLS certificate verification failed")
    assert "set insecure = true" in message and info.value.tls_verify


# Token auth ----------------------------------------------------------------------------


def push_with_token(server: TokenServer, reg: Registry, repo: str, image: BuiltImage) -> None:
    token = server.issue(USER, [f"repository:{repo}:pull,push"])
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as push:
        push_image(push, reg.base, repo, "v1", image)
    server.requests.clear()


@needs_registry
async def test_token_auth_with_password(token_registry: Registry, token_server: TokenServer,
                                        client_factory: Any) -> None:
    expected = make_image()
    push_with_token(token_server, token_registry, "test/tok", expected)
    client = client_factory()
    creds = Credentials(username=USER, password=PASSWORD)
    ref = reference.parse(f"{token_registry.host}/test/tok:v1")
    image = await client.resolve(ref, creds)
    config, layers, _ = await pull_all(client, image, creds)
    assert_pulled(image, expected, config, layers)
    await client.resolve(ref, creds)
    # One token for everything: cached per host, scope and credentials.
    assert len(token_server.requests) == 1
    method, query, authorization = token_server.requests[0]
    assert method == "GET" and query["service"] == ["test-registry"]
    assert query["scope"] == ["repository:test/tok:pull"] and authorization.startswith("Basic ")

    with pytest.raises(AuthError) as info:
        await client.resolve(ref, Credentials(username=USER, password="wrong"))
    message = str(info.value)
    assert message.startswith(f"registry {token_registry.host} refused the credentials: token server "
                              f"{token_server.realm} answered HTTP 401")
    # No credentials: the token server grants an anonymous token without access, the registry refuses it.
    with pytest.raises(AuthError) as info:
        await client.resolve(ref)
    assert str(info.value).startswith(f"registry {token_registry.host} requires authentication and "
                                      "no credentials were given: HTTP 401")


@needs_registry
async def test_token_auth_with_identity_token(token_registry: Registry, token_server: TokenServer,
                                              client_factory: Any) -> None:
    expected = make_image()
    push_with_token(token_server, token_registry, "test/oauth", expected)
    ref = reference.parse(f"{token_registry.host}/test/oauth:v1")
    creds = Credentials(username=USER, identity_token=REFRESH_TOKEN)
    image = await client_factory().resolve(ref, creds)
    assert image.manifest_digest == expected.digest
    method, form, _ = token_server.requests[0]
    assert method == "POST" and form["grant_type"] == ["refresh_token"]
    assert form["client_id"] == ["criservice"] and form["scope"] == ["repository:test/oauth:pull"]

    # A token server without OAuth2 POST: GET with the identity token as the password.
    token_server.post_status = 405
    token_server.requests.clear()
    image = await client_factory().resolve(ref, creds)
    assert image.manifest_digest == expected.digest
    assert [r[0] for r in token_server.requests] == ["POST", "GET"]


@needs_registry
async def test_registry_token_is_used_as_is(token_registry: Registry, token_server: TokenServer,
                                           client_factory: Any) -> None:
    expected = make_image()
    push_with_token(token_server, token_registry, "test/rt", expected)
    token = token_server.issue(USER, ["repository:test/rt:pull"])
    token_server.requests.clear()
    client = client_factory()
    image = await client.resolve(reference.parse(f"{token_registry.host}/test/rt:v1"),
                                 Credentials(registry_token=token))
    config, layers, _ = await pull_all(client, image, Credentials(registry_token=token))
    assert_pulled(image, expected, config, layers)
    assert token_server.requests == []


# A fake registry for what real ones don't do ---------------------------------------------


class FakeRegistry(ThreadedServer):
    """Serves one image at /v2/fake/img; blob behaviours are set per digest."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[bytes, str, dict[str, str]]] = {}
        self.blobs: dict[str, tuple[str, bytes]] = {}    # digest -> (behaviour, bytes)
        self.storage_auth: list[str | None] = []
        self.release = threading.Event()
        super().__init__(FakeHandler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.release.set()
        super().stop()


class FakeHandler(QuietHandler):
    def do_GET(self) -> None:
        owner: FakeRegistry = self.owner
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/storage/"):
            owner.storage_auth.append(self.headers.get("Authorization"))
            self.reply(200, owner.blobs[path.removeprefix("/storage/")][1])
            return
        if self.headers.get("Authorization") != BASIC:
            self.reply(401, b'{"errors": [{"code": "UNAUTHORIZED", "message": "who are you"}]}',
                       {"WWW-Authenticate": 'Basic realm="fake"', "Content-Type": "application/json"})
            return
        if path == "/v2/":
            self.reply(200, b"{}")
        elif path.startswith("/v2/fake/img/manifests/"):
            body, content_type, headers = owner.manifests[path.rsplit("/", 1)[1]]
            self.reply(200, body, {"Content-Type": content_type, **headers})
        elif path.startswith("/v2/fake/img/blobs/"):
            self.blob(owner, path.rsplit("/", 1)[1])
        else:
            self.reply(404)

    def blob(self, owner: FakeRegistry, digest: str) -> None:
        behaviour, data = owner.blobs[digest]
        if behaviour == "redirect":
            # Another host name for the same server: the client must not send it our credentials.
            self.reply(307, headers={"Location": f"http://localhost:{owner.port}/storage/{digest}?sig=x"})
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if behaviour == "corrupt":
            self.wfile.write(bytes([data[0] ^ 0xFF]) + data[1:])
        elif behaviour == "truncate":
            self.wfile.write(data[:len(data) // 2])
            self.close_connection = True
        elif behaviour == "stall":
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            owner.release.wait(10)
            self.close_connection = True
        else:
            self.wfile.write(data)


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    yield server
    server.stop()


def serve_image(fake: FakeRegistry, image: BuiltImage, layer_behaviour: str = "ok") -> None:
    fake.manifests["v1"] = (image.manifest, OCI_MANIFEST, {})
    fake.manifests[image.digest] = (image.manifest, OCI_MANIFEST, {})
    for digest, data in image.blobs.items():
        fake.blobs[digest] = ("ok" if digest == image.config_digest else layer_behaviour, data)


CREDS = Credentials(username=USER, password=PASSWORD)
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


async def consume(client: RegistryClient, image: ResolvedImage, desc: registry.Descriptor) -> list[bytes]:
    seen: list[bytes] = []
    async with client.blob_stream(image, desc, CREDS) as chunks:
        async for chunk in chunks:
            seen.append(chunk)
    return seen


@pytest.mark.parametrize("behaviour,error,message", [
    ("corrupt", DigestMismatch, "content has digest sha256:"),
    ("truncate", RegistryError, "truncated blob: the connection ended after"),
])
async def test_bad_blobs_never_end_cleanly(fake: FakeRegistry, client_factory: Any, behaviour: str,
                                           error: type[Exception], message: str) -> None:
    expected = make_image(big=True)
    serve_image(fake, expected, behaviour)
    client = client_factory()
    image = await client.resolve(reference.parse(f"{fake.host}/fake/img:v1"), CREDS)
    assert await client.fetch_config(image, CREDS) == expected.blobs[expected.config_digest]
    with pytest.raises(error, match=message) as info:
        await consume(client, image, image.layers[1])
    assert f"registry {fake.host}: blob {image.layers[1].digest}" in str(info.value)


async def test_stalled_blob_times_out(fake: FakeRegistry, client_factory: Any) -> None:
    expected = make_image(big=True)
    serve_image(fake, expected, "stall")
    client = client_factory(progress_timeout=0.5)
    image = await client.resolve(reference.parse(f"{fake.host}/fake/img:v1"), CREDS)
    started = time.monotonic()
    size = image.layers[1].size
    # The bytes that arrived (the fake sends half), not the whole chunks the client passed on so far.
    with pytest.raises(ProgressTimeout, match=f"no data for 0.5s after {size // 2} of {size} bytes"):
        await consume(client, image, image.layers[1])
    assert time.monotonic() - started < 5


async def test_redirected_blob_loses_the_credentials(fake: FakeRegistry, client_factory: Any) -> None:
    expected = make_image()
    serve_image(fake, expected, "redirect")
    client = client_factory()
    image = await client.resolve(reference.parse(f"{fake.host}/fake/img:v1"), CREDS)
    config, layers, _ = await pull_all(client, image, CREDS)
    assert_pulled(image, expected, config, layers)
    assert fake.storage_auth == [None, None]


async def test_manifest_digests_are_checked(fake: FakeRegistry, client_factory: Any) -> None:
    expected, other = make_image(), make_image()
    serve_image(fake, expected)
    fake.manifests[other.digest] = (expected.manifest, OCI_MANIFEST, {})   # the wrong body
    fake.manifests["lying"] = (expected.manifest, OCI_MANIFEST, {"Docker-Content-Digest": other.digest})
    client = client_factory()
    with pytest.raises(DigestMismatch, match=f"manifest {other.digest} has digest {expected.digest}"):
        await client.resolve(reference.parse(f"{fake.host}/fake/img@{other.digest}"), CREDS)
    with pytest.raises(DigestMismatch, match=f"registry says Docker-Content-Digest {other.digest}"):
        await client.resolve(reference.parse(f"{fake.host}/fake/img:lying"), CREDS)
    image = await client.resolve(reference.parse(f"{fake.host}/fake/img@{expected.digest}"), CREDS)
    assert image.manifest_digest == expected.digest


async def test_schema1_is_refused(fake: FakeRegistry, client_factory: Any) -> None:
    fake.manifests["old"] = (json.dumps({"schemaVersion": 1, "name": "fake/img", "tag": "old",
                                         "fsLayers": [], "history": []}).encode(),
                             "application/vnd.docker.distribution.manifest.v1+prettyjws", {})
    with pytest.raises(UnsupportedManifest) as info:
        await client_factory().resolve(reference.parse(f"{fake.host}/fake/img:old"), CREDS)
    assert str(info.value).endswith("Docker schema 1 manifests are not supported; "
                                    "push the image again with a current client")
    assert f"registry {fake.host}" in str(info.value)
