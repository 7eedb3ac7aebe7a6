"""Registry authentication pieces that need no network: credentials, challenges, the token cache.

The flows themselves (asking a token realm, retrying with credentials) live in
registry.py; everything here is pure so it can be tested without sockets.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOKEN_LIFETIME = 60.0   # seconds; the token spec's default and minimum for expires_in
BASIC_LIFETIME = 3600.0         # re-check cached Basic credentials hourly
_EXPIRY_MARGIN = 5.0            # renew a little early so a token doesn't expire mid-request


@dataclass(frozen=True)
class Credentials:
    """The CRI AuthConfig of one pull."""
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    auth: str = field(default="", repr=False)           # base64 "user:pass"
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    def user_password(self) -> tuple[str, str] | None:
        """The username and password, from the fields or the `auth` blob; None if neither is set.

        Raises ValueError if `auth` is not base64 of "user:pass"."""
        if self.username or self.password:
            return self.username, self.password
        if not self.auth:
            return None
        try:
            decoded = base64.b64decode(self.auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ValueError(f"the auth field is not base64 of \"user:password\": {e}") from e
        user, colon, password = decoded.partition(":")
        if not colon:
            raise ValueError("the auth field decodes to a string without ':' (expected \"user:password\")")
        return user, password

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.auth or self.identity_token
                    or self.registry_token)


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Challenge:
    scheme: str                 # lowercase: "basic", "bearer"
    params: dict[str, str]      # keys lowercase

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


class ChallengeError(ValueError):
    pass


def parse_www_authenticate(value: str) -> list[Challenge]:
    """Parse a WWW-Authenticate header (RFC 7235): one or more challenges, comma separated.

    `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="a,b"`
    """
    parser = _HeaderParser(value)
    challenges: list[Challenge] = []
    while not parser.at_end():
        parser.skip(" \t,")
        if parser.at_end():
            break
        scheme = parser.token()
        if not scheme:
            raise ChallengeError(f"malformed WWW-Authenticate {value!r} at offset {parser.pos}")
        params: dict[str, str] = {}
        while True:
            mark = parser.pos
            parser.skip(" \t,")
            key = parser.token()
            parser.skip(" \t")
            if not key or not parser.take("="):
                parser.pos = mark     # not a parameter: the next challenge's scheme (or the end)
                break
            parser.skip(" \t")
            params[key.lower()] = parser.quoted() if parser.peek() == '"' else parser.token()
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


class _HeaderParser:
    _TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ/:")  # '/' and ':' appear in unquoted realms

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if not self.at_end() else ""

    def skip(self, chars: str) -> None:
        while not self.at_end() and self.text[self.pos] in chars:
            self.pos += 1

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def token(self) -> str:
        start = self.pos
        while not self.at_end() and self.text[self.pos] in self._TOKEN_CHARS:
            self.pos += 1
        return self.text[start:self.pos]

    def quoted(self) -> str:
        self.pos += 1  # opening quote
        out: list[str] = []
        while not self.at_end():
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\" and not self.at_end():
                out.append(self.text[self.pos])
                self.pos += 1
            elif char == '"':
                return "".join(out)
            else:
                out.append(char)
        raise ChallengeError(f"unterminated quoted string in WWW-Authenticate {self.text!r}")


@dataclass(frozen=True)
class Token:
    value: str
    lifetime: float


def parse_token_response(body: bytes) -> Token:
    """A token server's JSON answer: `token` or `access_token`, and `expires_in` seconds."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"token response is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError("token response is not a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise ValueError("token response has neither \"token\" nor \"access_token\"")
    expires_in = data.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else DEFAULT_TOKEN_LIFETIME
    return Token(value, max(lifetime, DEFAULT_TOKEN_LIFETIME))


class AuthCache:
    """Authorization header values by (host, scope, credentials), each until it expires.

    The credentials are part of the key so a pull without credentials never
    rides on a token another pull obtained with them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[Hashable, tuple[str, float]] = {}

    def get(self, key: Hashable) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: Hashable, header: str, lifetime: float) -> None:
        now = self._clock()
        self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
        self._entries[key] = (header, now + max(lifetime - _EXPIRY_MARGIN, 1.0))

    def drop(self, key: Hashable) -> None:
        self._entries.pop(key, None)
