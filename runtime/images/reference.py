"""Image references: parsing and normalisation as the kubelet and containerd do.

The grammar is the docker "reference" grammar of CNCF distribution:

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port]
    path-component := [a-z0-9]+ (separator [a-z0-9]+)*     separator: "." "_" "__" "-"*
    tag        := [\\w][\\w.-]{0,127}
    digest     := algorithm ":" hex

Normalisation: a name without a domain lives on docker.io; a one-component
docker.io name lives under `library/`; `index.docker.io` is docker.io; the tag
defaults to `latest` unless a digest is given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from runtime.errors import shown

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = frozenset({"index.docker.io"})
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::(?P<port>[0-9]+))?")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([0-9a-fA-F]+)")
# Algorithms we can verify, with the length of their hex encoding.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_HEX64 = re.compile(r"[0-9a-f]{64}")


# A repository name is at most 255 characters: a longer text is shown shortened.
_SHOWN_MAX = 256


def _q(text: str) -> str:
    return shown(text, _SHOWN_MAX, lambda t: json.dumps(t, ensure_ascii=False))


class InvalidReference(ValueError):
    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"invalid reference {_q(text)}: {reason}")
        self.text, self.reason = text, reason


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def repo_tag(self) -> str | None:
        return f"{self.name}:{self.tag}" if self.tag is not None else None

    def with_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def is_image_id(text: str) -> bool:
    """A bare 64-hex image id or `sha256:<64 hex>`; the CRI lets clients name images by id."""
    return _HEX64.fullmatch(text.removeprefix("sha256:")) is not None


def validate_digest(digest: str) -> str | None:
    """None if `digest` is a digest we can verify, else what is wrong with it."""
    match = _DIGEST.fullmatch(digest)
    if match is None:
        return f"digest {_q(digest)} is not of the form <algorithm>:<hex>"
    algorithm, hexpart = match.groups()
    length = _DIGEST_HEX_LENGTH.get(algorithm)
    if length is None:
        return f"digest algorithm {_q(algorithm)} is not supported (use sha256 or sha512)"
    if len(hexpart) != length or hexpart != hexpart.lower():
        return f"{algorithm} digest must be {length} lowercase hex characters, got {_q(hexpart)}"
    return None


def parse(text: str) -> Reference:
    """Parse and normalise an image reference; raises InvalidReference naming the fault."""
    if not text:
        raise InvalidReference(text, "reference is empty")
    if _HEX64.fullmatch(text):
        raise InvalidReference(text, "a 64-character hex string is an image id, not a repository name")
    remainder, digest = _split_digest(text)
    remainder, tag = _split_tag(text, remainder)
    domain, path = _split_domain(text, remainder)
    _check_path(text, path)
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(text, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} "
                                     "characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def _split_digest(text: str) -> tuple[str, str | None]:
    name, at, digest = text.partition("@")
    if not at:
        return text, None
    if not name:
        raise InvalidReference(text, "repository name is missing before the digest")
    if (err := validate_digest(digest)) is not None:
        raise InvalidReference(text, err)
    return name, digest


def _split_tag(text: str, remainder: str) -> tuple[str, str | None]:
    # A ':' after the last '/' separates the tag; one before it is a domain's port.
    colon = remainder.rfind(":")
    if colon == -1 or colon < remainder.rfind("/"):
        return remainder, None
    name, tag = remainder[:colon], remainder[colon + 1:]
    if not name:
        raise InvalidReference(text, "repository name is missing before the tag")
    if not _TAG.fullmatch(tag):
        raise InvalidReference(text, f"tag {_q(tag)} is invalid (letters, digits, '_', '.', '-'; "
                                     "must not start with '.' or '-'; at most 128 characters)")
    return name, tag


def _split_domain(text: str, name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    # distribution: the first component is a domain iff it has '.' or ':', is
    # "localhost", or has an uppercase letter (path components never do).
    if slash and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        match = _DOMAIN.fullmatch(first)
        if not match:
            raise InvalidReference(text, f"registry domain {_q(first)} is invalid")
        # distribution's grammar takes any digits; a client cannot connect to them all.
        # (int() of over 4300 digits raises: the length goes first.)
        port = match["port"]
        if port is not None and (len(port) > 5 or not 0 < int(port) <= 65535):
            raise InvalidReference(text, f"registry domain {_q(first)} has port {shown(port, 16, str)} "
                                         "out of range (1-65535)")
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def _check_path(text: str, path: str) -> None:
    if path != path.lower():
        raise InvalidReference(text, "repository name must be lowercase")
    for component in path.split("/"):
        if not component:
            raise InvalidReference(text, "repository name has an empty path component "
                                         "(leading, trailing or double '/')")
        if not _PATH_COMPONENT.fullmatch(component):
            raise InvalidReference(text, f"repository path component {_q(component)} is invalid "
                                         "(lowercase letters and digits, separated by '.', '_', '__' or '-')")
