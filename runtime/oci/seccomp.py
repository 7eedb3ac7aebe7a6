"""Seccomp profiles for the OCI spec (`linux.seccomp`).

Profiles come in two shapes, and both are accepted everywhere:
- the OCI shape: `architectures` and `syscalls[].names`, used as they are;
- the Docker / containers-common shape (the RuntimeDefault profile in
  /usr/share/containers/seccomp.json): `archMap`, and per rule `includes` /
  `excludes` conditions on capabilities, architectures and the minimum kernel.
  A rule applies when the container's bounding set holds all of
  `includes.caps` and none of `excludes.caps`, the host architecture is in
  `includes.arches` (when given) and not in `excludes.arches`, and the running
  kernel is at least `includes.minKernel`.

Profiles are re-read when their file changes and converted once per
(file version, capabilities, architecture, kernel); the cache is bounded.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from collections.abc import Iterable
from typing import Any

from runtime import errors
from runtime.oci.specinput import ProfileInput

DEFAULT_PROFILE = "/usr/share/containers/seccomp.json"
MAX_PROFILE_SIZE = 4 << 20
CACHE_SIZE = 64

# uname -m -> the Go name the profiles' arches lists use.
_GO_ARCH = {
    "x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
    "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
    "mips64": "mips64", "loongarch64": "loong64",
}
# Go name -> libseccomp's name of the native architecture.
_SCMP_ARCH = {
    "amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM",
    "386": "SCMP_ARCH_X86", "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64", "mips64": "SCMP_ARCH_MIPS64", "mips64le": "SCMP_ARCH_MIPSEL64",
    "loong64": "SCMP_ARCH_LOONGARCH64",
}
# Profiles spell 32-bit x86 "x86" as often as "386".
_ARCH_ALIASES = {"386": {"386", "x86"}}
_ARG_KEYS = ("index", "value", "valueTwo", "op")


def host_arch() -> str:
    machine = platform.machine()
    return _GO_ARCH.get(machine, machine)


def host_kernel() -> tuple[int, int]:
    return parse_kernel(platform.release())


def parse_kernel(release: str) -> tuple[int, int]:
    """(major, minor) of a release string such as "6.1.0-18-amd64" or "5.8"."""
    parts = release.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except ValueError:
        return 0, 0


def seccomp_for(profile: ProfileInput | None, *, privileged: bool, caps: Iterable[str],
                arch: str | None = None, kernel: tuple[int, int] | None = None,
                default_path: str = DEFAULT_PROFILE) -> dict[str, Any] | None:
    """The `linux.seccomp` object for a container, or None for no filter.

    Privileged containers get none whatever they ask for (the CRI: "seccomp
    restrictions are not applied"; critest checks that a blocking localhost
    profile is ignored for them). No profile at all means unconfined."""
    if privileged or profile is None or profile.type == "unconfined":
        return None
    if profile.type == "runtime_default":
        if profile.localhost_ref:
            raise errors.InvalidArgument("seccomp: localhost_ref is only valid with the Localhost profile type")
        path = default_path
    elif profile.type == "localhost":
        path = _localhost_path(profile.localhost_ref)
    else:
        raise errors.InvalidArgument(f"seccomp: unknown profile type {profile.type!r}")
    return load_profile(path, caps=caps, arch=arch or host_arch(), kernel=kernel or host_kernel())


def _localhost_path(ref: str) -> str:
    path = ref.removeprefix("localhost/")
    if not path:
        raise errors.InvalidArgument("seccomp: the Localhost profile type needs localhost_ref")
    if not os.path.isabs(path):
        raise errors.InvalidArgument(f"seccomp: localhost_ref {ref!r} is not an absolute path")
    return path


def load_profile(path: str, *, caps: Iterable[str], arch: str, kernel: tuple[int, int]) -> dict[str, Any]:
    """The profile at `path` converted for these capabilities, architecture and kernel."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise errors.InvalidArgument(f"seccomp profile {path} does not exist") from None
    except OSError as e:
        raise errors.InvalidArgument(f"seccomp profile {path}: {e.strerror}") from None
    text = _converted(path, st.st_ino, st.st_mtime_ns, st.st_size, frozenset(caps), arch, kernel)
    converted: dict[str, Any] = json.loads(text)   # a fresh object per call: callers may change it
    return converted


@functools.lru_cache(maxsize=CACHE_SIZE)
def _converted(path: str, ino: int, mtime_ns: int, size: int, caps: frozenset[str], arch: str,
               kernel: tuple[int, int]) -> str:
    # ino, mtime and size key the cache on the file's version; they are not used otherwise.
    return json.dumps(convert(_read(path), caps=caps, arch=arch, kernel=kernel))


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROFILE_SIZE + 1)
    except OSError as e:
        raise errors.InvalidArgument(f"seccomp profile {path}: {e.strerror}") from None
    if len(data) > MAX_PROFILE_SIZE:
        raise errors.InvalidArgument(f"seccomp profile {path} is larger than {MAX_PROFILE_SIZE} bytes")
    try:
        profile = json.loads(data)
    except ValueError as e:
        raise errors.InvalidArgument(f"seccomp profile {path} is not valid JSON: {e}") from None
    if not isinstance(profile, dict):
        raise errors.InvalidArgument(f"seccomp profile {path} is not a JSON object")
    return profile


def convert(profile: dict[str, Any], *, caps: Iterable[str], arch: str,
            kernel: tuple[int, int]) -> dict[str, Any]:
    """A Docker- or OCI-shaped profile as an OCI `linux.seccomp` object."""
    if not isinstance(profile.get("defaultAction"), str) or not profile["defaultAction"]:
        raise errors.InvalidArgument("seccomp profile has no defaultAction")
    caps = frozenset(caps)
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = int(profile["defaultErrnoRet"])
    architectures = _architectures(profile, arch)
    if architectures:
        out["architectures"] = architectures
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = profile[key]
    rules = profile.get("syscalls") or []
    if not isinstance(rules, list):
        raise errors.InvalidArgument("seccomp profile: syscalls is not a list")
    out["syscalls"] = [_rule(r) for r in rules if _applies(r, caps, arch, kernel)]
    return out


def _architectures(profile: dict[str, Any], arch: str) -> list[str]:
    if profile.get("archMap"):
        native = _SCMP_ARCH.get(arch)
        for entry in profile["archMap"]:
            if entry.get("architecture") == native:
                return [native, *(entry.get("subArchitectures") or [])]
        return []
    return list(profile.get("architectures") or [])


def _applies(rule: Any, caps: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
    if not isinstance(rule, dict):
        raise errors.InvalidArgument(f"seccomp profile: a syscall rule is not an object: {rule!r}")
    arch_names = _ARCH_ALIASES.get(arch, {arch})
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if not all(c in caps for c in includes.get("caps") or []):
        return False
    if includes.get("arches") and not arch_names & set(includes["arches"]):
        return False
    if includes.get("minKernel") and kernel < parse_kernel(str(includes["minKernel"])):
        return False
    if any(c in caps for c in excludes.get("caps") or []):
        return False
    if excludes.get("arches") and arch_names & set(excludes["arches"]):
        return False
    return True


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
    if not names or not isinstance(rule.get("action"), str):
        raise errors.InvalidArgument(f"seccomp profile: a syscall rule needs names and an action: {rule!r}")
    out: dict[str, Any] = {"names": list(names), "action": rule["action"]}
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = int(rule["errnoRet"])
    if rule.get("args"):
        out["args"] = [{k: a[k] for k in _ARG_KEYS if k in a} for a in rule["args"]]
    return out
