"""Unpack one image layer (a tar stream) into its own directory, in overlayfs form.

Each layer is unpacked once, alone, into an empty directory; a container's
rootfs is later an overlay mount with these directories as lower layers. So a
whiteout (`.wh.NAME`) becomes overlayfs's own marker, a 0/0 character device,
and an opaque-directory marker (`.wh..wh..opq`) becomes the directory's
`trusted.overlay.opaque=y` xattr.

The tar parser is our own, reading the stream strictly in order (no seeks), so
it works on a pipe or an HTTP body. A helper thread per call decompresses,
hashes (for the diff_id) and counts the bytes against the limits a few chunks
ahead of the parser; it is always joined before unpack_layer() returns.

Security: nothing is ever written outside `dest`.
- An entry path is made relative (a leading "/" is dropped, as OCI says) and
  resolved lexically; a ".." that would climb above the layer root is an error.
- Parent directories are opened one component at a time, relative to their
  parent's fd, with O_NOFOLLOW|O_DIRECTORY; a symlink or non-directory on the
  way is an error, so no entry is ever written through a symlink, whatever the
  order of entries. Every file system call takes a parent dir fd and a single
  name, and never follows a symlink in the last component.
- Hard links must name an existing non-directory inside the layer, reached the
  same way. Symlink targets are data: they may point anywhere and are never
  followed here.
- Device nodes need `UnpackLimits.allow_devices`; whiteouts are always allowed.
- xattrs in overlayfs's own namespace (`trusted.overlay.*`, `user.overlay.*`)
  are refused, except "opaque": a layer must not steer how overlayfs resolves
  the stack (redirects, metacopy, origin).
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from runtime.images import compression as _compression

_CHUNK = 1 << 20                # uncompressed bytes pulled per read
_READ_AHEAD = 4                 # chunks the decompressing thread may run ahead
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_META_MAX = 1 << 20             # the largest pax / GNU long-name record we accept
_META_RUN_MAX = 16              # extended headers allowed in a row before an entry
_DIR_FD_CACHE = 128             # open directory fds kept for parent lookups

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_WHITEOUT = b".wh."
_OPAQUE = b".wh..wh..opq"
_AUFS_META = b".wh..wh."
_OPAQUE_XATTR = b"trusted.overlay.opaque"
_OPAQUE_XATTRS = (_OPAQUE_XATTR, b"user.overlay.opaque")  # the only overlayfs xattrs a layer may carry

# Entry kinds, from the tar typeflag.
_REG, _LINK, _SYMLINK, _CHR, _BLK, _DIR, _FIFO = range(7)
_TYPEFLAGS: dict[bytes, int] = {
    b"0": _REG, b"\0": _REG, b"7": _REG,  # "7" is "contiguous file": a regular file
    b"1": _LINK, b"2": _SYMLINK, b"3": _CHR, b"4": _BLK, b"5": _DIR, b"6": _FIFO,
}


class UnpackError(Exception):
    """The layer is malformed or unsafe; the message names the entry and the reason."""


class LayerTooLarge(UnpackError):
    """The layer exceeds a limit (bytes or entries): a bomb, or just too big."""


@dataclass(frozen=True)
class UnpackLimits:
    max_bytes: int = 64 * 2**30       # total uncompressed bytes of a layer
    max_entries: int = 2_000_000
    # allow device nodes (char/block) other than overlay whiteouts: only when
    # the daemon runs as real root in the init user namespace
    allow_devices: bool = True


@dataclass(frozen=True)
class UnpackResult:
    diff_id: str          # "sha256:<hex>" of the UNCOMPRESSED tar stream
    size: int             # uncompressed bytes
    entries: int


def detect_compression(media_type: str, head: bytes) -> str:
    """"gzip", "zstd" or "none" for a layer blob.

    The media type decides, and an unknown one is an error. The first bytes of
    the blob (`head`, may be empty) are the fallback when the media type is
    empty, and they win when they carry the other compressor's magic number:
    gzip and zstd magics are unambiguous, and some tools label layers wrongly.
    """
    sniffed = _compression.sniff(head)
    if not media_type.strip():
        return sniffed
    named = _compression.for_media_type(media_type)
    if named is None:
        raise UnpackError(f"unsupported layer media type {media_type!r}")
    return sniffed if sniffed != _compression.NONE else named


def unpack_layer(src: BinaryIO, dest: str, compression: str,
                 limits: UnpackLimits = UnpackLimits(), *,
                 preserve_owners: bool | None = None) -> UnpackResult:
    """Unpack the layer read from `src` into the empty directory `dest`.

    Reads `src` to its end, so the returned diff_id covers every uncompressed
    byte, trailing padding included; the caller compares it to the image
    config. `preserve_owners` (default: when running as root) applies the
    entries' numeric uid/gid; without it files belong to the caller.
    Blocking and thread-safe (no chdir, no umask, no shared state); it runs one
    helper thread of its own, joined before it returns. On error the caller
    removes `dest`: nothing was written outside it.
    """
    owners = os.geteuid() == 0 if preserve_owners is None else preserve_owners
    try:
        read = _compression.open_reader(src, compression)
    except _compression.DecompressionError as e:
        raise UnpackError(str(e)) from e
    try:
        root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise UnpackError(f"cannot open the layer directory: {e}") from e
    source = _ReadAhead(read, limits.max_bytes)
    try:
        if os.listdir(root_fd):
            raise UnpackError(f"layer directory {dest!r} is not empty")
        stream = _Stream(source.next_chunk)
        writer = _Writer(root_fd, owners, limits.allow_devices)
        try:
            entries = _unpack_entries(stream, writer, limits.max_entries)
            writer.finish()
        finally:
            writer.close()
        stream.drain()
    except _compression.DecompressionError as e:
        raise UnpackError(f"layer stream: {e}") from e
    finally:
        source.close()
        os.close(root_fd)
    return UnpackResult(source.digest(), source.size, entries)


def _unpack_entries(stream: _Stream, writer: _Writer, max_entries: int) -> int:
    entries = 0
    while (hdr := _next_header(stream)) is not None:
        entries += 1
        if entries > max_entries:
            raise LayerTooLarge(f"layer has more than {max_entries} entries")
        if not writer.apply(hdr, stream):
            stream.skip(hdr.data_size)
        stream.skip(-hdr.data_size % _BLOCK)
    return entries


# ---- the uncompressed byte stream ------------------------------------------------

_END = object()  # the read-ahead thread's last queue item after the final chunk


class _ReadAhead:
    """Decompresses, hashes and counts the layer in a helper thread, a few chunks
    ahead of the tar parser, so inflating overlaps with the file system calls
    (zlib, zstd, hashlib and os.write all release the GIL).

    The thread alone touches `src`. It always ends by queueing one final item
    (_END or its exception); close() stops it and waits for that item, so no
    thread outlives unpack_layer() and `src` is free when it returns.
    """

    def __init__(self, read: _compression.Reader, max_bytes: int) -> None:
        self._read = read
        self._max = max_bytes
        self._sha = hashlib.sha256()
        self.size = 0  # read by the parser only after the thread's final item
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_READ_AHEAD)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="layer-read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        final: object = _END
        try:
            while not self._stop.is_set():
                data = self._read(_CHUNK)
                if not data:
                    break
                self.size += len(data)
                if self.size > self._max:
                    raise LayerTooLarge(f"layer is larger than {self._max} bytes uncompressed")
                self._sha.update(data)
                self._queue.put(data)
        except BaseException as e:  # handed to the parser thread, which raises it
            final = e
        self._queue.put(final)

    def next_chunk(self) -> bytes:
        """The next chunk; b"" at the end of the stream."""
        if self._ended:
            return b""
        item = self._queue.get()
        if isinstance(item, bytes):
            return item
        self._ended = True
        if isinstance(item, BaseException):
            raise item
        return b""

    def close(self) -> None:
        """Stop the thread (draining the queue so it can finish) and wait for it."""
        self._stop.set()
        while not self._ended:
            self._ended = not isinstance(self._queue.get(), bytes)
        self._thread.join()

    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()


class _Stream:
    """Uncompressed tar bytes, consumed strictly in order from large chunks."""

    def __init__(self, next_chunk: Callable[[], bytes]) -> None:
        self._next_chunk = next_chunk
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0

    def _fill(self) -> bool:
        """Replace the (used up) buffer with the next chunk; False at the end."""
        data = self._next_chunk()
        if not data:
            return False
        self._buf, self._view, self._pos = data, memoryview(data), 0
        return True

    def block(self) -> bytes | None:
        """The next 512-byte block, or None if the stream ends cleanly before it."""
        pos = self._pos
        if len(self._buf) - pos >= _BLOCK:
            self._pos = pos + _BLOCK
            return self._buf[pos:pos + _BLOCK]
        got = self._buf[pos:]
        self._pos = len(self._buf)
        if not got and not self._fill():
            return None
        return got + self.read(_BLOCK - len(got))

    def _spans(self, n: int, inside: str) -> Iterator[memoryview]:
        """The next n bytes as views into the chunk buffers, without copying them."""
        while n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._fill():
                    raise UnpackError(f"layer is truncated: the tar stream ends inside {inside}")
                avail = len(self._buf)
            take = min(avail, n)
            yield self._view[self._pos:self._pos + take]
            self._pos += take
            n -= take

    def read(self, n: int) -> bytes:
        """Exactly n bytes (n is small: headers and extended records)."""
        return b"".join(bytes(span) for span in self._spans(n, "a record"))

    def copy_to(self, fd: int, n: int) -> None:
        """Write the next n bytes to fd, straight from the chunk buffers."""
        for view in self._spans(n, "a file"):
            while view:
                view = view[os.write(fd, view):]

    def skip(self, n: int) -> None:
        for _ in self._spans(n, "a record"):
            pass

    def drain(self) -> None:
        """Read (and hash) everything after the end-of-archive marker."""
        self._pos = len(self._buf)
        while self._fill():
            pass
        self._pos = len(self._buf)


# ---- tar headers -----------------------------------------------------------------

@dataclass(slots=True)
class _Header:
    name: bytes
    linkname: bytes
    kind: int
    mode: int
    uid: int
    gid: int
    data_size: int            # bytes of data that follow the header (0 for header-only types)
    mtime_ns: int
    atime_ns: int
    devmajor: int = 0
    devminor: int = 0
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)


def _next_header(stream: _Stream) -> _Header | None:
    """The next entry with its pax / GNU extended headers merged; None at the end of the archive."""
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    for _ in range(_META_RUN_MAX + 1):
        block = stream.block()
        if block is None or block == _ZERO_BLOCK:
            if pax or long_name is not None or long_link is not None:
                raise UnpackError("layer is truncated: the tar stream ends after an extended header")
            return None
        _check_checksum(block)
        typeflag = block[156:157]
        if typeflag in (b"x", b"X", b"g", b"L", b"K"):
            size = _number(block[124:136], "size")
            if size > _META_MAX:
                raise UnpackError(f"tar extended header of {size} bytes is too large")
            data = stream.read(size)
            stream.skip(-size % _BLOCK)
            if typeflag in (b"x", b"X"):
                pax.update(_parse_pax(data))
            elif typeflag == b"L":
                long_name = _cstring(data)
            elif typeflag == b"K":
                long_link = _cstring(data)
            # "g": pax global headers carry nothing we apply (as containerd)
            continue
        return _entry_header(block, typeflag, pax, long_name, long_link)
    raise UnpackError(f"more than {_META_RUN_MAX} tar extended headers in a row")


def _entry_header(block: bytes, typeflag: bytes, pax: dict[bytes, bytes],
                  long_name: bytes | None, long_link: bytes | None) -> _Header:
    name = _cstring(block[0:100])
    if block[257:263] == b"ustar\0":  # POSIX ustar: name continues in "prefix" (GNU uses that space otherwise)
        prefix = _cstring(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    name = pax.get(b"path") or long_name or name
    if typeflag == b"S" or any(k.startswith(b"GNU.sparse.") for k in pax):
        raise UnpackError(f"layer entry {_show(name)}: sparse files are not supported")
    kind = _TYPEFLAGS.get(typeflag)
    if kind is None:
        raise UnpackError(f"layer entry {_show(name)}: unsupported tar entry type {typeflag!r}")
    if typeflag == b"\0" and name.endswith(b"/"):
        kind = _DIR  # pre-POSIX tars mark directories by the trailing slash only
    mtime_ns = _pax_time(pax[b"mtime"]) if b"mtime" in pax else _number(block[136:148], "mtime", signed=True) * 10**9
    hdr = _Header(
        name=name,
        linkname=pax.get(b"linkpath") or long_link or _cstring(block[157:257]),
        kind=kind,
        mode=_number(block[100:108], "mode") & 0o7777,
        uid=_pax_int(pax[b"uid"], "uid") if b"uid" in pax else _number(block[108:116], "uid"),
        gid=_pax_int(pax[b"gid"], "gid") if b"gid" in pax else _number(block[116:124], "gid"),
        data_size=0,
        mtime_ns=mtime_ns,
        atime_ns=_pax_time(pax[b"atime"]) if b"atime" in pax else mtime_ns,
        xattrs=[(k[13:], v) for k, v in pax.items() if k.startswith(b"SCHILY.xattr.")],
    )
    if kind == _REG:  # the other types are header-only, whatever "size" says (as Go's archive/tar)
        hdr.data_size = _pax_int(pax[b"size"], "size") if b"size" in pax else _number(block[124:136], "size")
    elif kind in (_CHR, _BLK):
        hdr.devmajor = _number(block[329:337], "devmajor")
        hdr.devminor = _number(block[337:345], "devminor")
    return hdr


def _check_checksum(block: bytes) -> None:
    want = _number(block[148:156], "checksum")
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20  # the field counts as spaces
    if want == unsigned:
        return
    # Some old tars summed signed chars.
    signed = unsigned - 256 * sum(1 for i, b in enumerate(block) if b & 0x80 and not 148 <= i < 156)
    if want != signed:
        raise UnpackError("layer is not a valid tar stream: header checksum mismatch")


def _cstring(field: bytes) -> bytes:
    return field.partition(b"\0")[0]


def _number(field: bytes, what: str, signed: bool = False) -> int:
    """A numeric header field: NUL/space-terminated octal, or GNU base-256."""
    if field[0] & 0x80:
        if field[0] & 0x40:  # negative (two's complement)
            value = int.from_bytes(field, "big", signed=True)
        else:
            value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    else:
        digits = field.partition(b"\0")[0].strip(b" ")
        if digits.strip(b"01234567"):
            raise UnpackError(f"layer is not a valid tar stream: bad {what} field {field!r}")
        value = int(digits, 8) if digits else 0
    if value < 0 and not signed:
        raise UnpackError(f"layer is not a valid tar stream: negative {what}")
    return value


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    """pax records, "<len> <key>=<value>\\n" each; values are raw bytes (xattrs are binary)."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 20)
        length = data[pos:space]
        if space < 0 or not length.isdigit():
            raise UnpackError("layer is not a valid tar stream: malformed pax record")
        end = pos + int(length)
        eq = data.find(b"=", space + 1, end)
        if end > len(data) or end <= space + 1 or data[end - 1] != 0x0A or eq <= space + 1:
            raise UnpackError("layer is not a valid tar stream: malformed pax record")
        records[data[space + 1:eq]] = data[eq + 1:end - 1]
        pos = end
    return records


def _pax_int(value: bytes, what: str) -> int:
    if not value.isdigit():
        raise UnpackError(f"layer is not a valid tar stream: bad pax {what} {value!r}")
    return int(value)


def _pax_time(value: bytes) -> int:
    """A pax time ("1700000000.123456789", may be negative) in nanoseconds."""
    sign = -1 if value.startswith(b"-") else 1
    whole, _, frac = value.lstrip(b"-").partition(b".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise UnpackError(f"layer is not a valid tar stream: bad pax time {value!r}")
    return sign * (int(whole) * 10**9 + int(frac[:9].ljust(9, b"0")))


def _show(name: bytes) -> str:
    return repr(name.decode("utf-8", "backslashreplace"))


# ---- paths -----------------------------------------------------------------------

class _EntryError(Exception):
    """Why one entry is refused; the writer adds the entry's name."""


def _normalize(name: bytes) -> bytes:
    """The entry's path relative to the layer root, without ".", "" or ".." parts.

    A leading "/" is dropped (OCI: paths are relative to the layer root); ".."
    is resolved lexically and refused where it would leave the root.
    """
    if b"\0" in name:
        raise _EntryError("path contains a NUL byte")
    if not name.startswith((b"/", b"./")) and b"/." not in name and b"//" not in name \
            and name != b"." and not name.startswith(b".."):
        return name.rstrip(b"/")  # the common case: already clean
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part == b"..":
            if not parts:
                raise _EntryError("path leaves the layer directory")
            parts.pop()
        elif part and part != b".":
            parts.append(part)
    return b"/".join(parts)


class _DirFds:
    """Verified directory fds inside the layer, keyed by relative path (LRU).

    Each directory is opened from its parent's fd with O_NOFOLLOW|O_DIRECTORY,
    so a cached fd is a real directory inside the layer, reached without any
    symlink. An fd returned by get() stays open until the next get() or forget().
    """

    def __init__(self, root_fd: int) -> None:
        self._root = root_fd
        self._fds: dict[bytes, int] = {}  # insertion order = least recently used first

    def get(self, rel: bytes, create: bool = True) -> int:
        """The fd of directory `rel`; missing directories are made (mode 0755) if `create`."""
        if not rel:
            return self._root
        fd = self._fds.pop(rel, None)
        if fd is not None:
            self._fds[rel] = fd
            return fd
        # Start from the nearest ancestor we already hold.
        base = rel
        fd = self._root
        while (cut := base.rfind(b"/")) >= 0:
            base = base[:cut]
            if (cached := self._fds.get(base)) is not None:
                fd = cached
                break
        else:
            base = b""
        cur = base
        for part in rel[len(base):].lstrip(b"/").split(b"/"):
            cur = cur + b"/" + part if cur else part
            fd = self._open(fd, part, cur, create)
            self._add(cur, fd)
        return fd

    def _open(self, parent_fd: int, name: bytes, rel: bytes, create: bool) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise _EntryError(f"{_show(rel)} does not exist") from None
        except OSError as e:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise _EntryError(f"{_show(rel)} is a symbolic link; refusing to go through it") from e
            raise _EntryError(f"{_show(rel)} is not a directory") from e
        # An implicit parent (the tar has "a/b" but no "a/"): mode 0755 whatever the umask.
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        os.fchmod(fd, 0o755)
        return fd

    def _add(self, rel: bytes, fd: int) -> None:
        self._fds[rel] = fd
        if len(self._fds) > _DIR_FD_CACHE:
            os.close(self._fds.pop(next(iter(self._fds))))

    def forget(self, rel: bytes) -> None:
        """Drop `rel` and everything below it (the tree was removed)."""
        prefix = rel + b"/"
        for key in [k for k in self._fds if k == rel or k.startswith(prefix)]:
            os.close(self._fds.pop(key))

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])


# ---- writing entries -------------------------------------------------------------

class _Writer:
    """Creates each entry inside the layer root; directory metadata is applied at the end."""

    def __init__(self, root_fd: int, owners: bool, allow_devices: bool) -> None:
        self._dirs = _DirFds(root_fd)
        self._owners = owners
        self._allow_devices = allow_devices
        # Directories' mode, owner, xattrs and times wait until their contents are in:
        # a 0555 directory must still receive entries, and adding entries changes mtime.
        self._dir_meta: dict[bytes, _Header] = {}

    def apply(self, hdr: _Header, stream: _Stream) -> bool:
        """Create one entry; True if it consumed its data from the stream."""
        try:
            return self._apply(hdr, stream)
        except _EntryError as e:
            raise UnpackError(f"layer entry {_show(hdr.name)}: {e}") from None
        except (OSError, ValueError, OverflowError) as e:
            raise UnpackError(f"layer entry {_show(hdr.name)}: {e}") from e

    def _apply(self, hdr: _Header, stream: _Stream) -> bool:
        path = _normalize(hdr.name)
        parent, _, name = path.rpartition(b"/")
        if name.startswith(_WHITEOUT):
            self._whiteout(path, parent, name)
            return False
        if path.startswith(_AUFS_META) or b"/" + _AUFS_META in path:
            return False  # inside AUFS bookkeeping (.wh..wh.plnk/...): not part of the tree
        _check_xattrs(hdr.xattrs)
        kind = hdr.kind
        if kind == _DIR:
            self._dir(path, parent, name, hdr)
            return False
        if not path:
            raise _EntryError("only a directory can be the layer root")
        if kind == _REG:
            self._file(path, parent, name, hdr, stream)
            return True
        if kind == _LINK:
            self._hardlink(path, parent, name, hdr)
        elif kind == _SYMLINK:
            self._symlink(path, parent, name, hdr)
        else:
            self._special(path, parent, name, hdr)
        return False

    def _file(self, path: bytes, parent: bytes, name: bytes, hdr: _Header, stream: _Stream) -> None:
        pfd = self._dirs.get(parent)
        try:
            fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, name, path)  # pfd stays valid: only `path` and below are forgotten
            fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            stream.copy_to(fd, hdr.data_size)
            # Order matters: chown clears setuid bits and security.capability,
            # and writing data clears security.capability too.
            if self._owners:
                os.fchown(fd, hdr.uid, hdr.gid)
            os.fchmod(fd, hdr.mode)
            for key, value in hdr.xattrs:
                os.setxattr(fd, key, value)
            os.utime(fd, ns=(hdr.atime_ns, hdr.mtime_ns))
        finally:
            os.close(fd)

    def _dir(self, path: bytes, parent: bytes, name: bytes, hdr: _Header) -> None:
        if path:
            pfd = self._dirs.get(parent)
            try:
                os.mkdir(name, 0o700, dir_fd=pfd)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode):
                    self._remove(pfd, name, path)
                    os.mkdir(name, 0o700, dir_fd=pfd)
        self._dir_meta[path] = hdr  # a later entry for the same directory wins

    def _symlink(self, path: bytes, parent: bytes, name: bytes, hdr: _Header) -> None:
        pfd = self._dirs.get(parent)
        try:
            os.symlink(hdr.linkname, name, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, name, path)
            os.symlink(hdr.linkname, name, dir_fd=pfd)
        self._node_metadata(pfd, name, hdr, chmod=False)

    def _special(self, path: bytes, parent: bytes, name: bytes, hdr: _Header) -> None:
        """A fifo or a device node."""
        if hdr.kind == _FIFO:
            file_type, device = stat.S_IFIFO, 0
        else:
            if not self._allow_devices and (hdr.kind, hdr.devmajor, hdr.devminor) != (_CHR, 0, 0):
                raise _EntryError("device nodes are not allowed")
            file_type = stat.S_IFCHR if hdr.kind == _CHR else stat.S_IFBLK
            device = os.makedev(hdr.devmajor, hdr.devminor)
        pfd = self._dirs.get(parent)
        try:
            os.mknod(name, file_type | 0o600, device, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, name, path)
            os.mknod(name, file_type | 0o600, device, dir_fd=pfd)
        self._node_metadata(pfd, name, hdr, chmod=True)

    def _hardlink(self, path: bytes, parent: bytes, name: bytes, hdr: _Header) -> None:
        try:
            target = _normalize(hdr.linkname)
        except _EntryError as e:
            raise _EntryError(f"hard link target {_show(hdr.linkname)}: {e}") from None
        if target == path:
            return  # a link to itself: the file is already there
        tparent, _, tname = target.rpartition(b"/")
        if not tname:
            raise _EntryError("hard link to the layer root")
        try:
            tfd = os.dup(self._dirs.get(tparent, create=False))  # dup: the next get() may evict it
        except _EntryError as e:
            raise _EntryError(f"hard link target {_show(hdr.linkname)}: {e}") from None
        try:
            pfd = self._dirs.get(parent)
            try:
                self._link(tfd, tname, pfd, name)
            except FileExistsError:
                self._remove(pfd, name, path)
                self._link(tfd, tname, pfd, name)
        finally:
            os.close(tfd)
        # The link shares the target's inode, whose own entry already set its metadata.

    @staticmethod
    def _link(tfd: int, tname: bytes, pfd: int, name: bytes) -> None:
        try:
            os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise _EntryError(f"hard link target {_show(tname)} does not exist") from None
        except PermissionError:
            # linkat() says EPERM for a directory; anything else is a real permission problem.
            if stat.S_ISDIR(os.stat(tname, dir_fd=tfd, follow_symlinks=False).st_mode):
                raise _EntryError(f"hard link target {_show(tname)} is a directory") from None
            raise

    def _whiteout(self, path: bytes, parent: bytes, name: bytes) -> None:
        pfd = self._dirs.get(parent)
        if name == _OPAQUE:
            os.setxattr(pfd, _OPAQUE_XATTR, b"y")
            return
        if name.startswith(_AUFS_META):
            return  # AUFS bookkeeping (.wh..wh.plnk, ...): nothing to do in overlay form
        hidden = name[len(_WHITEOUT):]
        if hidden in (b"", b".", b".."):
            raise _EntryError("whiteout names no file")
        target = parent + b"/" + hidden if parent else hidden
        try:
            os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, hidden, target)
            os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)

    def _node_metadata(self, pfd: int, name: bytes, hdr: _Header, chmod: bool) -> None:
        """Owner, mode, xattrs and times of a node that cannot be opened (symlink, fifo, device)."""
        if self._owners:
            os.chown(name, hdr.uid, hdr.gid, dir_fd=pfd, follow_symlinks=False)
        if chmod:
            # fchmodat cannot refuse to follow a symlink; `name` is the node we just made.
            os.chmod(name, hdr.mode, dir_fd=pfd)
        if hdr.xattrs:
            # The parent is pinned by its fd; the last component is not followed.
            at = b"/proc/self/fd/%d/%s" % (pfd, name)
            for key, value in hdr.xattrs:
                os.setxattr(at, key, value, follow_symlinks=False)
        os.utime(name, ns=(hdr.atime_ns, hdr.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _remove(self, pfd: int, name: bytes, path: bytes) -> None:
        """Clear the way for an entry that replaces an earlier one at the same path."""
        if stat.S_ISDIR(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode):
            self._dirs.forget(path)
            prefix = path + b"/"
            for key in [k for k in self._dir_meta if k == path or k.startswith(prefix)]:
                del self._dir_meta[key]
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)

    def finish(self) -> None:
        """Apply directory metadata, deepest first (so parents' times and modes come last)."""
        for path in sorted(self._dir_meta, reverse=True):
            hdr = self._dir_meta[path]
            try:
                fd = self._dirs.get(path, create=False)
                if self._owners:
                    os.fchown(fd, hdr.uid, hdr.gid)
                os.fchmod(fd, hdr.mode)
                for key, value in hdr.xattrs:
                    os.setxattr(fd, key, value)
                os.utime(fd, ns=(hdr.atime_ns, hdr.mtime_ns))
            except _EntryError as e:
                raise UnpackError(f"layer entry {_show(hdr.name)}: {e}") from None
            except OSError as e:
                raise UnpackError(f"layer entry {_show(hdr.name)}: {e}") from e

    def close(self) -> None:
        self._dirs.close()


def _check_xattrs(xattrs: list[tuple[bytes, bytes]]) -> None:
    for key, _ in xattrs:
        if key.startswith((b"trusted.overlay.", b"user.overlay.")) and key not in _OPAQUE_XATTRS:
            raise _EntryError(f"xattr {_show(key)} is overlayfs metadata; a layer may not set it")
