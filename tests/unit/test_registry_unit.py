"""The registry client's pure parts: challenges, tokens, manifests, platforms, endpoints."""

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from runtime.images import manifests, registry
from runtime.images.auth import (AuthCache, Challenge, ChallengeError, Credentials,
                                 parse_token_response, parse_www_authenticate)
from runtime.images.reference import parse
from runtime.images.registry import (Endpoint, NotFoundError, Platform, RegistryClient,
                                     UnsupportedManifest, image_descriptors, parse_manifest,
                                     select_manifest)

D = {c: f"sha256:{c * 64}" for c in "0123456789abcdef"}


# WWW-Authenticate ------------------------------------------------------------

def test_bearer_challenge_with_commas_in_quoted_scope() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/busybox:pull,push"')
    assert parse_www_authenticate(header) == [Challenge("bearer", {
        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull,push"})]


def test_basic_challenge_and_several_challenges() -> None:
    assert parse_www_authenticate('Basic realm="Registry Realm"') == [
        Challenge("basic", {"realm": "Registry Realm"})]
    both = parse_www_authenticate('Basic realm="a b", BEARER Realm=https://t/token , service=s')
    assert both == [Challenge("basic", {"realm": "a b"}),
                    Challenge("bearer", {"realm": "https://t/token", "service": "s"})]


def test_challenge_escapes_and_bare_scheme() -> None:
    assert parse_www_authenticate(r'Bearer realm="a\"b\\c"') == [Challenge("bearer", {"realm": 'a"b\\c'})]
    assert parse_www_authenticate("Bearer") == [Challenge("bearer", {})]
    assert parse_www_authenticate("") == []


def test_unterminated_quote_is_an_error() -> None:
    with pytest.raises(ChallengeError, match="unterminated"):
        parse_www_authenticate('Bearer realm="https://x')


# Credentials and tokens ------------------------------------------------------

def test_credentials_from_fields_or_auth_blob() -> None:
    assert Credentials(username="u", password="p").user_password() == ("u", "p")
    blob = base64.b64encode(b"user:pa:ss").decode()
    assert Credentials(auth=blob).user_password() == ("user", "pa:ss")
    assert Credentials(identity_token="t").user_password() is None
    assert Credentials().empty and not Credentials(registry_token="x").empty


@pytest.mark.parametrize("auth,message", [("%%%", "not base64"),
                                          (base64.b64encode(b"nocolon").decode(), "without ':'")])
def test_bad_auth_blob(auth: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Credentials(auth=auth).user_password()


def test_credentials_repr_hides_secrets() -> None:
    assert "secret" not in repr(Credentials(username="u", password="secret", identity_token="secret"))


def test_token_response() -> None:
    assert parse_token_response(b'{"token": "t", "expires_in": 300}').lifetime == 300
    assert parse_token_response(b'{"access_token": "a"}').value == "a"
    assert parse_token_response(b'{"token": "t"}').lifetime == 60       # the spec's default
    assert parse_token_response(b'{"token": "t", "expires_in": 5}').lifetime == 60  # and minimum
    for bad in (b"nope", b"[]", b'{"expires_in": 3}'):
        with pytest.raises(ValueError, match="token response"):
            parse_token_response(bad)


def test_auth_cache_expires() -> None:
    now = [100.0]
    cache = AuthCache(clock=lambda: now[0])
    cache.put("k", "Bearer t", 60)
    assert cache.get("k") == "Bearer t"
    now[0] += 56     # renewed a little before the token's own expiry
    assert cache.get("k") is None
    cache.put("k", "Bearer u", 60)
    cache.drop("k")
    assert cache.get("k") is None


# Manifests -------------------------------------------------------------------

def _manifest(layer_type: str = "application/vnd.oci.image.layer.v1.tar+gzip",
              config_type: str = "application/vnd.oci.image.config.v1+json", **extra: Any) -> dict[str, Any]:
    return {"schemaVersion": 2, **extra,
            "config": {"mediaType": config_type, "digest": D["1"], "size": 10},
            "layers": [{"mediaType": layer_type, "digest": D["2"], "size": 20}]}


@pytest.mark.parametrize("body,content_type", [
    ({"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": []}, "application/json"),
    ({"schemaVersion": 1, "name": "a"}, manifests.DOCKER_SCHEMA1_SIGNED),
    ({"schemaVersion": 2}, manifests.DOCKER_SCHEMA1),
])
def test_schema1_is_refused_with_advice(body: dict[str, Any], content_type: str) -> None:
    with pytest.raises(UnsupportedManifest) as info:
        parse_manifest(json.dumps(body).encode(), content_type, "x/y:z at registry r")
    assert str(info.value) == ("x/y:z at registry r: Docker schema 1 manifests are not supported; "
                               "push the image again with a current client")


def test_manifest_media_type_from_body_header_or_shape() -> None:
    oci = json.dumps(_manifest()).encode()
    assert parse_manifest(oci, "application/json", "w")[0] == manifests.OCI_MANIFEST
    assert parse_manifest(oci, manifests.DOCKER_MANIFEST, "w")[0] == manifests.DOCKER_MANIFEST
    typed = json.dumps(_manifest(mediaType=manifests.DOCKER_MANIFEST)).encode()
    assert parse_manifest(typed, "text/plain", "w")[0] == manifests.DOCKER_MANIFEST
    index = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert parse_manifest(index, "", "w")[0] == manifests.OCI_INDEX


def test_unknown_or_malformed_manifest() -> None:
    with pytest.raises(UnsupportedManifest, match="'application/vnd.example' is not supported"):
        parse_manifest(b'{"schemaVersion": 2, "mediaType": "application/vnd.example"}', "", "w")
    with pytest.raises(UnsupportedManifest, match="not valid JSON"):
        parse_manifest(b"<html>", "text/html", "w")
    with pytest.raises(UnsupportedManifest, match="not a JSON object"):
        parse_manifest(b"[1]", manifests.OCI_MANIFEST, "w")


def test_image_descriptors() -> None:
    config, layers = image_descriptors(_manifest(), "w")
    assert config.digest == D["1"] and config.size == 10
    assert [(layer.media_type, layer.digest) for layer in layers] == [
        ("application/vnd.oci.image.layer.v1.tar+gzip", D["2"])]
    for layer_type in manifests.LAYER_TYPES:
        image_descriptors(_manifest(layer_type), "w")


@pytest.mark.parametrize("manifest,message", [
    (_manifest("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
     "layer 0 .* unsupported media type 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'"),
    (_manifest(config_type="application/vnd.cncf.helm.config.v1+json"),
     "config media type 'application/vnd.cncf.helm.config.v1\\+json' is not a container image config"),
    ({"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:x", "size": 1}},
     "config descriptor has a bad digest"),
    ({"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D["1"], "size": -1}},
     "bad size"),
    ({"config": None}, "config descriptor is not a JSON object"),
])
def test_bad_descriptors(manifest: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedManifest, match=message):
        image_descriptors(manifest, "w")


# Platform selection ----------------------------------------------------------

def _entry(digest: str, os: str, arch: str, variant: str | None = None, **annotations: str) -> dict[str, Any]:
    plat = {"os": os, "architecture": arch, **({"variant": variant} if variant is not None else {})}
    return {"mediaType": manifests.OCI_MANIFEST, "digest": digest, "size": 100, "platform": plat,
            **({"annotations": annotations} if annotations else {})}


INDEX = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": [
    _entry(D["a"], "unknown", "unknown", **{"vnd.docker.reference.type": "attestation-manifest"}),
    _entry(D["1"], "linux", "amd64"),
    _entry(D["2"], "linux", "arm64"),
    _entry(D["3"], "linux", "arm", "v6"),
    _entry(D["4"], "linux", "arm", "v7"),
    _entry(D["5"], "windows", "amd64"),
    _entry(D["6"], "linux", "amd64", "v3"),
]}


@pytest.mark.parametrize("want,digest", [
    (Platform("linux", "amd64"), D["1"]),
    (Platform("linux", "amd64", "v3"), D["6"]),
    (Platform("linux", "arm64", "v8"), D["2"]),   # v8 matches an entry without variant
    (Platform("linux", "arm64"), D["2"]),
    (Platform("linux", "arm", "v7"), D["4"]),
    (Platform("linux", "arm", "v6"), D["3"]),
    (Platform("windows", "amd64"), D["5"]),
])
def test_select_manifest(want: Platform, digest: str) -> None:
    assert select_manifest(INDEX, want, "w").digest == digest


def test_arm_v7_falls_back_to_v6_and_attestations_never_match() -> None:
    only_v6 = {"manifests": [INDEX["manifests"][0], INDEX["manifests"][3]]}
    assert select_manifest(only_v6, Platform("linux", "arm", "v7"), "w").digest == D["3"]
    with pytest.raises(NotFoundError, match=r"no manifest for platform unknown/unknown"):
        select_manifest(only_v6, Platform("unknown", "unknown"), "w")


def test_no_matching_platform_lists_what_there_is() -> None:
    with pytest.raises(NotFoundError) as info:
        select_manifest(INDEX, Platform("linux", "s390x"), "img at registry r")
    assert str(info.value) == (
        "img at registry r: no manifest for platform linux/s390x (the index has: linux/amd64, "
        "linux/arm64, linux/arm/v6, linux/arm/v7, windows/amd64, linux/amd64/v3)")


def test_host_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    for machine, expected in [("x86_64", Platform("linux", "amd64", "")),
                              ("aarch64", Platform("linux", "arm64", "v8")),
                              ("armv7l", Platform("linux", "arm", "v7"))]:
        monkeypatch.setattr(manifests._platform, "machine", lambda m=machine: m)
        assert Platform.host() == expected
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"


# Endpoints -------------------------------------------------------------------

@dataclass(frozen=True)
class Cfg:
    mirrors: list[str] = field(default_factory=list)
    insecure: bool = False


def _endpoints(registries: dict[str, Cfg], text: str) -> list[Endpoint]:
    return RegistryClient(registries).endpoints(parse(text))


def test_docker_hub_upstream() -> None:
    assert _endpoints({}, "busybox") == [
        Endpoint("https://registry-1.docker.io", "docker.io", mirror=False, insecure=False)]


def test_mirrors_first_in_order_then_upstream() -> None:
    registries = {"registry.k8s.io": Cfg(["http://127.0.0.1:5000/", "https://mirror.example:8443/v2"]),
                  "mirror.example:8443": Cfg(insecure=True)}
    assert _endpoints(registries, "registry.k8s.io/pause:3.10") == [
        Endpoint("http://127.0.0.1:5000", "127.0.0.1:5000", mirror=True, insecure=False),
        Endpoint("https://mirror.example:8443", "mirror.example:8443", mirror=True, insecure=True),
        Endpoint("https://registry.k8s.io", "registry.k8s.io", mirror=False, insecure=False)]


def test_docker_hub_config_under_any_alias() -> None:
    eps = _endpoints({"index.docker.io": Cfg(["https://hub-mirror.example"])}, "busybox")
    assert [e.url for e in eps] == ["https://hub-mirror.example", "https://registry-1.docker.io"]


def test_insecure_upstream_tries_unverified_https_then_http() -> None:
    assert _endpoints({"reg.example:5000": Cfg(insecure=True)}, "reg.example:5000/a") == [
        Endpoint("https://reg.example:5000", "reg.example:5000", mirror=False, insecure=True),
        Endpoint("http://reg.example:5000", "reg.example:5000", mirror=False, insecure=True)]


@pytest.mark.parametrize("domain", ["localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"])
def test_loopback_upstream_falls_back_to_http(domain: str) -> None:
    assert [(e.url, e.insecure) for e in _endpoints({}, f"{domain}/a")] == [
        (f"https://{domain}", False), (f"http://{domain}", False)]


def test_errors_fall_through_mirrors_but_not_upstream() -> None:
    mirror = Endpoint("http://m", "m", True, False)
    upstream = Endpoint("https://u", "u", False, False)
    assert registry._falls_through(mirror, registry.AuthError("x"))
    assert registry._falls_through(upstream, registry.ConnectionFailed("refused"))
    assert not registry._falls_through(upstream, registry.ConnectionFailed("cert", tls_verify=True))
    assert not registry._falls_through(upstream, NotFoundError("x"))
