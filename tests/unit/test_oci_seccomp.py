"""Seccomp profile conversion: arch maps, capability / arch / kernel conditions, localhost profiles."""

from __future__ import annotations

import json
import os
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import pytest

from runtime import errors
from runtime.oci import seccomp
from runtime.oci.specinput import ProfileInput

DOCKER_PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "defaultErrno": "ENOSYS",
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "",
         "includes": {}, "excludes": {}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["cacheflush"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm", "arm64"]}},
        {"names": ["not_on_arm"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["arm64"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["both_caps"], "action": "SCMP_ACT_ALLOW",
         "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}},
        {"names": ["new_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
        {"name": "personality", "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ", "comment": "x"}]},
    ],
}

# What critest writes for its localhost tests: OCI-shaped, no architectures.
BLOCK_CHMOD = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}


def names(profile: dict[str, Any]) -> dict[str, list[str]]:
    """syscall name -> actions of the rules naming it."""
    out: dict[str, list[str]] = {}
    for rule in profile["syscalls"]:
        for n in rule["names"]:
            out.setdefault(n, []).append(rule["action"])
    return out


def convert(caps: AbstractSet[str] = frozenset(), arch: str = "amd64",
            kernel: tuple[int, int] = (6, 1)) -> dict[str, Any]:
    return seccomp.convert(DOCKER_PROFILE, caps=caps, arch=arch, kernel=kernel)


@pytest.mark.parametrize("arch, architectures", [
    ("amd64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    ("arm64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    ("s390x", None),   # not in the map: the native architecture only
])
def test_arch_map(arch: str, architectures: list[str] | None) -> None:
    assert convert(arch=arch).get("architectures") == architectures


@pytest.mark.parametrize("arch, present, absent", [
    ("amd64", {"arch_prctl", "not_on_arm"}, {"cacheflush"}),
    ("arm64", {"cacheflush"}, {"arch_prctl", "not_on_arm"}),
])
def test_arch_conditions(arch: str, present: set[str], absent: set[str]) -> None:
    got = set(names(convert(arch=arch)))
    assert present <= got and not absent & got


@pytest.mark.parametrize("caps, bpf, both", [
    (set(), ["SCMP_ACT_ERRNO"], False),
    ({"CAP_SYS_ADMIN"}, ["SCMP_ACT_ALLOW"], False),
    ({"CAP_SYS_ADMIN", "CAP_BPF"}, ["SCMP_ACT_ALLOW"], True),
])
def test_capability_conditions(caps: set[str], bpf: list[str], both: bool) -> None:
    got = names(convert(caps=caps))
    assert got["bpf"] == bpf
    assert ("both_caps" in got) == both


def test_min_kernel() -> None:
    assert "new_call" in names(convert(kernel=(5, 8)))
    assert "new_call" not in names(convert(kernel=(5, 4)))


def test_rule_shape() -> None:
    profile = convert()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 38
    assert "defaultErrno" not in profile and "archMap" not in profile
    bpf = next(r for r in profile["syscalls"] if r["names"] == ["bpf"])
    assert bpf == {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    personality = next(r for r in profile["syscalls"] if r["names"] == ["personality"])
    assert personality["args"] == [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]
    read = next(r for r in profile["syscalls"] if "read" in r["names"])
    assert set(read) == {"names", "action"}


def test_oci_profile_passes_through() -> None:
    oci = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "flags": ["SECCOMP_FILTER_FLAG_LOG"],
           "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    assert seccomp.convert(oci, caps=(), arch="amd64", kernel=(6, 1)) == oci


@pytest.mark.parametrize("profile, text", [
    ({}, "no defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {"names": []}}, "not a list"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}, "needs names"),
])
def test_invalid_profiles(profile: dict[str, Any], text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=text):
        seccomp.convert(profile, caps=(), arch="amd64", kernel=(6, 1))


# ---- seccomp_for -------------------------------------------------------------------------


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "default.json"
    path.write_text(json.dumps(DOCKER_PROFILE))
    return path


def seccomp_for(profile: ProfileInput | None, path: Path, *, privileged: bool = False,
                caps: tuple[str, ...] = ()) -> dict[str, Any] | None:
    return seccomp.seccomp_for(profile, privileged=privileged, caps=caps, arch="amd64", kernel=(6, 1),
                               default_path=str(path))


@pytest.mark.parametrize("profile, privileged, applied", [
    (None, False, False),                                     # the CRI's nil profile: unconfined
    (ProfileInput("unconfined"), False, False),
    (ProfileInput("runtime_default"), False, True),
    (ProfileInput("runtime_default"), True, False),           # privileged: never a filter
    (ProfileInput("localhost", "/nonexistent.json"), True, False),
])
def test_which_profile(profile_file: Path, profile: ProfileInput | None, privileged: bool, applied: bool) -> None:
    assert (seccomp_for(profile, profile_file, privileged=privileged) is not None) == applied


def test_localhost_profile(tmp_path: Path, profile_file: Path) -> None:
    path = tmp_path / "block-chmod.json"
    path.write_text(json.dumps(BLOCK_CHMOD))
    got = seccomp_for(ProfileInput("localhost", str(path)), profile_file)
    assert got == {"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}
    # the deprecated "localhost/<path>" spelling
    assert seccomp_for(ProfileInput("localhost", "localhost/" + str(path)), profile_file) == got


@pytest.mark.parametrize("profile, text", [
    (ProfileInput("localhost", "/nonexistent/profile.json"), "/nonexistent/profile.json does not exist"),
    (ProfileInput("localhost", "relative.json"), "not an absolute path"),
    (ProfileInput("localhost", ""), "needs localhost_ref"),
    (ProfileInput("runtime_default", "/x.json"), "only valid with the Localhost"),
])
def test_localhost_errors(profile_file: Path, profile: ProfileInput, text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=text):
        seccomp_for(profile, profile_file)


def test_invalid_json(tmp_path: Path, profile_file: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(errors.InvalidArgument, match="not valid JSON"):
        seccomp_for(ProfileInput("localhost", str(path)), profile_file)


def test_results_are_fresh_and_follow_file_changes(profile_file: Path) -> None:
    first = seccomp_for(ProfileInput(), profile_file)
    assert first is not None
    first["syscalls"].clear()   # a caller changing its copy must not change the next one
    second = seccomp_for(ProfileInput(), profile_file)
    assert second is not None and second["syscalls"]
    changed = dict(DOCKER_PROFILE, defaultAction="SCMP_ACT_KILL")
    profile_file.write_text(json.dumps(changed))
    st = profile_file.stat()
    os.utime(profile_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    third = seccomp_for(ProfileInput(), profile_file)
    assert third is not None and third["defaultAction"] == "SCMP_ACT_KILL"


@pytest.mark.skipif(not os.path.exists(seccomp.DEFAULT_PROFILE), reason="no containers-common seccomp.json")
def test_real_runtime_default_profile() -> None:
    default_caps = ("CAP_CHOWN", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE", "CAP_SETUID")
    profile = seccomp.seccomp_for(ProfileInput(), privileged=False, caps=default_caps, arch="amd64",
                                  kernel=(6, 1))
    assert profile is not None
    assert profile["architectures"][0] == "SCMP_ARCH_X86_64"
    got = names(profile)
    assert got["chroot"] == ["SCMP_ACT_ALLOW"]          # CAP_SYS_CHROOT held
    assert got["bpf"] == ["SCMP_ACT_ERRNO"]             # CAP_SYS_ADMIN not held
    assert "arch_prctl" in got and "s390_runtime_instr" not in got
    with_admin = names(seccomp.seccomp_for(ProfileInput(), privileged=False,
                                           caps=default_caps + ("CAP_SYS_ADMIN",), arch="amd64",
                                           kernel=(6, 1)) or {})
    assert with_admin["bpf"] == ["SCMP_ACT_ALLOW"]


@pytest.mark.parametrize("release, expected", [
    ("6.1.0-18-amd64", (6, 1)), ("5.8", (5, 8)), ("6.18.44-fc-v657", (6, 18)), ("4", (4, 0)), ("x", (0, 0)),
])
def test_parse_kernel(release: str, expected: tuple[int, int]) -> None:
    assert seccomp.parse_kernel(release) == expected
