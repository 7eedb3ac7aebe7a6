"""Many streaming sessions at once: 50 concurrent execs and 20 concurrent port-forwarded
10 MB downloads, all with the right bytes, and nothing left behind afterwards."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.conftest import CRICTL
from tests.e2e.conftest import BUSYBOX, NGINX, Crictl, free_port, http_status

EXECS = 50
FORWARDS = 20
SIZE = 10 * 1024 * 1024


def daemon_pid() -> int:
    return int((Path(os.environ["CRISERVICE_CONFIG"]).parent / "criservice.pid").read_text())


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def runc_execs() -> list[str]:
    """`runc exec` processes on the host."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if os.path.basename(argv[0]) == b"runc" and b"exec" in argv:
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def settled(check: "callable[[], bool]", timeout: float = 20) -> bool:   # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while not check():   # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_concurrent_execs_and_port_forwards(cri: Crictl, endpoint: str) -> None:  # noqa: F811
    pod = cri("runp", cri.pod_config())
    ctr = cri("create", pod, cri.container_config("sleeper", BUSYBOX, command=["sleep", "3600"]), cri.pod_config())
    cri("start", ctr)
    nginx = cri("create", pod, cri.container_config("nginx", NGINX), cri.pod_config())
    cri("start", nginx)
    payload = os.urandom(SIZE)
    res = subprocess.run([CRICTL, "--runtime-endpoint", endpoint, "exec", "-i", nginx, "sh", "-c",
                          "cat > /usr/share/nginx/html/big"], input=payload, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    want = hashlib.sha256(payload).hexdigest()
    pid = daemon_pid()
    fds_before = fds(pid)
    ps_before = cri("exec", ctr, "ps", "-o", "pid,args")

    def one_exec(i: int) -> str:
        data = os.urandom(200_000 + i)
        r = subprocess.run([CRICTL, "--runtime-endpoint", endpoint, "exec", "-i", ctr, "sha256sum"],
                           input=data, capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()[0].decode() + " " + hashlib.sha256(data).hexdigest()

    port = free_port()
    forward = subprocess.Popen([CRICTL, "--runtime-endpoint", endpoint, "port-forward", pod, f"{port}:80"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert http_status(f"http://127.0.0.1:{port}/") == 200

        def one_download(_: int) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/big", timeout=300) as r:
                return hashlib.sha256(r.read()).hexdigest()

        with ThreadPoolExecutor(EXECS + FORWARDS) as pool:
            execs = pool.map(one_exec, range(EXECS))
            downloads = pool.map(one_download, range(FORWARDS))
            for line in execs:
                got, expected = line.split()
                assert got == expected
            assert list(downloads) == [want] * FORWARDS
    finally:
        forward.terminate()
        forward.wait(10)
    assert settled(lambda: not runc_execs()), runc_execs()
    assert settled(lambda: fds(pid) <= fds_before), (fds_before, fds(pid), os.listdir(f"/proc/{pid}/fd"))
    assert cri("exec", ctr, "ps", "-o", "pid,args").count("\n") == ps_before.count("\n")
