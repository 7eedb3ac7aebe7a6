"""systemd's readiness protocol (sd_notify(3)) for a `Type=notify` unit: one datagram of
`KEY=value` lines per state change, sent to the unix socket NOTIFY_SOCKET names."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger("criservice.server")


class Notifier:
    """Tells systemd about the daemon's state; does nothing when not started by systemd."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        # Taken out of the environment: runc treats an inherited NOTIFY_SOCKET as its own
        # (it proxies it into the container and `runc start` waits for the container's READY).
        value = environ.pop("NOTIFY_SOCKET", "")
        if value.startswith("@"):
            return cls("\0" + value[1:])  # an abstract socket
        if value.startswith("/"):
            return cls(value)
        if value:
            log.warning("NOTIFY_SOCKET is neither a path nor an abstract name; not notifying systemd",
                        extra={"fields": {"length": len(value)}})
        return cls(None)

    def send(self, *fields: str) -> bool:
        """Send one message (fields such as READY=1); False when there is no one to tell
        or the socket refused it (the daemon runs on either way)."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            log.warning("cannot notify systemd", extra={"fields": {"error": e.strerror or str(e)}})
            return False
        return True
