"""Single-use tokens naming a streaming request, each valid for a short time."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from runtime import errors

T = TypeVar("T")

TOKEN_TTL = 60.0        # seconds from Exec/Attach/PortForward to the client's request
MAX_IN_FLIGHT = 1000    # tokens issued and not used yet


class TokenCache(Generic[T]):
    def __init__(self, ttl: float = TOKEN_TTL, max_in_flight: int = MAX_IN_FLIGHT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()   # oldest first

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            token, (deadline, _) = next(iter(self._entries.items()))
            if deadline > now:
                break
            del self._entries[token]

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def issue(self, request: T) -> str:
        self._expire()
        if len(self._entries) >= self.max_in_flight:
            raise errors.ResourceExhausted(
                f"{len(self._entries)} streaming requests are waiting for their client already")
        token = secrets.token_urlsafe(12)
        self._entries[token] = (self._clock() + self.ttl, request)
        return token

    def peek(self, token: str) -> T | None:
        """The request of a valid token, which stays valid; None otherwise.

        The server looks first and consumes only once the request proves to be the token's own
        (its kind, its upgrade): a stray or malformed request must not spend a client's token."""
        self._expire()
        entry = self._entries.get(token)
        return None if entry is None else entry[1]

    def consume(self, token: str) -> T | None:
        """The request of a valid token, which is then used up; None otherwise."""
        self._expire()
        entry = self._entries.pop(token, None)
        return None if entry is None else entry[1]
