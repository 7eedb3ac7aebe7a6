"""The container's user: uid, gid and groups, from the CRI security context or the
image's `User`, looked up in the image's own /etc/passwd and /etc/group.

The rootfs is untrusted: its /etc/passwd may be a symlink to /etc/shadow of the
host, a FIFO that blocks forever, or a 10 GB file. Files are therefore opened by
walking the path one component at a time from a directory fd of the rootfs, with
O_NOFOLLOW at every step; symlinks are resolved by hand, inside the rootfs
(absolute targets restart at the rootfs, ".." never climbs above it), with a
depth limit. Only regular files are read, and only up to a size limit.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from runtime import errors
from runtime.oci.specinput import SecurityInput

MAX_SYMLINKS = 40          # what the kernel allows in one path walk (ELOOP)
MAX_DB_SIZE = 8 << 20      # /etc/passwd and /etc/group larger than this are refused
MAX_ID = 2**31 - 1         # runc refuses uids and gids above INT32_MAX


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]   # sorted, always including gid (as ContainerStatus reports them)
    username: str                      # "" when the uid has no passwd entry
    home: str                          # from passwd, "/" without an entry


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


# ---- reading files inside an untrusted root ------------------------------------------


def read_file_in_root(root: str, path: str, limit: int = MAX_DB_SIZE) -> bytes | None:
    """The bytes of `path` resolved inside `root`; None when it does not exist.

    Raises FailedPrecondition for a symlink loop, something that is not a
    regular file, or a file over `limit` bytes."""
    fd = _open_in_root(root, path)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise errors.FailedPrecondition(f"image file {path} is not a regular file")
        if st.st_size > limit:
            raise errors.FailedPrecondition(f"image file {path} is larger than {limit} bytes")
        # Reopen the very inode the O_PATH walk found: no second path lookup to race with.
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:   # it grew since the fstat
            raise errors.FailedPrecondition(f"image file {path} is larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


def _open_in_root(root: str, path: str) -> int | None:
    """An O_PATH fd for `path` inside `root`, every symlink resolved within `root`."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    stack = [root_fd]                   # fds from the root down to the current directory
    todo = _components(path)
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR):
                    return None
                raise
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                stack.append(fd)
                continue
            links += 1
            try:
                target = os.readlink(name, dir_fd=stack[-1])
            finally:
                os.close(fd)
            if links > MAX_SYMLINKS:
                raise errors.FailedPrecondition(f"image path {path}: too many levels of symbolic links")
            if target.startswith("/"):
                while len(stack) > 1:   # absolute targets are relative to the rootfs
                    os.close(stack.pop())
            todo = _components(target) + todo
        if len(stack) == 1:
            return os.dup(root_fd)
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


# ---- /etc/passwd and /etc/group -----------------------------------------------------------


def _parse_id(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) <= MAX_ID else None


def parse_passwd(data: bytes) -> list[PasswdEntry]:
    entries = []
    for line in data.decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) < 4 or not parts[0] or parts[0][0] in "#+-":
            continue
        uid, gid = _parse_id(parts[2]), _parse_id(parts[3])
        if uid is None or gid is None:
            continue
        home = parts[5] if len(parts) > 5 and parts[5] else "/"
        entries.append(PasswdEntry(parts[0], uid, gid, home))
    return entries


def parse_group(data: bytes) -> list[GroupEntry]:
    entries = []
    for line in data.decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) < 3 or not parts[0] or parts[0][0] in "#+-":
            continue
        gid = _parse_id(parts[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in parts[3].split(",") if m.strip()) if len(parts) > 3 else ()
        entries.append(GroupEntry(parts[0], gid, members))
    return entries


class _ImageDB:
    """The image's passwd and group files, each read at most once."""

    def __init__(self, rootfs: str) -> None:
        self.rootfs = rootfs
        self._passwd: list[PasswdEntry] | None = None
        self._group: list[GroupEntry] | None = None

    def passwd(self) -> list[PasswdEntry]:
        if self._passwd is None:
            data = read_file_in_root(self.rootfs, "/etc/passwd") if self.rootfs else None
            self._passwd = parse_passwd(data) if data is not None else []
        return self._passwd

    def group(self) -> list[GroupEntry]:
        if self._group is None:
            data = read_file_in_root(self.rootfs, "/etc/group") if self.rootfs else None
            self._group = parse_group(data) if data is not None else []
        return self._group

    def user_by_name(self, name: str) -> PasswdEntry | None:
        return next((u for u in self.passwd() if u.name == name), None)

    def user_by_uid(self, uid: int) -> PasswdEntry | None:
        return next((u for u in self.passwd() if u.uid == uid), None)

    def gid_by_name(self, name: str) -> int | None:
        return next((g.gid for g in self.group() if g.name == name), None)

    def groups_listing(self, username: str) -> list[int]:
        return [g.gid for g in self.group() if username in g.members]


# ---- resolution --------------------------------------------------------------------------


def resolve_user(security: SecurityInput, image_user: str, rootfs: str) -> ResolvedUser:
    """uid, gid and groups of the container's first process.

    The CRI's run_as_username / run_as_user (with run_as_group) win over the
    image's `User`; with neither the process runs as root. A user name must
    exist in the image; a numeric uid need not (its gid is then 0)."""
    user_part, group_part = _requested(security, image_user)
    db = _ImageDB(rootfs)
    entry = _lookup_user(db, user_part)
    uid = entry.uid if entry is not None else int(user_part)
    if group_part is None:
        gid = entry.gid if entry is not None else 0
    else:
        gid = _lookup_group(db, group_part)
    groups = {gid, *security.supplemental_groups}
    if security.supplemental_groups_policy == "merge" and entry is not None:
        groups.update(db.groups_listing(entry.name))
    return ResolvedUser(uid=uid, gid=gid, additional_gids=tuple(sorted(groups)),
                        username=entry.name if entry is not None else "",
                        home=entry.home if entry is not None else "/")


def _requested(security: SecurityInput, image_user: str) -> tuple[str, str | None]:
    """The (user, group) strings asked for; group None when not given."""
    if security.run_as_group is not None and security.run_as_user is None and not security.run_as_username:
        raise errors.InvalidArgument("run_as_group is set without run_as_user or run_as_username")
    if security.run_as_user is not None and security.run_as_username:
        raise errors.InvalidArgument("run_as_user and run_as_username are both set; only one may be")
    for what, value in (("run_as_user", security.run_as_user), ("run_as_group", security.run_as_group)):
        if value is not None and not 0 <= value <= MAX_ID:
            raise errors.InvalidArgument(f"{what} {value} is out of range (0..{MAX_ID})")
    group = None if security.run_as_group is None else str(security.run_as_group)
    if security.run_as_username:
        return security.run_as_username, group
    if security.run_as_user is not None:
        return str(security.run_as_user), group
    user, _, image_group = image_user.partition(":")
    return (user or "0"), (image_group or None)


def _lookup_user(db: _ImageDB, user: str) -> PasswdEntry | None:
    uid = _parse_id(user)
    if uid is not None:
        return db.user_by_uid(uid)
    if user.isdigit():
        raise errors.InvalidArgument(f"user id {user} is out of range (0..{MAX_ID})")
    entry = db.user_by_name(user)
    if entry is None:
        raise errors.FailedPrecondition(f"user {user!r} not found in the image's /etc/passwd")
    return entry


def _lookup_group(db: _ImageDB, group: str) -> int:
    gid = _parse_id(group)
    if gid is not None:
        return gid
    if group.isdigit():
        raise errors.InvalidArgument(f"group id {group} is out of range (0..{MAX_ID})")
    found = db.gid_by_name(group)
    if found is None:
        raise errors.FailedPrecondition(f"group {group!r} not found in the image's /etc/group")
    return found
