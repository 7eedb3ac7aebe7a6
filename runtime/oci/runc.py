"""The runc (or crun) driver behind runtime/oci/runtime.py's interface, conmon per container.

Every container gets its own conmon (Debian `conmon` 2.1). conmon runs `<runtime> create`,
holds the container's stdio, writes its log in the CRI format (`k8s-file`), writes the
exit code to an exit file, and serves the attach socket and the control FIFO. conmon
daemonises (double fork), so containers outlive this process; everything a restarted
daemon needs is in files:

    <state_dir>/exits/<id>          conmon's exit file: the exit code as text, put in place by rename
    <state_dir>/c/<id>/conmon.json  what conmon was started with (bundle, log path, attach name)
    <state_dir>/c/<id>/conmon.pid   the daemonised conmon's pid (conmon -P)
    <state_dir>/c/<id>/pid          the container's init pid (conmon -p, i.e. runc --pid-file)
    <state_dir>/c/<id>/oom          empty; conmon's mark of an OOM event (in its working directory)
    <state_dir>/c/<id>/runtime.log  what the runtime said while conmon ran it (JSON lines)
    <state_dir>/a/<name> -> bundle  conmon's link to the bundle; the attach socket is a/<name>/attach
    <state_dir>/x/                  pid and log files of running exec_sync calls

conmon itself keeps the control FIFO (`ctl`), a resize FIFO (`winsz`) and the attach socket
in the bundle directory. Facts established with conmon 2.1.6 and runc 1.1.5:

- The create handshake: conmon reads the fd in `_OCI_STARTPIPE` and waits for one write
  before it forks (the moment to move it into a cgroup), then reports on the fd in
  `_OCI_SYNCPIPE` one line of JSON: `{"data": <init pid>}` once `runc create` succeeded,
  `{"data": -1, "message": "<runc's stderr>"}` when it failed. With `--api-version 1`
  nothing else is written for a container; the pipe closes when conmon exits.
- The exit file holds "137" for a SIGKILLed container (128 + signal) and appears by rename.
- The control FIFO `ctl` takes "<type> <height> <width>\\n": type 2 reopens the log (conmon
  writes <log>.tmp and renames it over the log path, so the inode changes), type 1 resizes.
  conmon parses one message per read(): two that arrive together lose the second. So
  resizes go to the `winsz` FIFO ("<height> <width>\\n"), where a burst of them cannot
  swallow a log reopen.
- A missing args[0] fails `runc create` (not `runc start`) in runc 1.1.
- `runc exec` makes the exec'd process a session leader, so killing its process group
  kills it and the children it did not move elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal as signals
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from runtime import cgroups, errors
from runtime.oci.dirwatch import DirWatcher, resolve
from runtime.oci.runtime import TIMED_OUT_EXIT_CODE, ContainerState, ExecResult, OCIError, OCIRuntime

log = logging.getLogger("criservice.oci")

RUNTIME_TIMEOUT = 60.0     # one runc/crun call other than create and exec
RUNTIME_LOG = "runtime.log"
KILL_WAIT = 10.0           # for the exit file after SIGKILL
STATE_EXIT_GRACE = 2.0     # runc says stopped, conmon is still writing the exit file
EXEC_KILL_GRACE = 5.0      # for runc exec to report the pid, or exit, once its process is killed
EXEC_DRAIN_TIMEOUT = 1.0   # for the output pipes after runc exec exited (orphans may hold them)
REOPEN_TIMEOUT = 5.0       # for conmon to put a new log file in place
CONMON_EXIT_WAIT = 5.0     # for a conmon to go away (on its own after the exit file, or killed)
SOCKET_PATH_MAX = 107      # sun_path is 108 bytes with the NUL

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ExecCommand:
    """`runc exec` for an interactive session: its argv and the files it leaves."""
    argv: list[str]
    pid_file: str        # the exec'd process's pid, once it runs
    log_file: str        # runc's own messages

    def pid(self) -> int | None:
        return _read_int(self.pid_file)

    def error(self) -> str:
        """What runc itself reported (empty when it did not fail)."""
        return _runtime_message(_read_text(self.log_file) or "")

    def cleanup(self) -> None:
        for path in (self.pid_file, self.log_file):
            _unlink(path)


# ---- small process and file helpers -------------------------------------------------------

@contextlib.contextmanager
def _process_exit(loop: asyncio.AbstractEventLoop, pid: int | None,
                  is_expected: Callable[[int], bool]) -> Iterator[asyncio.Future[None]]:
    """A future done when process `pid` exits (a pidfd: the process need not be our child).
    `is_expected(pid)` runs once the pidfd is open, so a reused pid is not waited on."""
    gone: asyncio.Future[None] = loop.create_future()
    fd = -1
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):   # gone already
            fd = os.pidfd_open(pid)
    if fd >= 0 and pid is not None and not is_expected(pid):
        os.close(fd)
        fd = -1
    if fd < 0:
        gone.set_result(None)
    else:
        loop.add_reader(fd, resolve, gone)
    try:
        yield gone
    finally:
        if fd >= 0:
            loop.remove_reader(fd)
            os.close(fd)


async def _read_line(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> bytes:
    """Bytes from a pipe up to the first newline or EOF."""
    os.set_blocking(fd, False)
    buf = bytearray()
    done: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        buf.extend(chunk)
        if (not chunk or b"\n" in chunk) and not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        loop.remove_reader(fd)
    return bytes(buf)


def _runtime_message(text: str) -> str:
    """The errors in what runc/crun wrote with --log-format=json; other lines as they are."""
    messages: list[str] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and "msg" in entry:
            if entry.get("level") in ("error", "fatal", "panic"):
                messages.append(str(entry["msg"]))
        elif line.strip():
            messages.append(line.strip())
    return "; ".join(messages)


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _read_int(path: str) -> int | None:
    text = (_read_text(path) or "").strip()
    if not text.lstrip("-").isdigit():
        return None   # absent, or not written yet
    return int(text)


def _write_atomically(path: str, data: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # removal is idempotent
        os.unlink(path)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


class _BoundedSink:
    """Reads a stream to its end, keeping at most `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    async def pump(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            room = self.limit - len(self.data)
            if room > 0:
                self.data.extend(chunk[:room])


@dataclass(frozen=True)
class _Run:
    returncode: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class _ConmonRecord:
    """conmon.json: what later calls (or a restarted daemon) need to find conmon's files."""
    bundle: str
    log_path: str
    attach_name: str


# ---- the driver ---------------------------------------------------------------------------

class RuncConmon(OCIRuntime):
    """runc or crun (any runc-compatible CLI), one conmon per container."""

    def __init__(self, name: str, runtime_path: str, root: str, conmon_path: str, state_dir: str,
                 log_level: str = "error") -> None:
        self.name = name
        self.runtime_path = runtime_path
        self.root = root
        self.conmon_path = conmon_path
        self.state_dir = os.path.abspath(state_dir)
        self.log_level = log_level
        self.exit_dir = os.path.join(self.state_dir, "exits")
        self.socket_dir = os.path.join(self.state_dir, "a")
        self._containers_dir = os.path.join(self.state_dir, "c")
        self._exec_dir = os.path.join(self.state_dir, "x")
        for d in (self.exit_dir, self.socket_dir, self._containers_dir, self._exec_dir):
            os.makedirs(d, 0o700, exist_ok=True)
        self._watcher: DirWatcher | None = None

    def close(self) -> None:
        """Release the inotify descriptor (containers and conmons are not touched)."""
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def _watch(self) -> DirWatcher:
        # One watcher per instance, bound to the loop in use (tests run a loop per test).
        loop = asyncio.get_running_loop()
        if self._watcher is None or self._watcher.loop is not loop:
            self.close()
            self._watcher = DirWatcher(loop)
        return self._watcher

    # ---- paths ---------------------------------------------------------------------------

    def _dir(self, container_id: str) -> str:
        if not _ID.fullmatch(container_id):
            raise errors.InvalidArgument(f"invalid container id {container_id!r}")
        return os.path.join(self._containers_dir, container_id)

    def _exit_file(self, container_id: str) -> str:
        self._dir(container_id)   # validates the id: it must not lead out of exit_dir
        return os.path.join(self.exit_dir, container_id)

    def _attach_name(self, container_id: str) -> str:
        # conmon links <socket_dir>/<name> to the bundle and listens on <name>/attach: the
        # id when that path fits in sun_path, a digest of it otherwise.
        if len(os.path.join(self.socket_dir, container_id, "attach")) <= SOCKET_PATH_MAX:
            return container_id
        return hashlib.sha256(container_id.encode()).hexdigest()[:24]

    def attach_socket(self, container_id: str) -> str:
        self._dir(container_id)
        return os.path.join(self.socket_dir, self._attach_name(container_id), "attach")

    def _record(self, container_id: str) -> _ConmonRecord:
        text = _read_text(os.path.join(self._dir(container_id), "conmon.json"))
        if text is None:
            raise errors.NotFound(f"container {container_id} has no conmon in {self.name}")
        doc = json.loads(text)
        return _ConmonRecord(doc["bundle"], doc["log_path"], doc["attach_name"])

    def _runtime_has(self, container_id: str) -> bool:
        # runc keeps <root>/<id>/state.json, crun <root>/<id>/status: the directory is the record.
        return os.path.isdir(os.path.join(self.root, container_id))

    # ---- conmon ----------------------------------------------------------------------------

    def _is_conmon_of(self, container_id: str, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            return False
        if os.path.basename(argv[0]) != os.path.basename(os.fsencode(self.conmon_path)):
            return False   # a zombie (empty cmdline) or a reused pid
        want = os.fsencode(container_id)
        return any(a == b"-c" and b == want for a, b in zip(argv, argv[1:]))

    def _conmon_pid(self, container_id: str) -> int | None:
        """The pid of this container's conmon while it runs."""
        pid = _read_int(os.path.join(self._dir(container_id), "conmon.pid"))
        return pid if pid and self._is_conmon_of(container_id, pid) else None

    def _conmon_argv(self, container_id: str, record: _ConmonRecord, *, tty: bool, stdin: bool,
                     stdin_once: bool, systemd_cgroup: bool) -> list[str]:
        cdir = self._dir(container_id)
        argv = [self.conmon_path, "--api-version", "1",
                "-c", container_id, "-u", record.attach_name, "-n", container_id,
                "-b", record.bundle, "-r", self.runtime_path,
                "--runtime-arg", f"--root={self.root}", "--runtime-arg", "--log-format=json",
                # The runtime's own words go to a file of its own, not to the container's
                # stderr and log (runc's systemd driver warns there about absent devices).
                "--runtime-arg", f"--log={os.path.join(cdir, RUNTIME_LOG)}",
                "-l", f"k8s-file:{record.log_path}", "--exit-dir", self.exit_dir,
                "-P", os.path.join(cdir, "conmon.pid"), "-p", os.path.join(cdir, "pid"),
                "--socket-dir-path", self.socket_dir, "--log-level", self.log_level]
        if systemd_cgroup:
            argv.append("-s")   # conmon passes --systemd-cgroup to the runtime itself
        if tty:
            argv.append("-t")
        if stdin:
            argv.append("-i")
            if not stdin_once:
                argv.append("--leave-stdin-open")
        return argv

    # ---- runtime calls ---------------------------------------------------------------------

    def _runtime_argv(self, *args: str, log_file: str | None = None) -> list[str]:
        argv = [self.runtime_path, f"--root={self.root}", "--log-format=json"]
        if log_file is not None:
            argv.append(f"--log={log_file}")
        return argv + list(args)

    async def _spawn(self, argv: list[str], **kwargs: Any) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(*argv, **kwargs)
        except OSError as e:
            raise errors.Unavailable(f"{self.name}: cannot run {argv[0]}: {e.strerror}") from e

    async def _run(self, *args: str, stdin: bytes | None = None,
                   timeout: float = RUNTIME_TIMEOUT) -> _Run:
        proc = await self._spawn(
            self._runtime_argv(*args),
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"{self.name} {args[0]} did not finish within {timeout:g}s") from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return _Run(proc.returncode or 0, out, err)

    def _error(self, what: str, container_id: str, res: _Run) -> OCIError:
        message = _runtime_message(res.stderr.decode(errors="replace")) or f"exit status {res.returncode}"
        return OCIError(f"{self.name} {what} {container_id}: {message}")

    async def _runtime_state(self, container_id: str) -> dict[str, Any] | None:
        """`runc state` as a dict; None when the runtime does not know the container."""
        res = await self._run("state", container_id)
        if res.returncode != 0:
            if not self._runtime_has(container_id):
                return None
            raise self._error("state", container_id, res)
        doc: dict[str, Any] = json.loads(res.stdout)
        return doc

    # ---- create ----------------------------------------------------------------------------

    async def create(self, container_id: str, bundle: str, *, log_path: str, tty: bool = False,
                     stdin: bool = False, stdin_once: bool = False, systemd_cgroup: bool = False,
                     conmon_cgroup: str = "", timeout: float = 240) -> int:
        cdir = self._dir(container_id)
        if not os.path.isabs(log_path):
            raise errors.InvalidArgument(f"log path {log_path!r} is not absolute")
        if self._runtime_has(container_id) or self._conmon_pid(container_id):
            raise errors.AlreadyExists(f"container {container_id} exists in {self.name}")
        record = _ConmonRecord(os.path.abspath(bundle), log_path, self._attach_name(container_id))
        self._remove_files(container_id)   # leftovers of an earlier container with this id
        os.makedirs(cdir, 0o700)
        _write_atomically(os.path.join(cdir, "conmon.json"), json.dumps(
            {"bundle": record.bundle, "log_path": record.log_path, "attach_name": record.attach_name}))
        argv = self._conmon_argv(container_id, record, tty=tty, stdin=stdin, stdin_once=stdin_once,
                                 systemd_cgroup=systemd_cgroup)
        try:
            return await self._run_conmon(container_id, argv, timeout, conmon_cgroup)
        except BaseException:
            await asyncio.shield(self._abandon(container_id))
            raise

    async def _run_conmon(self, container_id: str, argv: list[str], timeout: float, cgroup: str) -> int:
        loop = asyncio.get_running_loop()
        sync_r, sync_w = os.pipe()
        start_r, start_w = os.pipe()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "_OCI_SYNCPIPE": str(sync_w), "_OCI_STARTPIPE": str(start_r)}
        try:
            # cwd: conmon drops its `oom` marker in its working directory.
            proc = await self._spawn(argv, env=env, pass_fds=(sync_w, start_r), cwd=self._dir(container_id),
                                     stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                                     stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except BaseException:
            os.close(sync_r)
            os.close(start_w)
            raise
        finally:
            os.close(sync_w)
            os.close(start_r)
        try:
            await self._place_conmon(container_id, proc.pid, cgroup)
            line = await self._handshake(container_id, loop, sync_r, start_w, timeout)
            # The process we started exits as soon as it has forked the real conmon.
            _, stderr = await asyncio.wait_for(proc.communicate(), CONMON_EXIT_WAIT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return self._create_result(container_id, line, proc.returncode or 0, stderr)

    async def _place_conmon(self, container_id: str, pid: int, cgroup: str) -> None:
        """conmon in a cgroup of its own in the pod (CRI-O's conmon_cgroup = "pod"): charged
        to the pod, apart from the daemon, whose restart then never touches it. It blocks
        on the start pipe until it is there, so the processes it forks follow it. Where
        that fails it stays in the daemon's cgroup, which works too: logged, not fatal."""
        if not cgroup:
            return
        try:
            if cgroups.is_systemd_path(cgroup):
                await self._start_scope(pid, cgroup)
            else:
                await asyncio.to_thread(cgroups.place_process, pid, cgroup)
        except (OSError, OCIError) as e:
            log.warning("conmon stays in the daemon's cgroup: moving it failed", extra={"fields": {
                "container": container_id, "cgroup": cgroup, "error": str(e)}})

    async def _start_scope(self, pid: int, cgroup: str) -> None:
        proc = await asyncio.create_subprocess_exec(*cgroups.scope_call(pid, cgroup), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), RUNTIME_TIMEOUT)
        finally:
            if proc.returncode is None:   # timed out or cancelled: no busctl is left behind
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise OCIError(f"busctl StartTransientUnit: {err.decode(errors='replace').strip()}")
        # systemd moves the process when the unit's job runs: wait for that.
        scope = "/" + cgroups.cgroup_dir(cgroup).rsplit("/", 1)[1]
        for _ in range(200):
            if cgroups.process_cgroup(pid).endswith(scope):
                return
            await asyncio.sleep(0.01)
        raise OCIError(f"systemd did not move conmon into {scope[1:]} within 2s")

    async def _handshake(self, container_id: str, loop: asyncio.AbstractEventLoop, sync_r: int,
                         start_w: int, timeout: float) -> bytes:
        """Release conmon through the start pipe, then read its result from the sync pipe."""
        try:
            try:
                # conmon blocks on this pipe before it forks: the place to put it in a cgroup.
                # A conmon that died already makes this EPIPE; its stderr is reported later.
                with contextlib.suppress(BrokenPipeError):
                    os.write(start_w, b"0")
            finally:
                os.close(start_w)
            return await _read_line(loop, sync_r, timeout)
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"{self.name} create {container_id}: no answer from conmon within {timeout:g}s") from None
        finally:
            os.close(sync_r)

    def _create_result(self, container_id: str, line: bytes, returncode: int, stderr: bytes) -> int:
        conmon_err = stderr.decode(errors="replace").strip()
        if not line.strip():
            raise OCIError(f"{self.name} create {container_id}: conmon exited with status {returncode} "
                           f"without a result: {conmon_err or 'no message'}")
        try:
            doc = json.loads(line)
            pid = int(doc.get("data", doc.get("pid", -1)))
            message = str(doc.get("message", ""))
        except (ValueError, AttributeError):
            # conmon escapes only quotes in the message: show the line as it came.
            raise OCIError(f"{self.name} create {container_id}: "
                           f"{line.decode(errors='replace').strip()}") from None
        if pid <= 0:
            said = _runtime_message(message) or _runtime_message(
                _read_text(os.path.join(self._dir(container_id), RUNTIME_LOG)) or "")
            raise OCIError(f"{self.name} create {container_id}: {said or conmon_err or 'failed without a message'}")
        if conmon_err:
            log.debug("conmon wrote to stderr", extra={"fields": {"container": container_id,
                                                                  "stderr": conmon_err}})
        return pid

    async def _abandon(self, container_id: str) -> None:
        """Undo a create that failed or was cancelled half-way."""
        await self._stop_conmon(container_id)
        if self._runtime_has(container_id):
            res = await self._run("delete", "-f", container_id)
            if res.returncode != 0 and self._runtime_has(container_id):
                raise self._error("delete", container_id, res)
        self._remove_files(container_id)

    # ---- start, signals, exits --------------------------------------------------------------

    async def start(self, container_id: str) -> None:
        self._dir(container_id)
        res = await self._run("start", container_id)
        if res.returncode != 0:
            raise self._error("start", container_id, res)

    async def kill(self, container_id: str, signal: int, all_processes: bool = False) -> None:
        self._dir(container_id)
        res = await self._run("kill", *(["--all"] if all_processes else []), container_id, str(int(signal)))
        if res.returncode == 0 or self._exit_status(container_id) is not None:
            return
        doc = await self._runtime_state(container_id)
        if doc is None or doc.get("status") == "stopped":
            return   # gone already: killing is idempotent
        raise self._error("kill", container_id, res)

    def _exit_status(self, container_id: str) -> tuple[int, int] | None:
        """(exit code, exit file mtime in ns) once conmon wrote the exit file."""
        path = self._exit_file(container_id)
        code = _read_int(path)
        if code is None:
            return None
        try:
            return code, os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return None   # removed by a concurrent delete

    async def _wait_exit_status(self, container_id: str, timeout: float | None) -> tuple[int, int] | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(timeout, 0)
        pid = self._conmon_pid(container_id)
        with _process_exit(loop, pid, lambda p: self._is_conmon_of(container_id, p)) as conmon_gone:
            # Without a conmon nobody will write the exit file: look once more and give up.
            return await self._watch().wait_until(
                self.exit_dir, container_id, lambda: self._exit_status(container_id),
                deadline=deadline, until=conmon_gone)

    async def wait_exit(self, container_id: str, timeout: float | None) -> int | None:
        """The exit code once conmon wrote it; None on timeout, or when no conmon is left
        to write it."""
        self._dir(container_id)
        status = await self._wait_exit_status(container_id, timeout)
        return None if status is None else status[0]

    async def stop(self, container_id: str, timeout: float,
                   stop_signal: int = signals.SIGTERM) -> int | None:
        done = self._exit_status(container_id)
        if done is not None:
            return done[0]
        if timeout > 0 and stop_signal != signals.SIGKILL:
            await self.kill(container_id, stop_signal)
            code = await self.wait_exit(container_id, timeout)
            if code is not None:
                return code
        await self.kill(container_id, signals.SIGKILL, all_processes=True)
        return await self.wait_exit(container_id, KILL_WAIT)

    # ---- delete ------------------------------------------------------------------------------

    async def delete(self, container_id: str, force: bool = False) -> None:
        self._dir(container_id)
        if self._exit_status(container_id) is not None:
            # conmon writes the exit file after reaping the init process: no need to ask runc.
            status: str | None = "stopped" if self._runtime_has(container_id) else None
        else:
            doc = await self._runtime_state(container_id)
            status = None if doc is None else str(doc.get("status", ""))
        if status is not None:
            await self._delete_runtime(container_id, status, force)
        await self._stop_conmon(container_id)
        self._remove_files(container_id)

    async def _delete_runtime(self, container_id: str, status: str, force: bool) -> None:
        if status in ("running", "paused") and not force:
            raise errors.FailedPrecondition(f"container {container_id} is {status}: stop it before deleting")
        use_force = status == "paused"   # a frozen process cannot die; runc thaws it with -f
        if status in ("created", "creating", "running"):
            # Kill and wait for conmon's exit file rather than `delete -f`, which polls in
            # 100 ms steps in runc 1.1 (as plain `delete` of a created container does).
            await self.kill(container_id, signals.SIGKILL, all_processes=True)
            use_force = await self.wait_exit(container_id, KILL_WAIT) is None
        res = await self._run("delete", *(["-f"] if use_force else []), container_id)
        if res.returncode != 0 and self._runtime_has(container_id):
            raise self._error("delete", container_id, res)

    async def _stop_conmon(self, container_id: str) -> None:
        """Make sure no conmon is left for a container that is going away: one that wrote
        the exit file is given time to finish its log; one that did not is killed."""
        pid = self._conmon_pid(container_id)
        if pid is None:
            return
        loop = asyncio.get_running_loop()
        with _process_exit(loop, pid, lambda p: self._is_conmon_of(container_id, p)) as gone:
            if self._exit_status(container_id) is not None:
                with contextlib.suppress(TimeoutError):   # then it is killed below
                    await asyncio.wait_for(asyncio.shield(gone), CONMON_EXIT_WAIT)
            if not gone.done():
                with contextlib.suppress(ProcessLookupError):   # it exited meanwhile
                    os.kill(pid, signals.SIGKILL)
                try:
                    await asyncio.wait_for(asyncio.shield(gone), CONMON_EXIT_WAIT)
                except TimeoutError:
                    raise errors.DeadlineExceeded(
                        f"conmon {pid} of container {container_id} did not exit after SIGKILL") from None

    def _remove_files(self, container_id: str) -> None:
        cdir = self._dir(container_id)
        try:
            record: _ConmonRecord | None = self._record(container_id)
        except errors.NotFound:
            record = None
        _unlink(self._exit_file(container_id))
        _unlink(os.path.join(self.socket_dir, record.attach_name if record else self._attach_name(container_id)))
        if record is not None:
            for name in ("ctl", "winsz", "attach"):   # conmon's FIFOs and socket in the bundle
                _unlink(os.path.join(record.bundle, name))
        if os.path.isdir(cdir):
            shutil.rmtree(cdir)

    # ---- state, update ------------------------------------------------------------------------

    async def state(self, container_id: str) -> ContainerState:
        self._dir(container_id)
        doc = await self._runtime_state(container_id)
        done = self._exit_status(container_id)
        if doc is not None and doc.get("status") == "stopped" and done is None:
            done = await self._wait_exit_status(container_id, STATE_EXIT_GRACE)
        if done is not None:
            return ContainerState("stopped", 0, done[0], done[1], False)
        if doc is None:
            return ContainerState("unknown", 0, None, None, False)
        status = {"creating": "created"}.get(str(doc.get("status")), str(doc.get("status")))
        if status not in ("created", "running", "paused", "stopped"):
            status = "unknown"
        pid = int(doc.get("pid") or 0) if status != "stopped" else 0
        return ContainerState(status, pid, None, None, False)

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        self._dir(container_id)
        res = await self._run("update", "--resources", "-", container_id,
                              stdin=json.dumps(resources).encode())
        if res.returncode != 0:
            raise self._error("update", container_id, res)

    # ---- exec ----------------------------------------------------------------------------------

    async def exec_sync(self, container_id: str, argv: list[str], *, timeout: float | None,
                        env: list[str] | None = None, max_output: int = 16 << 20) -> ExecResult:
        self._dir(container_id)
        if not argv:
            raise errors.InvalidArgument("exec: the command is empty")
        token = secrets.token_hex(8)
        pid_file = os.path.join(self._exec_dir, f"{token}.pid")
        log_file = os.path.join(self._exec_dir, f"{token}.log")
        env_args = [a for e in env or [] for a in ("--env", e)]
        # runc's own messages go to log_file, so the process's stderr stays its own.
        proc = await self._spawn(
            self._runtime_argv("exec", "--pid-file", pid_file, *env_args, container_id, *argv,
                               log_file=log_file),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        out, err = _BoundedSink(max_output), _BoundedSink(max_output)
        pumps = [asyncio.ensure_future(out.pump(proc.stdout)), asyncio.ensure_future(err.pump(proc.stderr))]
        try:
            timed_out = not await self._exec_wait(proc, pid_file, timeout)
            await asyncio.wait(pumps, timeout=EXEC_DRAIN_TIMEOUT)
        finally:
            if proc.returncode is None:   # cancelled
                await self._kill_exec(proc, pid_file)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            runtime_log = _read_text(log_file) or ""
            _unlink(pid_file)
            _unlink(log_file)
        if timed_out:
            return ExecResult(TIMED_OUT_EXIT_CODE, bytes(out.data), bytes(err.data), True)
        code = proc.returncode or 0
        message = _runtime_message(runtime_log)
        if code != 0 and message:
            raise OCIError(f"{self.name} exec in {container_id}: {message}")
        return ExecResult(code, bytes(out.data), bytes(err.data), False)

    def exec_command(self, container_id: str, argv: list[str], *, tty: bool = False,
                     env: list[str] | None = None) -> ExecCommand:
        """The `runc exec` of a streaming session. With `tty` runc makes the terminal and
        relays it to its own stdio, which must then be a terminal too (runc accepts
        --console-socket only when it detaches, and then its exit code is lost)."""
        self._dir(container_id)
        if not argv:
            raise errors.InvalidArgument("exec: the command is empty")
        token = secrets.token_hex(8)
        pid_file, log_file = (os.path.join(self._exec_dir, f"{token}.{ext}") for ext in ("pid", "log"))
        args = ["exec", "--pid-file", pid_file, *(a for e in env or [] for a in ("--env", e))]
        if tty:
            args.append("--tty")
        return ExecCommand(self._runtime_argv(*args, container_id, *argv, log_file=log_file), pid_file, log_file)

    async def end_exec(self, proc: asyncio.subprocess.Process, command: ExecCommand, *,
                       grace: float = EXEC_KILL_GRACE) -> None:
        """Hang up on an exec'd process (SIGHUP to its process group), and kill it when it
        is still there after `grace` seconds; returns once runc exec is gone."""
        pid = command.pid()
        if pid and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signals.SIGHUP)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
        except TimeoutError:
            await self._kill_exec(proc, command.pid_file)

    async def _exec_wait(self, proc: asyncio.subprocess.Process, pid_file: str,
                         timeout: float | None) -> bool:
        """True when runc exec finished in time; otherwise its process is killed.
        A timeout of 0 is the CRI's "no timeout"."""
        try:
            await asyncio.wait_for(proc.wait(), timeout if timeout and timeout > 0 else None)
            return True
        except TimeoutError:
            await self._kill_exec(proc, pid_file)
            return False

    async def _kill_exec(self, proc: asyncio.subprocess.Process, pid_file: str) -> None:
        """Kill the exec'd process (a session leader: its whole group), then wait for runc.

        Killing runc alone would leave the process running in the container."""
        loop = asyncio.get_running_loop()
        exited = asyncio.ensure_future(proc.wait())
        try:
            # runc writes the pid file once the process runs; it may still be starting it.
            pid = await self._watch().wait_until(
                self._exec_dir, os.path.basename(pid_file), lambda: _read_int(pid_file),
                deadline=loop.time() + EXEC_KILL_GRACE, until=exited)
            if pid and proc.returncode is None:   # runc has not reaped it: the pid is still its
                try:
                    os.killpg(pid, signals.SIGKILL)
                except ProcessLookupError:
                    with contextlib.suppress(ProcessLookupError):   # exited meanwhile
                        os.kill(pid, signals.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(exited), EXEC_KILL_GRACE)
            except TimeoutError:
                proc.kill()   # runc itself hangs
                await exited
        finally:
            if not exited.done():
                exited.cancel()

    # ---- conmon's FIFOs ---------------------------------------------------------------------

    def _write_fifo(self, container_id: str, name: str, message: str) -> None:
        """One message to one of conmon's FIFOs in the bundle (ctl or winsz)."""
        path = os.path.join(self._record(container_id).bundle, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENXIO):   # ENXIO: no reader, so no conmon
                raise errors.FailedPrecondition(
                    f"container {container_id}: conmon is not running ({e.strerror})") from None
            raise
        try:
            os.write(fd, message.encode())
        finally:
            os.close(fd)

    async def reopen_log(self, container_id: str) -> None:
        """Ask conmon to reopen the log (after the kubelet renamed it) and wait until the
        new file is in place, so nothing more goes to the renamed one."""
        record = self._record(container_id)
        before = _inode(record.log_path)
        loop = asyncio.get_running_loop()

        def replaced() -> bool | None:
            now = _inode(record.log_path)
            return True if now is not None and now != before else None

        self._write_fifo(container_id, "ctl", "2 0 0\n")
        done = await self._watch().wait_until(
            os.path.dirname(record.log_path), os.path.basename(record.log_path), replaced,
            deadline=loop.time() + REOPEN_TIMEOUT)
        if not done:
            raise errors.DeadlineExceeded(f"container {container_id}: conmon did not reopen "
                                          f"{record.log_path} within {REOPEN_TIMEOUT:g}s")

    async def resize(self, container_id: str, height: int, width: int) -> None:
        if not (0 < height < 65536 and 0 < width < 65536):
            raise errors.InvalidArgument(f"terminal size {height}x{width} is out of range")
        self._write_fifo(container_id, "winsz", f"{height} {width}\n")
