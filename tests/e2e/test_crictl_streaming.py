"""exec, attach, port-forward and logs through crictl, over both of its transports."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import re
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.e2e.conftest import CRICTL
from tests.e2e.conftest import BUSYBOX, NGINX, Crictl, free_port, http_status

TRANSPORTS = ["spdy", "websocket"]


def running(cri: Crictl, name: str, **extra: object) -> str:
    pod = cri("runp", cri.pod_config())
    ctr = cri("create", pod, cri.container_config(name, BUSYBOX, **extra), cri.pod_config())
    cri("start", ctr)
    return ctr


def sleeper(cri: Crictl) -> str:
    return running(cri, "sleeper", command=["sleep", "3600"])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_output_and_exit_codes(cri: Crictl, transport: str) -> None:
    ctr = sleeper(cri)
    out = cri("exec", "--transport", transport, ctr, "ls", "/")
    assert "bin" in out.split() and "etc" in out.split()
    res = cri("exec", "--transport", transport, ctr, "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert "out" in res and "err" in res
    assert "command terminated with exit code 7" in res
    assert cri("exec", "--transport", transport, ctr, "false", check=False).count("exit code 1") == 1
    res = cri("exec", "--transport", transport, ctr, "no-such-command", check=False)
    assert "no-such-command" in res
    big = cri("exec", "--transport", transport, ctr, "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x")
    assert big == "x" * 3_000_000


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_stdin(cri: Crictl, endpoint: str, transport: str) -> None:
    ctr = sleeper(cri)
    data = os.urandom(1 << 20).hex()
    res = subprocess.run([CRICTL, "--runtime-endpoint", endpoint, "exec", "-i", "--transport", transport, ctr,
                          "sh", "-c", "wc -c; exit 0"], input=data, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(len(data))


class Terminal:
    """The master side of a pty, read up to markers."""

    def __init__(self, fd: int, timeout: float = 30) -> None:
        self.fd = fd
        self.buf = b""
        self.deadline = time.monotonic() + timeout

    def expect(self, marker: bytes) -> bytes:
        """Everything up to and including `marker`."""
        while marker not in self.buf:
            left = self.deadline - time.monotonic()
            assert left > 0, f"no {marker!r} in {self.buf[-2000:]!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                assert chunk, f"the terminal closed without {marker!r}: {self.buf[-2000:]!r}"
                self.buf += chunk
        end = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_it_in_a_terminal(cri: Crictl, endpoint: str, transport: str) -> None:
    ctr = sleeper(cri)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen([CRICTL, "--runtime-endpoint", endpoint, "exec", "-it", "--transport", transport,
                             ctr, "sh"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        term = Terminal(master)
        os.write(master, b"stty size; tty; echo $((6*7))-done\r")
        out = term.expect(b"42-done")
        assert b"33 111" in out and b"/dev/pts/" in out
        term.expect(b"# ")
        # a resize of the client's terminal reaches the shell
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 44, 122, 0, 0))
        os.kill(proc.pid, 28)   # SIGWINCH: crictl reads the new size
        os.write(master, b"stty size; echo $((1+1))-size\r")
        assert b"44 122" in term.expect(b"2-size")
        os.write(master, b"exit 3\r")
        assert b"command terminated with exit code 3" in term.expect(b"exit code 3")
        assert proc.wait(10) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    # the session left no process behind in the container
    ps = cri("exec", ctr, "ps", "-o", "pid,args")
    assert [line for line in ps.splitlines()[1:] if " sh" in line and "ps " not in line] == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_client_killed_hangs_up_the_process(cri: Crictl, endpoint: str, transport: str) -> None:
    ctr = sleeper(cri)
    proc = subprocess.Popen([CRICTL, "--runtime-endpoint", endpoint, "exec", "-i", "--transport", transport,
                             ctr, "sh", "-c", "echo started; exec sleep 777"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while "sleep 777" in cri("exec", ctr, "ps", "-o", "args"):
        assert time.monotonic() < deadline, "the exec'd process outlived its client"
        time.sleep(0.2)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_attach(cri: Crictl, endpoint: str, transport: str) -> None:
    ctr = running(cri, "shell", command=["sh"], stdin=True, stdin_once=True)
    res = subprocess.run([CRICTL, "--runtime-endpoint", endpoint, "attach", "-i", "--transport", transport, ctr],
                         input="echo attached-out; echo attached-err >&2; exit 4\n", capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "attached-out" in res.stdout and "attached-err" in res.stderr
    deadline = time.monotonic() + 10
    while (status := cri.inspect("inspect", ctr)["status"])["state"] != "CONTAINER_EXITED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status["exitCode"] == 4


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_port_forward_to_nginx(cri: Crictl, endpoint: str, transport: str) -> None:
    pod = cri("runp", cri.pod_config())
    ctr = cri("create", pod, cri.container_config("nginx", NGINX), cri.pod_config())
    cri("start", ctr)
    port = free_port()
    proc = subprocess.Popen([CRICTL, "--runtime-endpoint", endpoint, "port-forward", "--transport", transport,
                             pod, f"{port}:80"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert http_status(f"http://127.0.0.1:{port}/") == 200
        for _ in range(5):   # several connections over one forwarding session
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                assert b"Welcome to nginx" in r.read()
        curl = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                              timeout=30)
        assert "Welcome to nginx" in curl.stdout, curl.stderr
        # a port nothing listens on: the connection is closed, the session lives on
        subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/"], capture_output=True, timeout=30)
    finally:
        proc.terminate()
        proc.wait(10)


def test_port_forward_to_a_closed_port_reports_it(cri: Crictl, endpoint: str) -> None:
    pod = cri("runp", cri.pod_config())
    port = free_port()
    proc = subprocess.Popen([CRICTL, "--runtime-endpoint", endpoint, "port-forward", pod, f"{port}:81"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["curl", "-sS", "-m", "5", f"http://127.0.0.1:{port}/"],
                             capture_output=True).returncode == 7:   # not listening yet
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "error forwarding port 81" in out


def test_logs_follow_tail_since_timestamps(cri: Crictl, endpoint: str) -> None:
    ctr = running(cri, "counter", command=["sh", "-c", "i=0; while [ $i -lt 5 ]; do echo line-$i; i=$((i+1)); "
                                                          "done; sleep 2; echo late; sleep 4; echo followed; "
                                                          "sleep 3600"])
    deadline = time.monotonic() + 20
    while "late" not in cri("logs", ctr):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc = subprocess.Popen([CRICTL, "--runtime-endpoint", endpoint, "logs", "-f", ctr],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert cri("logs", ctr).splitlines() == [f"line-{i}" for i in range(5)] + ["late"]
        assert cri("logs", "--tail", "2", ctr).splitlines() == ["line-4", "late"]
        stamped = cri("logs", "--timestamps", ctr).splitlines()
        assert len(stamped) == 6 and stamped[0].endswith(" line-0")
        when = datetime.fromisoformat(stamped[0].split(" ", 1)[0][:26].rstrip("Z") + "+00:00")
        assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 120
        assert "line-0" not in cri("logs", "--since", "1s", ctr)
        assert "line-0" in cri("logs", "--since", "10m", ctr)
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(7)]
        assert lines == [f"line-{i}" for i in range(5)] + ["late", "followed"]
    finally:
        proc.kill()
        proc.wait()


def test_log_file_format_long_partial_and_binary_lines(cri: Crictl) -> None:
    script = ("head -c 20000 /dev/zero | tr '\\0' a; echo; printf 'bin\\001\\377x\\n'; echo err >&2; "
              "printf no-newline")
    ctr = running(cri, "longline", command=["sh", "-c", script])
    deadline = time.monotonic() + 20
    while cri.inspect("inspect", ctr)["status"]["state"] != "CONTAINER_EXITED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    path = Path(cri.inspect("inspect", ctr)["status"]["logPath"])
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    entries = [line.split(b" ", 3) for line in path.read_bytes().split(b"\n") if line]
    assert all(re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)", e[0]) for e in entries)
    stdout = [e for e in entries if e[1] == b"stdout"]
    # the long line comes in parts (P) ended by a full one (F)
    # (the newline may come in a read of its own: then the F part is empty)
    first = next(i for i, e in enumerate(stdout) if e[3].startswith(b"a"))
    end = next(i for i, e in enumerate(stdout) if i >= first and e[2] == b"F")
    long_parts = stdout[first:end + 1]
    assert len(long_parts) > 1 and all(e[2] == b"P" for e in long_parts[:-1])
    assert b"".join(e[3] for e in long_parts) == b"a" * 20000
    assert [b"F", b"bin\x01\xffx"] in [e[2:] for e in stdout]
    assert stdout[-1][2:] == [b"P", b"no-newline"]   # the last line had no newline
    assert [e[2:] for e in entries if e[1] == b"stderr"] == [[b"F", b"err"]]
