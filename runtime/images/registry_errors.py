"""The errors of pulling from a registry: one small hierarchy, each with the host and,
where there was one, the HTTP status."""

from __future__ import annotations


class RegistryError(Exception):
    def __init__(self, message: str, *, host: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.host, self.status = host, status


class AuthError(RegistryError):
    """The registry (or its token server) refused the credentials, or wanted some."""


class NotFoundError(RegistryError):
    """The manifest, blob or platform is not there."""


class DigestMismatch(RegistryError):
    pass


class UnsupportedManifest(RegistryError):
    """Schema 1, unknown media types, malformed manifests."""


class ProgressTimeout(RegistryError):
    """No byte arrived for the configured progress timeout."""


class ConnectionFailed(RegistryError):
    """The registry could not be reached, or TLS failed."""

    def __init__(self, message: str, *, host: str = "", tls_verify: bool = False) -> None:
        super().__init__(message, host=host)
        self.tls_verify = tls_verify
