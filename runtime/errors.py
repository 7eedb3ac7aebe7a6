"""The errors runtime/ raises.

Each class names the outcome a client should see; criservice/ maps them to gRPC
status codes in one place. Anything else that escapes a request is a bug and
becomes INTERNAL.
"""


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
