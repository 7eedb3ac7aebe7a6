"""Layer compression: which one a blob uses, and streaming decompressors.

Every decompressor here is a pull function `read(n) -> bytes` that returns at
most `n` uncompressed bytes per call (b"" at the end), so the caller can count
output and stop a decompression bomb after at most one chunk. None of them
ever seeks the source: it may be a pipe or an HTTP body.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import IO, BinaryIO, cast

import zstandard

GZIP = "gzip"
ZSTD = "zstd"
NONE = "none"

# Compressed bytes read from the source per call. Kept below the output chunk
# so a zlib call never holds a large unconsumed tail to copy around.
_IN_CHUNK = 256 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Layer media types we unpack. "foreign"/"nondistributable" layers are ordinary
# tars that registries may not redistribute; once fetched they unpack the same.
_MEDIA_TYPES: dict[str, str] = {
    "application/vnd.oci.image.layer.v1.tar": NONE,
    "application/vnd.oci.image.layer.v1.tar+gzip": GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd": ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": NONE,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar": NONE,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar": NONE,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": GZIP,
}

Reader = Callable[[int], bytes]


class DecompressionError(Exception):
    """The compressed stream is malformed, truncated, or cannot be read."""


def for_media_type(media_type: str) -> str | None:
    """The compression a layer media type names; None if it is not a layer type we know."""
    return _MEDIA_TYPES.get(media_type.split(";", 1)[0].strip().lower())


def sniff(head: bytes) -> str:
    """The compression the first bytes of a blob show by their magic number."""
    if head.startswith(_GZIP_MAGIC):
        return GZIP
    if head.startswith(_ZSTD_MAGIC):
        return ZSTD
    return NONE


def open_reader(src: BinaryIO, compression: str) -> Reader:
    """A bounded-output pull function over `src` for the named compression."""
    if compression == GZIP:
        return _GzipReader(src).read
    if compression == ZSTD:
        return _zstd_reader(src)
    if compression == NONE:
        return _guarded_read(src)
    raise DecompressionError(f"unknown compression {compression!r}")


def _guarded_read(src: BinaryIO) -> Reader:
    """src.read with I/O errors turned into DecompressionError."""
    def read(n: int) -> bytes:
        try:
            data = src.read(n)
        except OSError as e:
            raise DecompressionError(f"reading the layer stream: {e}") from e
        if data is None:
            raise DecompressionError("the layer stream is non-blocking; it must block")
        return data
    return read


class _GzipReader:
    """RFC 1952 gzip, including several concatenated members (as `pigz` and
    `cat a.gz b.gz` make). NUL padding after a member is skipped, as gzip(1) does;
    any other trailing bytes are an error."""

    def __init__(self, src: BinaryIO) -> None:
        self._read_src = _guarded_read(src)
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""      # compressed input not yet given to self._zlib
        self._started = False    # the current member has received input

    def read(self, n: int) -> bytes:
        while True:
            if not self._pending:
                self._pending = self._read_src(_IN_CHUNK)
                if not self._pending:
                    if self._started and not self._zlib.eof:
                        raise DecompressionError("gzip stream is truncated")
                    if not self._started:
                        raise DecompressionError("gzip stream is empty")
                    return b""
            if self._zlib.eof:
                self._next_member()
                if not self._pending:
                    continue
            self._started = True
            try:
                out = self._zlib.decompress(self._pending, n)
            except zlib.error as e:
                raise DecompressionError(f"gzip: {e}") from e
            self._pending = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
            if out:
                return out

    def _next_member(self) -> None:
        """After a member's end: drop NUL padding; anything else starts a new member."""
        self._pending = self._pending.lstrip(b"\0")
        if self._pending:
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)


class _GuardedSource:
    """A file-like view of src for zstandard, with I/O errors turned into DecompressionError."""

    def __init__(self, src: BinaryIO) -> None:
        self.read = _guarded_read(src)


def _zstd_reader(src: BinaryIO) -> Reader:
    """zstd frames, read across frame boundaries (and past skippable frames).

    zstandard's stream reader bounds each call's output, which is what stops a
    bomb; it does not report a stream cut inside a frame. Such a cut shows up as
    a truncated tar, or at the latest as a diff_id mismatch."""
    guarded = cast(IO[bytes], _GuardedSource(src))  # stream_reader only calls .read()
    reader = zstandard.ZstdDecompressor().stream_reader(
        guarded, read_size=_IN_CHUNK, read_across_frames=True, closefd=False)

    def read(n: int) -> bytes:
        try:
            return reader.read(n)
        except zstandard.ZstdError as e:
            raise DecompressionError(f"zstd: {e}") from e
    return read
