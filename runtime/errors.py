"""The errors runtime/ raises.

Each class names the outcome a client should see; criservice/ maps them to gRPC
status codes in one place. Anything else that escapes a request is a bug and
becomes INTERNAL.
"""

from collections.abc import Callable


class CRIError(Exception):
    """Base of every expected failure; the message is shown to the client."""


class InvalidArgument(CRIError):
    """The request itself is wrong: a missing or malformed field."""


class NotFound(CRIError):
    """The named object does not exist."""


class AlreadyExists(CRIError):
    """An object with that name or id exists already."""


class FailedPrecondition(CRIError):
    """The request is valid but the object is in the wrong state for it."""


class PermissionDenied(CRIError):
    """A registry or other party refused the credentials."""


class DeadlineExceeded(CRIError):
    """The operation did not finish in the time it was given."""


class Unavailable(CRIError):
    """A dependency (OCI runtime, registry, CNI plugin) cannot be used right now."""


class Unimplemented(CRIError):
    """The request asks for something criservice does not do (yet)."""


class ResourceExhausted(CRIError):
    """A limit was reached (tokens, disk, concurrent operations)."""


def shown(value: str | bytes, limit: int = 64, quote: Callable[[str | bytes], str] = repr) -> str:
    """`value` quoted for a message or a log line, cut to its first `limit` characters
    plus its length in bytes when longer: request values are echoed in messages, and a
    300 KB id must not make a 300 KB status (over the HTTP/2 metadata limit) or log line."""
    if len(value) <= limit:
        return quote(value)
    size = len(value) if isinstance(value, bytes) else len(value.encode("utf-8", "surrogatepass"))
    return f"{quote(value[:limit])}... ({size} bytes)"
