"""The mountinfo reading that pod starts and removals rely on (no root needed)."""

from __future__ import annotations

from runtime import mounts


def test_escaping_matches_mountinfo_and_round_trips() -> None:
    odd = "/var/lib/a dir\twith\nodd\\chars"
    escaped = mounts._escaped(odd + "/")
    assert escaped == "/var/lib/a\\040dir\\011with\\012odd\\134chars"
    assert mounts._unescape(escaped) == odd
    assert mounts._unescape("/plain/path") == "/plain/path"


def test_mount_points_and_is_mount_point_read_this_process_table() -> None:
    assert mounts.is_mount_point("/proc")
    assert mounts.is_mount_point("/proc/")
    assert mounts.is_mount_point("/")
    assert not mounts.is_mount_point("/proc/self/fd")
    assert "/proc" in mounts.mount_points("/proc")
    assert all(p == "/proc" or p.startswith("/proc/") for p in mounts.mount_points("/proc"))
    assert not mounts.mount_points("/proc/self/fd")
    assert "/" in mounts.mount_points("/")
