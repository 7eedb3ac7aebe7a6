"""Finding helper binaries (runc, crun, conmon, CNI plugins) and asking their version.

Status is polled every few seconds by the kubelet, so a version probe is cached
per binary identity (path, inode, size, mtime): replacing the binary re-probes,
asking again does not spawn a process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass

PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class BinaryInfo:
    name: str
    path: str      # resolved absolute path, "" when not found
    version: str   # first line of `--version`, "" when unusable
    error: str     # why it is unusable, "" when usable

    @property
    def usable(self) -> bool:
        return not self.error


def resolve(name: str) -> str | None:
    """An absolute path for `name` (a path, or a name looked up on PATH), if executable."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name)


_cache: dict[tuple[str, int, int, int, tuple[str, ...]], tuple[str, str]] = {}


async def probe(name: str, args: tuple[str, ...] = ("--version",)) -> BinaryInfo:
    """The binary and the first line of what `args` prints."""
    path, text, error = await output(name, args)
    return BinaryInfo(name, path, text.splitlines()[0] if text else "", error)


async def output(name: str, args: tuple[str, ...]) -> tuple[str, str, str]:
    """(path, whole output, error) of running the binary with `args`, cached per
    binary identity and arguments."""
    path = resolve(name)
    if path is None:
        where = "" if os.sep in name else " on PATH"
        return "", "", f"{name} not found{where}"
    try:
        st = os.stat(path)
    except OSError as e:
        return path, "", f"{path}: {e.strerror}"
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns, args)
    if key not in _cache:
        _cache[key] = await _run(path, args)
    text, error = _cache[key]
    return path, text, error


async def _run(path: str, args: tuple[str, ...]) -> tuple[str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            path, *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        return "", f"{path}: cannot execute: {e.strerror}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return "", f"{path} {' '.join(args)} did not answer within {PROBE_TIMEOUT:g}s"
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        return "", f"{path} {' '.join(args)} exited {proc.returncode}: {text[:200]}"
    return text, ""
