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
    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket = ""

    def start(self, timeout: float = 20) -> "DaemonProcess":
        from criservice.config import load
        self.socket = load(self.config).api.socket
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([CRISERVICE, "--config", str(self.config), "serve"],
                                         stdout=log, stderr=subprocess.STDOUT)
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

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRISERVICE, *args], capture_output=True, text=True, timeout=timeout)
