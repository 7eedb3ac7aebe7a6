"""The runc + conmon driver against real runc, conmon and a busybox bundle (needs root).

The busybox image comes from the local test registry once per session (skopeo + umoci);
each container's rootfs is an overlay on that one unpacked copy. Containers share the
host network, live in cgroups under a test-only parent, and see a host directory at /w
where they drop marker files the test waits for (inotify, no polling from the test).

Run with -s to see the measured latencies and conmon's memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runtime import errors
from runtime.oci.dirwatch import DirWatcher
from runtime.oci.runc import RuncConmon
from runtime.oci.runtime import OCIError
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

REPO = Path(__file__).resolve().parents[2]
REGISTRY = TEST_REGISTRY
IMAGE = "e2e-test-images/busybox:1.29-2"
RUNC = "/usr/sbin/runc"
CRUN = "/usr/bin/crun"
CONMON = "/usr/bin/conmon"
# <RFC3339Nano timestamp> <stream> <F|P> <text>: the CRI log format the kubelet parses
CRI_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([FP]) (.*)")



def _missing_tools() -> list[str]:
    need = {"runc": RUNC, "conmon": CONMON, "skopeo": shutil.which("skopeo"), "umoci": shutil.which("umoci")}
    return [name for name, path in need.items() if not path or not os.access(path, os.X_OK)]


@pytest.fixture(scope="session")
def busybox() -> Iterator[tuple[Path, dict[str, Any]]]:
    """The unpacked busybox rootfs and umoci's config.json for it, once per session."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if _missing_tools():
        pytest.skip(f"missing tools: {', '.join(_missing_tools())}")
    if not registry_is_up():
        pytest.skip(f"the test registry at {REGISTRY} does not answer")
    base = Path(tempfile.mkdtemp(prefix="crs-busybox-"))
    try:
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{REGISTRY}/{IMAGE}",
                        f"oci:{base / 'oci'}:img"], check=True)
        subprocess.run(["umoci", "unpack", "--image", f"{base / 'oci'}:img", str(base / "bundle")],
                       check=True, capture_output=True)
        yield base / "bundle" / "rootfs", json.loads((base / "bundle" / "config.json").read_text())
    finally:
        shutil.rmtree(base)


def _cgroup_mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[2] in ("cgroup", "cgroup2")]


def _rmdir_cgroup(rel: str) -> None:
    """rmdir a cgroup and its children in every hierarchy (runc delete removes the leaves)."""
    for mount in _cgroup_mounts():
        top = mount + rel
        if os.path.isdir(top):
            for root, dirs, _ in os.walk(top, topdown=False):
                for d in dirs:
                    os.rmdir(os.path.join(root, d))
            os.rmdir(top)


def _conmons_under(path: str) -> list[int]:
    """Live conmon processes whose command line mentions `path`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue   # exited while we looked
        if argv and argv[0].endswith(b"conmon") and any(os.fsencode(path) in a for a in argv):
            found.append(int(entry))
    return found


def _processes_with(argv: list[str]) -> list[int]:
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == want:
                    found.append(int(entry))
            except OSError:
                continue   # exited while we looked
    return found


def _memory_cgroup_dir(pid: int) -> str:
    """The memory cgroup directory of a process, on cgroup v1 or v2."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return f"/sys/fs/cgroup/memory{path}"
    v2 = [line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
          if line.startswith("0::")]
    return f"/sys/fs/cgroup{v2[0]}"


def _timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp with up to nanoseconds (datetime keeps microseconds)."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert m, text
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{(m.group(2) or '0')[:6].ljust(6, '0')}{zone}")


def _cri_lines(path: Path) -> list[tuple[str, str, str]]:
    """(stream, F|P, text) of every line; each must be in the CRI format, stamped recently."""
    out = []
    for line in path.read_bytes().decode().split("\n")[:-1]:   # keep a terminal's \r as written
        m = CRI_LINE.fullmatch(line)
        assert m, f"not a CRI log line: {line!r}"
        assert abs(_timestamp(m.group(1)).timestamp() - time.time()) < 300
        out.append((m.group(2), m.group(3), m.group(4)))
    return out


@dataclass
class Env:
    rt: RuncConmon
    base: Path
    rootfs: Path
    config: dict[str, Any]
    cgroup_parent: str
    ids: list[str] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)

    @property
    def marks(self) -> Path:
        return self.base / "w"

    def bundle(self, args: list[str], *, tty: bool = False, memory_limit: int | None = None) -> tuple[str, str]:
        """A fresh bundle running `args`; returns (container id, bundle path)."""
        cid = "t" + secrets.token_hex(6)
        path = self.base / "b" / cid
        for d in ("rootfs", "upper", "work"):
            (path / d).mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.rootfs},upperdir={path / 'upper'},workdir={path / 'work'}",
                        str(path / "rootfs")], check=True)
        self.mounts.append(path / "rootfs")
        config = json.loads(json.dumps(self.config))
        config["process"].update(args=args, terminal=tty)
        linux = config["linux"]
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
        linux["cgroupsPath"] = f"{self.cgroup_parent}/{cid}"
        if memory_limit is not None:
            linux.setdefault("resources", {})["memory"] = {"limit": memory_limit}
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev/shm"] + [
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "nodev", "size=256m"]},
            {"destination": "/w", "type": "bind", "source": str(self.marks), "options": ["rbind", "rw"]}]
        (path / "config.json").write_text(json.dumps(config))
        self.ids.append(cid)
        return cid, str(path)

    def log(self, cid: str) -> Path:
        return self.base / "logs" / f"{cid}.log"

    async def run(self, args: list[str], **kwargs: Any) -> str:
        """Create and start a container; returns its id."""
        tty = kwargs.pop("tty", False)
        cid, bundle = self.bundle(args, tty=tty, memory_limit=kwargs.pop("memory_limit", None))
        await self.rt.create(cid, bundle, log_path=str(self.log(cid)), tty=tty, **kwargs)
        await self.rt.start(cid)
        return cid

    async def marker(self, name: str, timeout: float = 10) -> None:
        """Wait until a container created /w/<name>."""
        loop = asyncio.get_running_loop()
        watcher = DirWatcher(loop)
        try:
            found = await watcher.wait_until(str(self.marks), name, lambda: (self.marks / name).exists() or None,
                                             deadline=loop.time() + timeout)
        finally:
            watcher.close()
        assert found, f"marker {name} did not appear within {timeout}s"


@pytest.fixture
async def env(busybox: tuple[Path, dict[str, Any]]) -> AsyncIterator[Env]:
    rootfs, config = busybox
    base = Path(tempfile.mkdtemp(prefix="crs-oci-", dir="/tmp"))   # short: unix socket paths
    for d in ("w", "logs", "b"):
        (base / d).mkdir()
    rt = RuncConmon("runc", RUNC, str(base / "root"), CONMON, str(base / "st"))
    e = Env(rt, base, rootfs, config, f"/criservice-test-{base.name}")
    try:
        yield e
    finally:
        await _teardown(e)


async def _teardown(e: Env) -> None:
    for cid in e.ids:
        await e.rt.delete(cid, force=True)
    e.rt.close()
    for mount in e.mounts:
        subprocess.run(["umount", str(mount)], check=True)
    left = {"conmons": _conmons_under(str(e.base)),
            "runc": os.listdir(e.base / "root") if (e.base / "root").exists() else [],
            "conmon dirs": os.listdir(e.base / "st" / "c"), "exit files": os.listdir(e.base / "st" / "exits")}
    _rmdir_cgroup(e.cgroup_parent)
    shutil.rmtree(e.base)
    assert not any(left.values()), f"left behind: {left}"
    assert not any(os.path.exists(m + e.cgroup_parent) for m in _cgroup_mounts())


# ---- create, start, logs, state ------------------------------------------------------------

async def test_logs_are_in_cri_format_with_partial_lines_and_stderr(env: Env) -> None:
    cid = await env.run(["sh", "-c", "echo hello; echo oops >&2; printf partial"])
    assert await env.rt.wait_exit(cid, 10) == 0
    lines = _cri_lines(env.log(cid))
    assert ("stdout", "F", "hello") in lines
    assert ("stderr", "F", "oops") in lines
    assert ("stdout", "P", "partial") in lines   # no newline before exit: a partial line


async def test_state_goes_created_running_stopped_with_exit_code(env: Env) -> None:
    cid, bundle = env.bundle(["sh", "-c", "trap 'exit 3' TERM; touch /w/ready; sleep 1000 & wait"])
    pid = await env.rt.create(cid, bundle, log_path=str(env.log(cid)))
    created = await env.rt.state(cid)
    assert (created.status, created.pid, created.exit_code) == ("created", pid, None)
    await env.rt.start(cid)
    await env.marker("ready")
    running = await env.rt.state(cid)
    assert (running.status, running.pid, running.exit_code) == ("running", pid, None)
    sock = env.rt.attach_socket(cid)
    assert len(sock) < 108 and Path(sock).is_socket()
    before = time.time_ns()
    await env.rt.kill(cid, signal.SIGTERM)
    assert await env.rt.wait_exit(cid, 10) == 3
    stopped = await env.rt.state(cid)
    assert (stopped.status, stopped.pid, stopped.exit_code, stopped.oom_killed) == ("stopped", 0, 3, False)
    # the exit file's mtime comes from the kernel's coarse clock: allow a few ticks
    assert stopped.finished_at_ns is not None and before - 50_000_000 <= stopped.finished_at_ns <= time.time_ns()
    await env.rt.kill(cid, signal.SIGKILL)   # already stopped: no error
    assert await env.rt.stop(cid, 5) == 3    # idempotent


async def test_exit_code_of_the_process(env: Env) -> None:
    cid = await env.run(["sh", "-c", "exit 3"])
    assert await env.rt.wait_exit(cid, 10) == 3
    assert (await env.rt.state(cid)).exit_code == 3


async def test_wait_exit_times_out_on_a_running_container(env: Env) -> None:
    cid = await env.run(["sleep", "1000"])
    started = time.monotonic()
    assert await env.rt.wait_exit(cid, 0.3) is None
    assert 0.3 <= time.monotonic() - started < 2


async def test_concurrent_waiters_share_one_watcher(env: Env) -> None:
    ids = [await env.run(["sh", "-c", f"while [ ! -e /w/go ]; do usleep 5000; done; exit {n}"]) for n in range(5)]
    waits = asyncio.gather(*(env.rt.wait_exit(cid, 10) for cid in ids))
    (env.marks / "go").touch()
    assert await waits == [0, 1, 2, 3, 4]


async def test_without_conmon_wait_exit_gives_up_and_delete_still_cleans_up(env: Env) -> None:
    cid = await env.run(["sleep", "1000"])
    conmon_pid = int((env.base / "st" / "c" / cid / "conmon.pid").read_text())
    os.kill(conmon_pid, signal.SIGKILL)
    started = time.monotonic()
    assert await env.rt.wait_exit(cid, None) is None   # nobody is left to write the exit file
    assert time.monotonic() - started < 2
    assert (await env.rt.state(cid)).status == "running"
    await env.rt.delete(cid, force=True)   # falls back to runc delete -f
    assert (await env.rt.state(cid)).status == "unknown"


async def test_missing_executable_fails_create_with_runcs_message(env: Env) -> None:
    cid, bundle = env.bundle(["/no/such/binary"])
    with pytest.raises(OCIError) as failure:
        await env.rt.create(cid, bundle, log_path=str(env.log(cid)))
    assert str(failure.value) == (
        f'runc create {cid}: runc create failed: unable to start container process: '
        f'exec: "/no/such/binary": stat /no/such/binary: no such file or directory')
    assert isinstance(failure.value, errors.FailedPrecondition)
    assert (await env.rt.state(cid)).status == "unknown"
    assert not _conmons_under(str(env.base)) and not os.listdir(env.base / "st" / "c")


async def test_create_twice_is_already_exists(env: Env) -> None:
    cid, bundle = env.bundle(["sleep", "1000"])
    await env.rt.create(cid, bundle, log_path=str(env.log(cid)))
    with pytest.raises(errors.AlreadyExists):
        await env.rt.create(cid, bundle, log_path=str(env.log(cid)))
    assert (await env.rt.state(cid)).status == "created"


# ---- stop, kill, delete -----------------------------------------------------------------------

async def test_stop_escalates_to_sigkill_after_the_timeout(env: Env) -> None:
    cid = await env.run(["sh", "-c", "trap '' TERM; touch /w/ready; sleep 1000"])
    await env.marker("ready")
    started = time.monotonic()
    assert await env.rt.stop(cid, 1.0) == 137
    assert 1.0 <= time.monotonic() - started < 1.5
    assert await env.rt.stop(cid, 1.0) == 137   # idempotent


async def test_stop_of_a_created_container_and_delete_of_a_running_one(env: Env) -> None:
    created, bundle = env.bundle(["sleep", "1000"])
    await env.rt.create(created, bundle, log_path=str(env.log(created)))
    assert await env.rt.stop(created, 0) == 137
    running = await env.run(["sleep", "1000"])
    with pytest.raises(errors.FailedPrecondition, match="stop it before deleting"):
        await env.rt.delete(running)
    started = time.monotonic()
    await env.rt.delete(running, force=True)
    assert time.monotonic() - started < 0.1   # no runc delete -f poll
    assert (await env.rt.state(running)).status == "unknown"
    await env.rt.delete(running)   # idempotent
    await env.rt.delete("never-created")


# ---- exec ---------------------------------------------------------------------------------

async def test_exec_sync_output_exit_code_env_and_bounds(env: Env) -> None:
    cid = await env.run(["sleep", "1000"])
    # timeout 0 is the CRI's "no timeout"
    res = await env.rt.exec_sync(cid, ["sh", "-c", "echo out; echo $FOO >&2; exit 4"], timeout=0,
                                 env=["FOO=bar"])
    assert (res.exit_code, res.stdout, res.stderr, res.timed_out) == (4, b"out\n", b"bar\n", False)
    big = await env.rt.exec_sync(cid, ["sh", "-c", "head -c 1000000 /dev/zero; head -c 5000 /dev/zero >&2"],
                                 timeout=10, max_output=4096)
    assert (big.exit_code, len(big.stdout), len(big.stderr)) == (0, 4096, 4096)
    with pytest.raises(OCIError, match="executable file not found"):
        await env.rt.exec_sync(cid, ["no-such-command"], timeout=10)


async def test_exec_sync_timeout_as_critest_checks_it(env: Env) -> None:
    cid = await env.run(["tail", "-f", "/dev/null"])
    started = time.monotonic()
    res = await env.rt.exec_sync(cid, ["sleep", "4321"], timeout=1)
    assert res.timed_out and res.exit_code == -1
    assert 1 <= time.monotonic() - started < 2
    check = await env.rt.exec_sync(cid, ["sh", "-c", "pgrep sleep || true"], timeout=10)
    assert (check.exit_code, check.stdout, check.stderr) == (0, b"", b"")
    assert not os.listdir(env.base / "st" / "x")


async def test_exec_sync_timeout_kills_the_children_too(env: Env) -> None:
    cid = await env.run(["tail", "-f", "/dev/null"])
    res = await env.rt.exec_sync(cid, ["sh", "-c", "sleep 4322 & sleep 4323"], timeout=0.5)
    assert res.timed_out
    # Both sleeps are killed; orphaned, they wait as zombies for the container's pid 1 to
    # reap them (tail never does), so look for live ones: a zombie has no command line.
    assert not _processes_with(["sleep", "4322"]) and not _processes_with(["sleep", "4323"])


async def test_exec_in_a_stopped_container_fails(env: Env) -> None:
    cid = await env.run(["true"])
    assert await env.rt.wait_exit(cid, 10) == 0
    with pytest.raises(OCIError, match="stopped"):
        await env.rt.exec_sync(cid, ["true"], timeout=10)


# ---- update, logs, terminal ----------------------------------------------------------------------

async def test_update_sets_the_memory_limit(env: Env) -> None:
    cid = await env.run(["sleep", "1000"])
    pid = (await env.rt.state(cid)).pid
    await env.rt.update(cid, {"memory": {"limit": 64 << 20}, "cpu": {"shares": 512}})
    memory = Path(_memory_cgroup_dir(pid))
    limit = memory / ("memory.limit_in_bytes" if (memory / "memory.limit_in_bytes").exists() else "memory.max")
    assert int(limit.read_text()) == 64 << 20
    with pytest.raises(OCIError):
        await env.rt.update(cid, {"memory": {"limit": -5}, "cpu": {"cpus": "no-such-cpu"}})


async def test_reopen_log_after_rename_loses_no_line(env: Env) -> None:
    cid = await env.run(["sh", "-c", "i=0; while [ ! -e /w/stop ]; do echo $i; i=$((i+1)); "
                                     "[ $i = 20 ] && touch /w/ready; usleep 2000; done; echo end"])
    await env.marker("ready")
    log = env.log(cid)
    rotated = log.with_suffix(".log.1")
    log.rename(rotated)
    await env.rt.reopen_log(cid)
    assert log.exists()   # in place when reopen_log returns
    (env.marks / "stop").touch()
    assert await env.rt.wait_exit(cid, 10) == 0
    old = [text for _, _, text in _cri_lines(rotated)]
    new = [text for _, _, text in _cri_lines(log)]
    assert len(old) >= 20 and new[-1] == "end"
    assert old + new[:-1] == [str(i) for i in range(len(old) + len(new) - 1)]


async def test_resize_reaches_the_terminal(env: Env) -> None:
    # It exits once its terminal has the new size.
    cid = await env.run(["sh", "-c", 'touch /w/ready; while [ "$(stty size)" != "40 100" ]; do usleep 5000; done; '
                                     'stty size'], tty=True)
    await env.marker("ready")
    await env.rt.resize(cid, 40, 100)
    await env.rt.reopen_log(cid)   # on the other FIFO: not lost with the resize
    assert await env.rt.wait_exit(cid, 10) == 0
    assert ("stdout", "F", "40 100\r") in _cri_lines(env.log(cid))   # a terminal ends lines with \r\n
    await env.rt.delete(cid)
    with pytest.raises(errors.NotFound):
        await env.rt.resize(cid, 10, 10)


# ---- the daemon may exit; containers and conmon may not ---------------------------------------------

CREATOR = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from runtime.oci.runc import RuncConmon
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

async def main(runc, root, conmon, state, cid, bundle, log):
    rt = RuncConmon("runc", runc, root, conmon, state)
    print(await rt.create(cid, bundle, log_path=log))
    await rt.start(cid)

asyncio.run(main(*sys.argv[2:]))
"""


async def test_container_survives_the_process_that_created_it(env: Env) -> None:
    cid, bundle = env.bundle(["sh", "-c", "trap 'exit 7' TERM; touch /w/ready; sleep 1000 & wait"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CREATOR, str(REPO), RUNC, env.rt.root, CONMON, env.rt.state_dir, cid, bundle,
        str(env.log(cid)), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    await env.marker("ready")
    state = await env.rt.state(cid)
    assert (state.status, state.pid) == ("running", int(out))
    conmon_pid = int((env.base / "st" / "c" / cid / "conmon.pid").read_text())
    assert _conmons_under(str(env.base)) == [conmon_pid]
    assert int(Path(f"/proc/{conmon_pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) != os.getpid()
    assert await env.rt.stop(cid, 10) == 7
    await env.rt.delete(cid)
    assert not _conmons_under(str(env.base))


async def test_memory_limit_oom_kill_exits_137(env: Env) -> None:
    cid = await env.run(["dd", "if=/dev/zero", "of=/dev/shm/x", "bs=1M", "count=100"], memory_limit=32 << 20)
    assert await env.rt.wait_exit(cid, 30) == 137
    # conmon marks the OOM event in its working directory: the container's conmon dir
    assert (env.base / "st" / "c" / cid / "oom").exists() and not Path("oom").exists()


# ---- crun, the second handler --------------------------------------------------------------------

async def test_crun_handler(env: Env) -> None:
    if not os.access(CRUN, os.X_OK):
        pytest.skip("crun is not installed")
    crun = RuncConmon("crun", CRUN, str(env.base / "crun-root"), CONMON, str(env.base / "st"))
    cid, bundle = env.bundle(["sh", "-c", "exit 5"])
    try:
        try:
            await crun.create(cid, bundle, log_path=str(env.log(cid)))
        except OCIError as e:
            if "hybrid mode not supported" in str(e):
                pytest.skip(f"crun refuses this host's cgroup v1 hybrid layout: {e}")
            raise
        await crun.start(cid)
        assert await crun.wait_exit(cid, 10) == 5
    finally:
        await crun.delete(cid, force=True)
        crun.close()


# ---- measurements (printed with -s) -----------------------------------------------------------------

def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError("no Pss in smaps_rollup")


async def test_measure_latencies_and_conmon_memory(env: Env) -> None:
    runs = 20
    bundles = [env.bundle(["sh", "-c", f"trap 'exit 0' TERM; touch /w/r{i}; sleep 1000 & wait"]) for i in range(runs)]
    create_start, stop_delete = [], []
    for i, (cid, bundle) in enumerate(bundles):
        started = time.perf_counter()
        await env.rt.create(cid, bundle, log_path=str(env.log(cid)))
        await env.rt.start(cid)
        create_start.append(time.perf_counter() - started)
        await env.marker(f"r{i}")
    pss = _pss_kib(int((env.base / "st" / "c" / bundles[0][0] / "conmon.pid").read_text()))
    for cid, _ in bundles:
        started = time.perf_counter()
        assert await env.rt.stop(cid, 10) == 0
        await env.rt.delete(cid)
        stop_delete.append(time.perf_counter() - started)
    report = {"create+start median ms": round(statistics.median(create_start) * 1000, 1),
              "create+start max ms": round(max(create_start) * 1000, 1),
              "stop+delete median ms": round(statistics.median(stop_delete) * 1000, 1),
              "stop+delete max ms": round(max(stop_delete) * 1000, 1),
              "idle conmon PSS KiB": pss}
    print("\nOCI driver measurements:", json.dumps(report))
    assert statistics.median(create_start) < 0.5 and statistics.median(stop_delete) < 0.5
