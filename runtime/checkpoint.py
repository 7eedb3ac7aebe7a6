"""Container checkpoints with CRIU, through the OCI runtime's `checkpoint` command.

CRIU needs kernel features a host may lack (in VMs and sandboxed kernels `criu
check` often fails); that is found out once, and CheckpointContainer then says
so instead of failing half-way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

from runtime import errors

_check: tuple[bool, str] | None = None


async def criu_available(criu: str = "criu") -> tuple[bool, str]:
    """Whether CRIU works on this host, and why not (checked once per daemon)."""
    global _check
    if _check is None:
        path = shutil.which(criu)
        if path is None:
            _check = (False, "criu is not installed (Debian package criu)")
        else:
            proc = await asyncio.create_subprocess_exec(path, "check", stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            out, _ = await proc.communicate()
            lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
            _check = (True, "") if proc.returncode == 0 else (
                False, f"`criu check` fails on this host: {lines[-1] if lines else proc.returncode}")
    return _check


async def checkpoint(runtime_path: str, root: str, container_id: str, bundle: str, location: str,
                     *, work_dir: str, timeout: float | None) -> None:
    """Dump a running container (it keeps running) and write the images and its OCI config
    into the tar archive `location`."""
    ok, why = await criu_available()
    if not ok:
        raise errors.FailedPrecondition(f"cannot checkpoint container {container_id}: {why}")
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="checkpoint-", dir=work_dir)
    try:
        images = os.path.join(tmp, "checkpoint")
        await _run([runtime_path, f"--root={root}", "checkpoint", "--leave-running",
                    f"--image-path={images}", f"--work-path={os.path.join(tmp, 'work')}", container_id],
                   timeout)
        shutil.copyfile(os.path.join(bundle, "config.json"), os.path.join(tmp, "config.json"))
        os.makedirs(os.path.dirname(os.path.abspath(location)), exist_ok=True)
        await _run(["tar", "-C", tmp, "-czf", location, "checkpoint", "config.json"], timeout)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _run(argv: list[str], timeout: float | None) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise errors.DeadlineExceeded(f"{os.path.basename(argv[0])} {argv[1]} took longer than {timeout}s") \
            from None
    if proc.returncode != 0:
        raise errors.FailedPrecondition(
            f"{os.path.basename(argv[0])} failed: {out.decode(errors='replace').strip()[-500:]}")
