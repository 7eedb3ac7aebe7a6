"""Running `criservice serve` as a real subprocess for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc

from tests.conftest import REPO

CRISERVICE = str(REPO / ".venv/bin/criservice")


def real_cni(conf_dir: Path, bridge: str = "crs-test0", subnet: str = "10.99.0.0/24") -> None:
    """A bridge network config using the host's real plugins (never used to add a pod here)."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-test.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "test", "plugins": [
            {"type": "bridge", "bridge": bridge, "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}))


class DaemonProcess:
    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env or {}  # set in the daemon's environment on every start
        self.log = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket = ""

    def start(self, timeout: float = 20, crash_at: str = "") -> "DaemonProcess":
        """`crash_at` arms a crash point (runtime/crashpoints.py): the daemon SIGKILLs
        itself when a request first passes it."""
        from criservice.config import load
        from runtime.crashpoints import ENV
        self.socket = load(self.config).api.socket
        env = {k: v for k, v in os.environ.items() if k != ENV} | self.env
        if crash_at:
            env[ENV] = crash_at
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([CRISERVICE, "--config", str(self.config), "serve"],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"criservice exited {self.proc.returncode}:\n{self.log.read_text()}")
            if os.path.exists(self.socket):
                with grpc.insecure_channel("unix:" + self.socket) as ch:
                    try:
                        grpc.channel_ready_future(ch).result(timeout=1)
                        return self
                    except grpc.FutureTimeoutError:
                        pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"criservice did not answer within {timeout}s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def wait_crashed(self, timeout: float = 30) -> None:
        """The daemon died by SIGKILL, as an armed crash point makes it."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        assert code == -signal.SIGKILL, f"criservice exited {code}, not by its crash point"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRISERVICE, *args], capture_output=True, text=True, timeout=timeout)
