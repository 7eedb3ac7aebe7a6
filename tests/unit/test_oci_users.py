"""User resolution against an image's /etc/passwd and /etc/group, including hostile rootfs layouts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from runtime import errors
from runtime.oci.specinput import SecurityInput
from runtime.oci.users import ResolvedUser, parse_group, parse_passwd, read_file_in_root, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh
# a comment
broken-line
+nis:x:5:5::/:/bin/sh
"""
GROUP = """\
root:x:0:
wheel:x:10:root
default-user:x:1000:
group-defined-in-image:x:50000:default-user
two:x:60000:daemon, default-user
nogroup:x:65534:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A passwd-looking file outside the rootfs: the host's "shadow" that must never be read."""
    path = tmp_path / "host-secret"
    path.write_text("evil:x:4242:4242:evil:/evil:/bin/sh\nroot:x:0:4242:root:/evil:/bin/sh\n")
    return path


def sec(**kw: object) -> SecurityInput:
    return SecurityInput(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("security, image_user, expected", [
    # (uid, gid, additional gids, username, home)
    (sec(), "", (0, 0, (0, 10), "root", "/root")),
    (sec(), "default-user", (1000, 1000, (1000, 50000, 60000), "default-user", "/home/default-user")),
    (sec(), "1000", (1000, 1000, (1000, 50000, 60000), "default-user", "/home/default-user")),
    (sec(), "4321", (4321, 0, (0,), "", "/")),
    (sec(), "default-user:wheel", (1000, 10, (10, 50000, 60000), "default-user", "/home/default-user")),
    (sec(), "1000:777", (1000, 777, (777, 50000, 60000), "default-user", "/home/default-user")),
    (sec(), "4321:wheel", (4321, 10, (10,), "", "/")),
    (sec(), "daemon:", (1, 1, (1, 60000), "daemon", "/usr/sbin")),
    (sec(run_as_user=1000), "root", (1000, 1000, (1000, 50000, 60000), "default-user", "/home/default-user")),
    (sec(run_as_user=0), "default-user", (0, 0, (0, 10), "root", "/root")),
    (sec(run_as_user=1001, run_as_group=1002), "", (1001, 1002, (1002,), "", "/")),
    (sec(run_as_user=1000, run_as_group=1002), "", (1000, 1002, (1002, 50000, 60000), "default-user",
                                                     "/home/default-user")),
    (sec(run_as_username="nobody"), "", (65534, 65534, (65534,), "nobody", "/nonexistent")),
    (sec(run_as_username="nobody", run_as_group=5), "", (65534, 5, (5,), "nobody", "/nonexistent")),
    # critest SupplementalGroupsPolicy: Merge adds the image's groups, Strict does not.
    (sec(run_as_user=1000, supplemental_groups=(1234,)), "",
     (1000, 1000, (1000, 1234, 50000, 60000), "default-user", "/home/default-user")),
    (sec(run_as_user=1000, supplemental_groups=(1234,), supplemental_groups_policy="strict"), "",
     (1000, 1000, (1000, 1234), "default-user", "/home/default-user")),
    (sec(supplemental_groups=(1234, 5678)), "4321", (4321, 0, (0, 1234, 5678), "", "/")),
])
def test_resolve(rootfs: Path, security: SecurityInput, image_user: str,
                 expected: tuple[int, int, tuple[int, ...], str, str]) -> None:
    assert resolve_user(security, image_user, str(rootfs)) == ResolvedUser(*expected)


@pytest.mark.parametrize("security, image_user, error, text", [
    (sec(run_as_group=1002), "", errors.InvalidArgument, "run_as_group is set without run_as_user"),
    (sec(run_as_group=1002), "default-user", errors.InvalidArgument, "run_as_group"),
    (sec(run_as_user=1, run_as_username="daemon"), "", errors.InvalidArgument, "both set"),
    (sec(run_as_user=-1), "", errors.InvalidArgument, "out of range"),
    (sec(run_as_user=1, run_as_group=2**31), "", errors.InvalidArgument, "out of range"),
    (sec(run_as_username="ghost"), "", errors.FailedPrecondition, "user 'ghost' not found"),
    (sec(), "ghost", errors.FailedPrecondition, "user 'ghost' not found"),
    (sec(), "default-user:ghosts", errors.FailedPrecondition, "group 'ghosts' not found"),
    (sec(), "99999999999", errors.InvalidArgument, "out of range"),
])
def test_resolve_errors(rootfs: Path, security: SecurityInput, image_user: str,
                        error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        resolve_user(security, image_user, str(rootfs))


def test_no_passwd_numeric_users_still_work(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_user(sec(), "", str(empty)) == ResolvedUser(0, 0, (0,), "", "/")
    assert resolve_user(sec(), "12:34", str(empty)) == ResolvedUser(12, 34, (34,), "", "/")
    with pytest.raises(errors.FailedPrecondition):
        resolve_user(sec(), "someone", str(empty))


# ---- hostile rootfs ------------------------------------------------------------------------


def test_absolute_symlink_to_host_file_is_not_followed_out(rootfs: Path, sentinel: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to(sentinel)   # an absolute path on the host
    assert read_file_in_root(str(rootfs), "/etc/passwd") is None
    with pytest.raises(errors.FailedPrecondition, match="'evil' not found"):
        resolve_user(sec(), "evil", str(rootfs))
    # root is still uid 0, gid 0: the sentinel's gid 4242 was never seen
    assert resolve_user(sec(), "0", str(rootfs)).gid == 0


def test_relative_symlink_cannot_climb_out(rootfs: Path, sentinel: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    up = "../" * 20 + str(sentinel).lstrip("/")
    (rootfs / "etc" / "passwd").symlink_to(up)
    assert read_file_in_root(str(rootfs), "/etc/passwd") is None


def test_symlinked_etc_directory_to_host(rootfs: Path, tmp_path: Path) -> None:
    host_etc = tmp_path / "host-etc"
    host_etc.mkdir()
    (host_etc / "passwd").write_text("evil:x:4242:4242::/:/bin/sh\n")
    for f in (rootfs / "etc").iterdir():
        f.unlink()
    (rootfs / "etc").rmdir()
    (rootfs / "etc").symlink_to(host_etc)
    assert read_file_in_root(str(rootfs), "/etc/passwd") is None


def test_symlinks_resolved_inside_the_rootfs(rootfs: Path) -> None:
    real = rootfs / "usr" / "lib" / "etc"
    real.mkdir(parents=True)
    (rootfs / "etc" / "passwd").rename(real / "passwd")
    (rootfs / "etc" / "passwd").symlink_to("/usr/lib/etc/passwd")       # absolute: inside the root
    assert read_file_in_root(str(rootfs), "/etc/passwd") == PASSWD.encode()
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to("../../../../usr/lib/./etc/passwd")   # clamped at the root
    assert resolve_user(sec(), "default-user", str(rootfs)).uid == 1000


def test_symlink_loop_is_refused(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to("passwd")
    with pytest.raises(errors.FailedPrecondition, match="too many levels"):
        read_file_in_root(str(rootfs), "/etc/passwd")


def test_fifo_is_refused_without_blocking(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            read_file_in_root(str(rootfs), "/etc/passwd")
            result.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert isinstance(result[0], errors.FailedPrecondition)


def test_directory_and_oversized_files_are_refused(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").mkdir()
    with pytest.raises(errors.FailedPrecondition, match="not a regular file"):
        read_file_in_root(str(rootfs), "/etc/passwd")
    (rootfs / "etc" / "big").write_bytes(b"x" * 2048)
    with pytest.raises(errors.FailedPrecondition, match="larger than"):
        read_file_in_root(str(rootfs), "/etc/big", limit=1024)


def test_missing_and_not_a_directory(rootfs: Path) -> None:
    assert read_file_in_root(str(rootfs), "/etc/nothing") is None
    assert read_file_in_root(str(rootfs), "/etc/passwd/deeper") is None


def test_parsers_skip_malformed_lines() -> None:
    users = parse_passwd(PASSWD.encode() + b"x:x:notanumber:0::/:/bin/sh\n")
    assert [u.name for u in users] == ["root", "daemon", "nobody", "default-user"]
    groups = parse_group(GROUP.encode())
    assert next(g for g in groups if g.name == "two").members == ("daemon", "default-user")
