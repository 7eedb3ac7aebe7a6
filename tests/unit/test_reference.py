import pytest

from runtime.images import reference
from runtime.images.reference import InvalidReference, Reference

D = "sha256:" + "0123456789abcdef" * 4
D512 = "sha512:" + "0123456789abcdef" * 8

VALID = [
    # text, domain, path, tag, digest
    ("busybox", "docker.io", "library/busybox", "latest", None),
    ("busybox:1.29", "docker.io", "library/busybox", "1.29", None),
    ("library/busybox", "docker.io", "library/busybox", "latest", None),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", None),
    ("index.docker.io/library/busybox", "docker.io", "library/busybox", "latest", None),
    ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("user/img", "docker.io", "user/img", "latest", None),
    ("registry.k8s.io/e2e-test-images/busybox:1.29-2", "registry.k8s.io", "e2e-test-images/busybox",
     "1.29-2", None),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io", "pause", "3.10", None),
    ("localhost/x", "localhost", "x", "latest", None),
    ("localhost:5000/x", "localhost:5000", "x", "latest", None),
    ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000", "a/b", "c", None),
    ("[::1]:5000/a", "[::1]:5000", "a", "latest", None),
    ("Example.COM/a", "Example.COM", "a", "latest", None),    # domains may have uppercase
    ("a.b/c__d/e-f---g/h.i_j", "a.b", "c__d/e-f---g/h.i_j", "latest", None),
    ("localhost", "docker.io", "library/localhost", "latest", None),
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),   # a tag, as in distribution
    ("x:_T.a-g", "docker.io", "library/x", "_T.a-g", None),
    (f"busybox@{D}", "docker.io", "library/busybox", None, D),
    (f"busybox:1.29@{D}", "docker.io", "library/busybox", "1.29", D),
    (f"127.0.0.1:5000/a@{D}", "127.0.0.1:5000", "a", None, D),
    (f"quay.io/a/b@{D512}", "quay.io", "a/b", None, D512),
]


@pytest.mark.parametrize("text,domain,path,tag,digest", VALID)
def test_valid(text: str, domain: str, path: str, tag: str | None, digest: str | None) -> None:
    assert reference.parse(text) == Reference(domain, path, tag, digest)


def test_rendering() -> None:
    plain = reference.parse("busybox")
    assert plain.name == "docker.io/library/busybox"
    assert plain.repo_tag == "docker.io/library/busybox:latest"
    assert str(plain) == "docker.io/library/busybox:latest"
    assert plain.with_digest(D) == f"docker.io/library/busybox@{D}"
    by_digest = reference.parse(f"busybox@{D}")
    assert by_digest.repo_tag is None
    assert str(by_digest) == f"docker.io/library/busybox@{D}"
    assert str(reference.parse(f"busybox:1@{D}")) == f"docker.io/library/busybox:1@{D}"


@pytest.mark.parametrize("text", [str(reference.parse(t[0])) for t in VALID])
def test_canonical_form_parses_to_itself(text: str) -> None:
    assert str(reference.parse(text)) == text


INVALID = [
    ("", "reference is empty"),
    ("Busybox", "repository name must be lowercase"),
    ("library/Busybox", "repository name must be lowercase"),
    ("registry.k8s.io/Pause:3.10", "repository name must be lowercase"),
    ("busybox:-x", 'tag "-x" is invalid'),
    ("busybox:.x", 'tag ".x" is invalid'),
    ("busybox:" + "a" * 129, "is invalid"),
    ("busybox:t\u00e4g", "is invalid"),
    ("busybox@sha256:abc", "sha256 digest must be 64 lowercase hex characters"),
    ("busybox@sha256:" + "A" * 64, "sha256 digest must be 64 lowercase hex characters"),
    ("busybox@md5:" + "a" * 32, 'digest algorithm "md5" is not supported'),
    ("busybox@" + "a" * 64, "is not of the form <algorithm>:<hex>"),
    ("busybox@", "is not of the form"),
    (f"@{D}", "repository name is missing before the digest"),
    (":tag", "repository name is missing before the tag"),
    ("busybox/", "empty path component"),
    ("/busybox", "empty path component"),
    ("a//b", "empty path component"),
    ("a/-b", 'path component "-b" is invalid'),
    ("a/b_", 'path component "b_" is invalid'),
    ("a/b___c", 'path component "b___c" is invalid'),
    ("a/b c", "is invalid"),
    ("exa_mple.com/a", 'registry domain "exa_mple.com" is invalid'),
    ("-example.com/a", 'registry domain "-example.com" is invalid'),
    ("0123456789abcdef" * 4, "is an image id, not a repository name"),
    ("example.com/" + "a" * 244, "must not be more than 255 characters"),
    ("127.0.0.1:99999/x", 'registry domain "127.0.0.1:99999" has port 99999 out of range'),
    ("localhost:0/x", 'registry domain "localhost:0" has port 0 out of range'),
    ("[::1]:65536/x", "port 65536 out of range"),
]


@pytest.mark.parametrize("text,message", INVALID)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message.replace(".", r"\.").replace("(", r"\(")) as info:
        reference.parse(text)
    assert str(info.value).startswith(f'invalid reference "{text}": ')


def test_error_message_names_the_reference() -> None:
    with pytest.raises(InvalidReference) as info:
        reference.parse("Busybox")
    assert str(info.value) == 'invalid reference "Busybox": repository name must be lowercase'


def test_port_range() -> None:
    assert reference.parse("localhost:65535/x").domain == "localhost:65535"
    assert reference.parse("localhost:1/x").domain == "localhost:1"


def test_a_long_reference_is_shortened_in_the_message() -> None:
    text = "Busybox" + "a" * 300_000
    with pytest.raises(InvalidReference) as info:
        reference.parse(text)
    message = str(info.value)
    assert len(message) < 600 and "300007 bytes" in message and "must be lowercase" in message
    assert info.value.text == text  # the whole text stays on the exception
    with pytest.raises(InvalidReference) as info:
        reference.parse("localhost:" + "9" * 5000 + "/x")   # int() refuses over 4300 digits
    assert "has port 9999999999999999... (5000 bytes) out of range" in str(info.value)


def test_name_length_limit_counts_the_domain() -> None:
    ok = "example.com/" + "a" * 243       # 11 + 1 + 243 = 255
    assert reference.parse(ok).path == "a" * 243


@pytest.mark.parametrize("text,expected", [
    ("0123456789abcdef" * 4, True),
    ("sha256:" + "0123456789abcdef" * 4, True),
    ("sha256:" + "0123456789ABCDEF" * 4, False),
    ("0123456789abcdef" * 3, False),
    ("busybox", False),
    ("sha512:" + "0123456789abcdef" * 4, False),
])
def test_is_image_id(text: str, expected: bool) -> None:
    assert reference.is_image_id(text) is expected
