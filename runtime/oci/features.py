"""What an OCI runtime binary can do, from its `features` subcommand (runtime-spec
features.md), combined with what this kernel can do.

Status announces these per runtime handler; the kubelet and critest only use a
feature a handler announces.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from runtime import binaries

log = logging.getLogger("criservice.features")

RRO_MIN_KERNEL = (5, 12)   # mount_setattr(2) with AT_RECURSIVE


@dataclass(frozen=True)
class HandlerFeatures:
    recursive_read_only_mounts: bool = False
    # Kubernetes user namespaces need idmapped mounts from the runtime (runc >= 1.2),
    # else volumes and the root filesystem show the wrong owners inside the pod.
    user_namespaces: bool = False


def parse_features(text: str, kernel: tuple[int, int]) -> HandlerFeatures:
    """`runc features` / `crun features` output; anything unreadable announces nothing."""
    try:
        doc = json.loads(text)
    except ValueError:
        return HandlerFeatures()
    if not isinstance(doc, dict):
        return HandlerFeatures()
    linux = doc.get("linux") or {}
    idmap = ((linux.get("mountExtensions") or {}).get("idmap") or {}).get("enabled") is True
    return HandlerFeatures(
        recursive_read_only_mounts="rro" in (doc.get("mountOptions") or []) and kernel >= RRO_MIN_KERNEL,
        user_namespaces=idmap and "user" in (linux.get("namespaces") or []))


async def handler_features(binary: str, kernel: tuple[int, int]) -> HandlerFeatures:
    """Cached per binary identity, like every probe of a binary."""
    _, text, error = await binaries.output(binary, ("features",))
    if error:
        log.debug("no features from the runtime", extra={"fields": {"binary": binary, "error": error}})
        return HandlerFeatures()
    return parse_features(text, kernel)
