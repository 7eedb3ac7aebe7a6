"""The layer unpacker: entry types, metadata, whiteouts, compression, limits, and hostile layers."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import subprocess
import tarfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from runtime.images.unpack import (
    LayerTooLarge, UnpackError, UnpackLimits, UnpackResult, detect_compression, unpack_layer,
)

Member = tuple[tarfile.TarInfo, bytes]
MTIME = 1_600_000_000

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (chown to other ids, mknod, trusted.* xattrs)")


# ---- building layers ---------------------------------------------------------------

def _info(name: str, type_: bytes, mode: int, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = type_, mode, MTIME
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def reg(name: str, data: bytes = b"", mode: int = 0o644, **attrs: object) -> Member:
    return _info(name, tarfile.REGTYPE, mode, size=len(data), **attrs), data


def dirent(name: str, mode: int = 0o755, **attrs: object) -> Member:
    return _info(name, tarfile.DIRTYPE, mode, **attrs), b""


def symlink(name: str, target: str, **attrs: object) -> Member:
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target, **attrs), b""


def hardlink(name: str, target: str) -> Member:
    return _info(name, tarfile.LNKTYPE, 0o644, linkname=target), b""


def fifo(name: str, mode: int = 0o640, **attrs: object) -> Member:
    return _info(name, tarfile.FIFOTYPE, mode, **attrs), b""


def device(name: str, type_: bytes, major: int, minor: int) -> Member:
    return _info(name, type_, 0o600, devmajor=major, devminor=minor), b""


def tar(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def unpack(data: bytes, dest: Path, compression: str = "none",
           limits: UnpackLimits = UnpackLimits()) -> UnpackResult:
    return unpack_layer(io.BytesIO(data), str(dest), compression, limits)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "layer"
    d.mkdir()
    return d


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sibling of the layer directory that no layer may touch."""
    d = tmp_path / "outside"
    d.mkdir()
    d.chmod(0o755)
    (d / "secret").write_bytes(b"secret")
    return d


def assert_untouched(tmp_path: Path, outside: Path) -> None:
    assert sorted(os.listdir(tmp_path)) == ["layer", "outside"]
    assert os.listdir(outside) == ["secret"]
    secret = outside / "secret"
    assert secret.read_bytes() == b"secret"
    assert os.lstat(secret).st_nlink == 1
    assert stat.S_IMODE(os.lstat(outside).st_mode) == 0o755


def _umask() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError("no Umask in /proc/self/status")


def _xattrs_supported(path: Path) -> bool:
    probe = path / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


# ---- ordinary layers -------------------------------------------------------------------

def test_unpacks_files_dirs_links_and_fifos(dest: Path) -> None:
    unpack(tar(
        dirent("etc"),
        reg("etc/hosts", b"127.0.0.1 localhost\n"),
        reg("usr/lib/deep/file", b"x" * 5000),       # parents not in the tar
        symlink("etc/abs", "/etc/hosts"),            # absolute targets are just data
        symlink("etc/rel", "../usr/lib"),
        hardlink("etc/hosts2", "etc/hosts"),
        fifo("run.fifo"),
        reg("empty"),
    ), dest)
    assert (dest / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert (dest / "usr/lib/deep/file").read_bytes() == b"x" * 5000
    assert stat.S_IMODE(os.stat(dest / "usr/lib").st_mode) == 0o755  # implicit parents
    assert os.readlink(dest / "etc/abs") == "/etc/hosts"
    assert os.readlink(dest / "etc/rel") == "../usr/lib"
    assert os.stat(dest / "etc/hosts2").st_ino == os.stat(dest / "etc/hosts").st_ino
    assert stat.S_ISFIFO(os.lstat(dest / "run.fifo").st_mode)
    assert stat.S_IMODE(os.lstat(dest / "run.fifo").st_mode) == 0o640
    assert (dest / "empty").read_bytes() == b""


def test_diff_id_covers_the_whole_uncompressed_stream(dest: Path) -> None:
    data = tar(reg("a", b"hello"), dirent("d")) + b"\0" * 4096 + b"trailing bytes"
    result = unpack(data, dest)
    assert result == UnpackResult("sha256:" + hashlib.sha256(data).hexdigest(), len(data), 2)


def _gzip_members(data: bytes) -> bytes:
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:]) + b"\0" * 10


def _zstd_frames(data: bytes) -> bytes:
    c = zstandard.ZstdCompressor()
    return c.compress(data[:700]) + c.compress(data[700:])


@pytest.mark.parametrize("compression, encode", [
    ("none", lambda b: b),
    ("gzip", gzip.compress),
    ("gzip", _gzip_members),
    ("zstd", zstandard.ZstdCompressor().compress),
    ("zstd", _zstd_frames),
], ids=["none", "gzip", "gzip-members", "zstd", "zstd-frames"])
def test_compressions(dest: Path, compression: str, encode: Callable[[bytes], bytes]) -> None:
    data = tar(reg("a", os.urandom(3000)), reg("b/c", b"y" * 100_000))
    result = unpack(encode(data), dest, compression)
    assert result.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    assert (dest / "b/c").read_bytes() == b"y" * 100_000


def test_reads_a_pipe_sequentially(dest: Path) -> None:
    data = gzip.compress(tar(*(reg(f"f{i}", os.urandom(20_000)) for i in range(50))))
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as out:
            out.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with os.fdopen(r, "rb", buffering=0) as src:
        result = unpack_layer(src, str(dest), "gzip")
    feeder.join()
    assert result.entries == 50
    assert result.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "layer-read-ahead"]


def test_an_early_error_on_a_pipe_does_not_hang(dest: Path) -> None:
    """The unpacker stops reading mid-stream; the feeder gets EPIPE once the caller closes the pipe."""
    data = tar(reg("../evil"), *(reg(f"f{i}", os.urandom(100_000)) for i in range(100)))
    r, w = os.pipe()
    broken: list[BaseException] = []

    def feed() -> None:
        try:
            with os.fdopen(w, "wb") as out:
                out.write(data)
        except BrokenPipeError as e:
            broken.append(e)

    feeder = threading.Thread(target=feed)
    feeder.start()
    src = os.fdopen(r, "rb")
    with pytest.raises(UnpackError, match="path leaves the layer directory"):
        unpack_layer(src, str(dest), "none")
    assert not _read_ahead_threads()
    src.close()  # as the caller does
    feeder.join(timeout=10)
    assert not feeder.is_alive() and broken


def test_source_errors(dest: Path, tmp_path: Path) -> None:
    class Failing(io.RawIOBase):
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise self.error

    with pytest.raises(UnpackError, match="reading the layer stream: .*connection reset"):
        unpack_layer(io.BufferedReader(Failing(ConnectionResetError("connection reset"))), str(dest), "gzip")
    # Not ours to translate: the caller's own exceptions come back unchanged.
    with pytest.raises(KeyError):
        unpack_layer(io.BufferedReader(Failing(KeyError("x"))), str(dest), "none")
    assert not _read_ahead_threads()
    with pytest.raises(UnpackError, match="cannot open the layer directory"):
        unpack(tar(reg("a")), tmp_path / "missing")


def _make_removable(path: Path) -> None:
    """Undo a layer's restrictive directory modes so a non-root pytest can delete its tmp dirs."""
    path.chmod(0o755)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            _make_removable(child)


def test_modes_times_and_read_only_directories(dest: Path) -> None:
    try:
        _check_modes_and_times(dest)
    finally:
        _make_removable(dest)


def _check_modes_and_times(dest: Path) -> None:
    ns_mtime = {"mtime": "1600000000.123456789"}
    unpack(tar(
        dirent("ro", 0o555),
        reg("ro/inside", b"data", 0o600),
        dirent("ro/sub", 0o500),
        reg("ro/sub/deeper", b"x", 0o400),
        reg("exe", b"#!", 0o751, pax_headers=ns_mtime),
        dirent("sticky", 0o1777),
        dirent("noexec", 0o600), dirent("noexec/sub", 0o750),  # a child must be reachable when set
    ), dest)
    assert stat.S_IMODE(os.stat(dest / "noexec").st_mode) == 0o600
    (dest / "noexec").chmod(0o700)  # let a non-root test look inside
    assert stat.S_IMODE(os.lstat(dest / "noexec/sub").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(dest / "ro/sub").st_mode) == 0o500
    assert (dest / "ro/sub/deeper").read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(dest / "exe").st_mode) == 0o751
    assert stat.S_IMODE(os.stat(dest / "sticky").st_mode) == 0o1777
    assert os.stat(dest / "exe").st_mtime_ns == 1_600_000_000_123_456_789
    # Directory times are set after their contents went in.
    assert os.stat(dest / "ro").st_mtime_ns == MTIME * 10**9
    assert os.stat(dest / "ro/sub").st_mtime_ns == MTIME * 10**9


def test_later_entries_replace_earlier_ones(dest: Path, tmp_path: Path, outside: Path) -> None:
    unpack(tar(
        reg("f", b"first"), reg("f", b"second"),                       # file over file
        reg("d/x", b"1"), dirent("d/sub"), reg("d/sub/y"), reg("d", b"now a file"),  # file over a tree
        reg("e", b"file"), dirent("e", 0o700), reg("e/z", b"z"),        # dir over file
        dirent("m", 0o700), dirent("m", 0o750),                         # dir entry updates a dir
        symlink("s", str(outside / "secret")), reg("s", b"mine"),       # file over symlink: no write-through
        symlink("t", str(outside)), dirent("t"),                        # dir over symlink
    ), dest)
    assert (dest / "f").read_bytes() == b"second"
    assert (dest / "d").read_bytes() == b"now a file"
    assert (dest / "e/z").read_bytes() == b"z"
    assert stat.S_IMODE(os.stat(dest / "m").st_mode) == 0o750
    assert (dest / "s").read_bytes() == b"mine" and not (dest / "s").is_symlink()
    assert (dest / "t").is_dir() and not (dest / "t").is_symlink()
    assert_untouched(tmp_path, outside)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_long_names_and_link_names(dest: Path, fmt: int) -> None:
    deep = "/".join(["d" * 60] * 5) + "/file"
    unpack(tar(reg(deep, b"deep"), symlink("l", "t" * 300), hardlink("h", deep), fmt=fmt), dest)
    assert (dest / deep).read_bytes() == b"deep"
    assert os.readlink(dest / "l") == "t" * 300
    assert os.stat(dest / "h").st_ino == os.stat(dest / deep).st_ino


def test_absolute_entry_paths_are_relative_to_the_layer(dest: Path, tmp_path: Path, outside: Path) -> None:
    unpack(tar(reg("/abs/file", b"a"), reg("./dot/file", b"b"), reg("x/../y", b"c")), dest)
    assert (dest / "abs/file").read_bytes() == b"a"
    assert (dest / "dot/file").read_bytes() == b"b"
    assert (dest / "y").read_bytes() == b"c"
    assert_untouched(tmp_path, outside)


def test_dotdot_after_a_symlink_is_resolved_lexically(dest: Path, tmp_path: Path, outside: Path) -> None:
    # "s/../x" never follows s: it is "x" in the layer root.
    unpack(tar(symlink("s", ".."), reg("s/../x", b"x")), dest)
    assert (dest / "x").read_bytes() == b"x"
    assert_untouched(tmp_path, outside)


def test_aufs_metadata_is_skipped(dest: Path) -> None:
    unpack(tar(dirent(".wh..wh.plnk"), reg(".wh..wh.plnk/123.456", b"x"), reg("keep")), dest)
    assert os.listdir(dest) == ["keep"]


def test_destination_must_be_empty(dest: Path) -> None:
    (dest / "old").write_bytes(b"")
    with pytest.raises(UnpackError, match="not empty"):
        unpack(tar(reg("a")), dest)


def test_no_cwd_or_umask_changes_and_threads_work(tmp_path: Path) -> None:
    cwd, umask = os.getcwd(), _umask()
    layers = [tar(*(reg(f"d{n}/f{i}", os.urandom(1000)) for i in range(200))) for n in range(4)]
    results: list[UnpackResult] = [UnpackResult("", 0, 0)] * 4

    def run(n: int) -> None:
        (tmp_path / str(n)).mkdir()
        results[n] = unpack(gzip.compress(layers[n]), tmp_path / str(n), "gzip")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(4):
        assert results[n].diff_id == "sha256:" + hashlib.sha256(layers[n]).hexdigest()
        assert len(os.listdir(tmp_path / str(n) / f"d{n}")) == 200
    assert (os.getcwd(), _umask()) == (cwd, umask)


# ---- root: owners, special bits, xattrs, devices, whiteouts, overlay ----------------------

@needs_root
def test_ownership_and_special_bits(dest: Path) -> None:
    unpack(tar(
        dirent("shared", 0o2775, uid=1234, gid=5678),
        reg("shared/suid", b"#!", 0o4755, uid=1234, gid=5678, uname="ignored", gname="ignored"),
        reg("sgid", b"", 0o2711, uid=0, gid=50),
        symlink("link", "suid", uid=42, gid=43),
        fifo("pipe", 0o620, uid=7, gid=8),
    ), dest)
    st = os.stat(dest / "shared/suid")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)
    st = os.stat(dest / "shared")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o2775)
    assert stat.S_IMODE(os.stat(dest / "sgid").st_mode) == 0o2711
    st = os.lstat(dest / "link")
    assert (st.st_uid, st.st_gid) == (42, 43)
    st = os.lstat(dest / "pipe")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (7, 8, 0o620)


@needs_root
def test_large_ids_in_gnu_base256_and_pax(dest: Path) -> None:
    big = 3_000_000_000
    unpack(tar(reg("gnu", uid=big, gid=big), fmt=tarfile.GNU_FORMAT) , dest)
    (dest.parent / "pax").mkdir()
    unpack(tar(reg("pax", uid=big, gid=big)), dest.parent / "pax")
    assert os.stat(dest / "gnu").st_uid == big
    assert os.stat(dest.parent / "pax/pax").st_gid == big


@needs_root
def test_xattrs_and_file_capabilities_survive_chown(dest: Path) -> None:
    if not _xattrs_supported(dest.parent):
        pytest.skip("the temporary file system has no xattr support")
    # VFS_CAP_REVISION_2, effective; permitted = CAP_NET_BIND_SERVICE (10).
    cap = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)
    pax = {"SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
           "SCHILY.xattr.user.note": "hello"}
    unpack(tar(
        reg("bin/ping", b"\x7fELF", 0o755, uid=1000, gid=1000, pax_headers=pax),
        dirent("dir", pax_headers={"SCHILY.xattr.user.tag": "d"}),
    ), dest)
    assert os.getxattr(dest / "bin/ping", "security.capability") == cap
    assert os.getxattr(dest / "bin/ping", "user.note") == b"hello"
    assert os.stat(dest / "bin/ping").st_uid == 1000
    assert os.getxattr(dest / "dir", "user.tag") == b"d"


@needs_root
def test_whiteouts_become_overlay_markers(dest: Path) -> None:
    unpack(tar(
        reg(".wh.gone"),
        dirent("d"), reg("d/.wh..wh..opq"), reg("d/new", b"n"),
        reg("implicit/.wh..wh..opq"),
        reg("implicit/.wh.f"),
    ), dest)
    st = os.lstat(dest / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(dest / "d", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest / "implicit", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(dest / "implicit/f").st_mode)
    assert sorted(os.listdir(dest)) == ["d", "gone", "implicit"]
    assert os.listdir(dest / "d") == ["new"]


@needs_root
def test_devices_follow_allow_devices(dest: Path, tmp_path: Path) -> None:
    unpack(tar(device("null", tarfile.CHRTYPE, 1, 3), device("sda", tarfile.BLKTYPE, 8, 0)), dest)
    assert os.lstat(dest / "null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(os.lstat(dest / "sda").st_mode)
    strict = UnpackLimits(allow_devices=False)
    (tmp_path / "wh").mkdir()
    unpack(tar(device("wh", tarfile.CHRTYPE, 0, 0)), tmp_path / "wh", limits=strict)  # a whiteout
    (tmp_path / "dev").mkdir()
    with pytest.raises(UnpackError, match="layer entry 'null': device nodes are not allowed"):
        unpack(tar(device("null", tarfile.CHRTYPE, 1, 3)), tmp_path / "dev", limits=strict)


@needs_root
def test_overlay_mount_of_two_layers(tmp_path: Path) -> None:
    lower, upper, mnt = tmp_path / "lower", tmp_path / "upper", tmp_path / "mnt"
    for d in (lower, upper, mnt):
        d.mkdir()
    unpack(tar(reg("f", b"f"), dirent("d"), reg("d/x", b"x"), reg("keep", b"k")), lower)
    unpack(tar(reg(".wh.f"), dirent("d"), reg("d/.wh..wh..opq"), reg("g", b"g")), upper)
    mount = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={upper}:{lower}", str(mnt)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount overlayfs here: {mount.stderr.strip()}")
    try:
        assert sorted(os.listdir(mnt)) == ["d", "g", "keep"]
        assert os.listdir(mnt / "d") == []
        assert (mnt / "keep").read_bytes() == b"k"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---- hostile layers ----------------------------------------------------------------------

HOSTILE: list[tuple[str, Callable[[str], list[Member]], str]] = [
    ("dotdot", lambda out: [reg("../evil", b"x")], "'../evil': path leaves the layer directory"),
    ("abs-dotdot", lambda out: [reg("/../evil", b"x")], "path leaves the layer directory"),
    ("inner-dotdot", lambda out: [reg("a/../../evil", b"x")], "path leaves the layer directory"),
    ("pax-path", lambda out: [reg("ok", b"x", pax_headers={"path": "../evil"})], "path leaves"),
    ("through-symlink", lambda out: [symlink("s", out), reg("s/file", b"x")],
     "layer entry 's/file': 's' is a symbolic link"),
    ("through-relative-symlink", lambda out: [symlink("s", "../../.."), reg("s/x", b"x")], "symbolic link"),
    ("dir-through-symlink", lambda out: [symlink("s", out), dirent("s/sub")], "symbolic link"),
    ("deep-through-symlink", lambda out: [dirent("a"), symlink("a/b", out), reg("a/b/c/d", b"x")],
     "'a/b' is a symbolic link"),
    ("dotdot-into-symlink", lambda out: [symlink("s", out), reg("x/../s/file", b"x")], "symbolic link"),
    ("hardlink-etc-passwd", lambda out: [hardlink("h", "/etc/passwd")], "does not exist"),
    ("hardlink-dotdot", lambda out: [hardlink("h", "../outside/secret")],
     "hard link target '../outside/secret': path leaves the layer directory"),
    ("hardlink-through-symlink", lambda out: [symlink("s", out), hardlink("h", "s/secret")],
     "hard link target 's/secret': 's' is a symbolic link"),
    ("hardlink-name-through-symlink", lambda out: [reg("a"), symlink("s", out), hardlink("s/h", "a")],
     "'s' is a symbolic link"),
    ("symlink-name-through-symlink", lambda out: [symlink("s", out), symlink("s/l", "/etc")], "symbolic link"),
    ("fifo-through-symlink", lambda out: [symlink("s", out), fifo("s/p")], "symbolic link"),
    ("hardlink-to-dir", lambda out: [dirent("d"), hardlink("h", "d")], "is a directory"),
    ("whiteout-through-symlink", lambda out: [symlink("s", out), reg("s/.wh.secret")], "symbolic link"),
    ("opaque-through-symlink", lambda out: [symlink("s", out), reg("s/.wh..wh..opq")], "symbolic link"),
    ("file-under-file", lambda out: [reg("f"), reg("f/g")], "'f' is not a directory"),
    # A directory replaced by another type must not stay usable as a parent.
    ("dir-replaced-by-file", lambda out: [reg("d/x"), reg("d", b"f"), reg("d/y")], "'d' is not a directory"),
    ("dir-replaced-by-symlink", lambda out: [reg("d/x"), symlink("d", out), reg("d/y")],
     "'d' is a symbolic link"),
    ("overlay-redirect", lambda out: [dirent("d", pax_headers={"SCHILY.xattr.trusted.overlay.redirect": "/x"})],
     "overlayfs metadata"),
    ("root-as-file", lambda out: [reg("./", b"x")], "only a directory can be the layer root"),
]


@pytest.mark.parametrize("build, message", [(b, m) for _, b, m in HOSTILE], ids=[i for i, _, _ in HOSTILE])
def test_hostile_layers_are_refused(dest: Path, tmp_path: Path, outside: Path,
                                    build: Callable[[str], list[Member]], message: str) -> None:
    passwd = os.stat("/etc/passwd")
    with pytest.raises(UnpackError, match=message.replace("(", r"\(")):
        unpack(tar(*build(str(outside))), dest)
    assert_untouched(tmp_path, outside)
    assert not _read_ahead_threads()
    after = os.stat("/etc/passwd")
    assert (after.st_nlink, after.st_mtime_ns, after.st_ctime_ns) == \
        (passwd.st_nlink, passwd.st_mtime_ns, passwd.st_ctime_ns)


def test_gzip_bomb_is_stopped_early(dest: Path) -> None:
    """1 GiB of zeros in ~1 MB of concatenated gzip members, against a 4 MiB limit."""
    zeros = gzip.compress(bytes(16 << 20), compresslevel=9)
    header = tarfile.TarInfo("bomb")
    header.size = 1 << 30
    bomb = gzip.compress(header.tobuf(tarfile.PAX_FORMAT)) + zeros * 64
    src = io.BytesIO(bomb)
    start = time.monotonic()
    with pytest.raises(LayerTooLarge, match="larger than 4194304 bytes"):
        unpack_layer(src, str(dest), "gzip", UnpackLimits(max_bytes=4 << 20))
    assert time.monotonic() - start < 2
    assert src.tell() < len(bomb) // 2  # one 256 KiB read of ~1 MB
    assert (dest / "bomb").stat().st_size <= 4 << 20
    assert not _read_ahead_threads()


def test_too_many_entries(dest: Path) -> None:
    with pytest.raises(LayerTooLarge, match="more than 10 entries"):
        unpack(tar(*(reg(f"f{i}") for i in range(20))), dest, limits=UnpackLimits(max_entries=10))
    assert len(os.listdir(dest)) == 10


# ---- malformed streams -------------------------------------------------------------------

def _bad_checksum() -> bytes:
    data = bytearray(tar(reg("a", b"x")))
    data[0] ^= 0x01
    return bytes(data)


def _unknown_type() -> bytes:
    info, _ = reg("weird")
    info.type = b"Z"
    return tar((info, b""))


MALFORMED: list[tuple[str, Callable[[], bytes], str, str]] = [
    ("bad-checksum", _bad_checksum, "none", "header checksum mismatch"),
    ("truncated-data", lambda: tar(reg("a", b"x" * 5000))[:2048], "none", "truncated"),
    ("truncated-header", lambda: tar(reg("a", b"x"))[:1024 + 100], "none", "truncated"),
    ("truncated-gzip", lambda: gzip.compress(tar(reg("a", os.urandom(5000))))[:-20], "gzip", "truncated"),
    ("gzip-garbage-after", lambda: gzip.compress(tar(reg("a"))) + b"junk", "gzip", "gzip"),
    ("not-gzip", lambda: tar(reg("a")), "gzip", "gzip"),
    ("not-zstd", lambda: tar(reg("a")), "zstd", "zstd"),
    ("empty-gzip", lambda: b"", "gzip", "empty"),
    ("unknown-type", _unknown_type, "none", "unsupported tar entry type"),
    ("sparse", lambda: tar(reg("s", pax_headers={"GNU.sparse.major": "1"})), "none", "sparse files"),
    ("bad-pax", lambda: tar(reg("a", pax_headers={"path": "a"})).replace(b"path=a", b"path+a"), "none",
     "malformed pax record"),
]


@pytest.mark.parametrize("build, compression, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_streams(dest: Path, build: Callable[[], bytes], compression: str, message: str) -> None:
    with pytest.raises(UnpackError, match=message):
        unpack(build(), dest, compression)


def test_empty_layer_and_missing_end_marker(dest: Path, tmp_path: Path) -> None:
    assert unpack(bytes(1024), dest).entries == 0  # docker's empty layer: two zero blocks
    (tmp_path / "no-marker").mkdir()
    data = tar(reg("a", b"x"))[:1024]  # header + data, no end-of-archive blocks
    assert unpack(data, tmp_path / "no-marker").entries == 1


# ---- detect_compression -------------------------------------------------------------------

@pytest.mark.parametrize("media_type, head, expected", [
    ("application/vnd.oci.image.layer.v1.tar+gzip", b"\x1f\x8b\x08", "gzip"),
    ("application/vnd.oci.image.layer.v1.tar+zstd", b"\x28\xb5\x2f\xfd", "zstd"),
    ("application/vnd.oci.image.layer.v1.tar", b"etc/", "none"),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", b"", "gzip"),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", b"", "gzip"),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", b"", "gzip"),
    ("", b"\x1f\x8b\x08", "gzip"),
    ("", b"\x28\xb5\x2f\xfd\x00", "zstd"),
    ("", b"bin/", "none"),
    ("application/vnd.oci.image.layer.v1.tar+gzip", b"\x28\xb5\x2f\xfd", "zstd"),  # mislabelled
])
def test_detect_compression(media_type: str, head: bytes, expected: str) -> None:
    assert detect_compression(media_type, head) == expected


def test_detect_compression_refuses_unknown_media_types() -> None:
    with pytest.raises(UnpackError, match="unsupported layer media type 'application/x-foo'"):
        detect_compression("application/x-foo", b"\x1f\x8b")


def test_compression_names_are_checked(dest: Path) -> None:
    with pytest.raises(UnpackError, match="unknown compression 'lz4'"):
        unpack(tar(reg("a")), dest, "lz4")


def test_zlib_is_stdlib_gzip_compatible() -> None:
    # The concatenated-member test above relies on gzip.compress making single members.
    assert zlib.decompress(gzip.compress(b"abc"), 16 + zlib.MAX_WBITS) == b"abc"
