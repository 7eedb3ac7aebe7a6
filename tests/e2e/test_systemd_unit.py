"""criservice as the unit of deploy/systemd, installed and started by the README's first
command (hack/local-up.sh), where systemd is PID 1: `hack/vm.sh test` runs these in
its guest with CONTAINER_RUNTIME_ENDPOINT naming the unit's socket. Clients: crictl,
systemctl and journalctl."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BUSYBOX, Crictl

UNIT = "criservice"
SOCKET = "unix:///run/criservice/criservice.sock"

pytestmark = [
    pytest.mark.skipif(not Path("/run/systemd/system").is_dir(), reason="needs systemd as PID 1 (hack/vm.sh test)"),
    pytest.mark.skipif(os.environ.get("CONTAINER_RUNTIME_ENDPOINT") != SOCKET,
                       reason=f"needs the unit's daemon as CONTAINER_RUNTIME_ENDPOINT ({SOCKET})"),
]


def show(*props: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", UNIT, *(f"--property={p}" for p in props)],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(since: str) -> str:
    return subprocess.run(["journalctl", "-u", UNIT, "-o", "cat", "--no-pager", "--since", since],
                          capture_output=True, text=True, check=True).stdout


def test_the_unit_is_type_notify_and_ready_once_it_serves(cri: Crictl) -> None:
    s = show("Type", "ActiveState", "SubState", "MainPID", "StatusText", "KillMode", "Delegate")
    assert (s["Type"], s["ActiveState"], s["SubState"]) == ("notify", "active", "running"), s
    assert (s["KillMode"], s["Delegate"]) == ("process", "yes"), s
    assert s["StatusText"] == "serving on /run/criservice/criservice.sock", s
    assert "RuntimeName:  criservice" in cri("version")
    pid = s["MainPID"]
    assert f"pid={pid}" in journal("-1h"), "the daemon's log is not in the journal"


def test_systemctl_restart_keeps_every_container_running_and_known(cri: Crictl) -> None:
    pod = cri("runp", cri.pod_config())
    ctr = cri("create", pod, cri.container_config("sleeper", BUSYBOX, command=["sleep", "3600"]), cri.pod_config())
    cri("start", ctr)
    pid = cri.inspect("inspect", ctr)["info"]["pid"]
    before = show("MainPID")["MainPID"]
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    # A Type=notify unit's restart returns once the new daemon sent READY=1.
    subprocess.run(["systemctl", "restart", UNIT], check=True, timeout=300)
    after = show("MainPID", "ActiveState")
    assert after["MainPID"] != before and after["ActiveState"] == "active", after
    status = cri.inspect("inspect", ctr)
    assert (status["status"]["state"], status["info"]["pid"]) == ("CONTAINER_RUNNING", pid)
    assert Path(f"/proc/{pid}").exists()
    assert cri.inspect("inspectp", pod)["status"]["state"] == "SANDBOX_READY"
    log = journal(since)
    assert 'msg="stopping" signal=SIGTERM' in log and 'msg="stopped"' in log and 'msg="serving"' in log, log
