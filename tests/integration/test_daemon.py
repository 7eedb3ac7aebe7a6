"""The daemon as a real process with the host's real runc, conmon and CNI plugins."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from api import api_pb2 as pb, api_pb2_grpc
from runtime import cgroups
from tests.conftest import write_config
from tests.daemon import DaemonProcess, real_cni, run_cli


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[DaemonProcess]:
    real_cni(short_tmp / "cni")
    d = DaemonProcess(write_config(short_tmp)).start()
    yield d
    d.kill()


def _stub(d: DaemonProcess) -> api_pb2_grpc.RuntimeServiceStub:
    return api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel("unix:" + d.socket))


def test_ready_with_real_runc_conmon_and_cni(daemon: DaemonProcess) -> None:
    s = _stub(daemon).Status(pb.StatusRequest(verbose=True))
    cond = {c.type: c for c in s.status.conditions}
    assert cond["RuntimeReady"].status, cond["RuntimeReady"].message
    assert cond["NetworkReady"].status, cond["NetworkReady"].message
    assert "" in [h.name for h in s.runtime_handlers] and "runc" in [h.name for h in s.runtime_handlers]
    runc = json.loads(s.info["ociRuntimes"])["runc"]
    assert runc["version"].startswith("runc version")
    assert json.loads(s.info["conmon"])["version"].startswith("conmon version")
    assert json.loads(s.info["cgroups"])["mode"] in ("v1", "hybrid", "v2")


def test_socket_is_root_only(daemon: DaemonProcess) -> None:
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o777 == 0o660 and st.st_uid == 0
    assert os.stat(os.path.dirname(daemon.socket)).st_mode & 0o777 == 0o700


def test_second_instance_refuses_and_the_first_keeps_serving(daemon: DaemonProcess) -> None:
    res = run_cli("--config", str(daemon.config), "serve", timeout=30)
    assert res.returncode != 0
    assert "another criservice is running" in res.stderr
    assert f"pid {daemon.proc.pid}" in res.stderr  # type: ignore[union-attr]
    assert _stub(daemon).Version(pb.VersionRequest()).runtime_name == "criservice"


def test_sigterm_stops_gracefully_and_removes_the_socket(daemon: DaemonProcess) -> None:
    assert daemon.stop(signal.SIGTERM) == 0
    assert not os.path.exists(daemon.socket)
    assert "stopped" in daemon.log.read_text()


def test_restart_after_a_crash_keeps_state(daemon: DaemonProcess) -> None:
    _stub(daemon).UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="10.244.7.0/24"))))
    daemon.stop(signal.SIGKILL)
    assert os.path.exists(daemon.socket)  # a crash leaves the socket behind
    daemon.start()
    s = _stub(daemon).Status(pb.StatusRequest(verbose=True))
    assert json.loads(s.info["podCIDR"]) == "10.244.7.0/24"


def test_bad_dropin_is_refused_naming_file_key_and_reason(short_tmp: Path) -> None:
    cfg = write_config(short_tmp)
    dropins = Path(f"{cfg}.d")
    dropins.mkdir()
    (dropins / "10-typo.toml").write_text('[runtime]\ncgroup_drvier = "systemd"\n')
    res = run_cli("--config", str(cfg), "serve")
    assert res.returncode == 2
    assert f"{dropins}/10-typo.toml: runtime.cgroup_drvier: unknown key" in res.stderr
    (dropins / "10-typo.toml").write_text('[runtime]\ncgroup_driver = "systemdd"\n')
    res = run_cli("--config", str(cfg), "serve")
    assert res.returncode == 2
    assert "runtime.cgroup_driver: must be one of cgroupfs, systemd; got 'systemdd'" in res.stderr
    assert not os.path.exists(short_tmp / "run" / "c.sock")


def test_doctor_passes_on_this_host(short_tmp: Path) -> None:
    real_cni(short_tmp / "cni")
    res = run_cli("--config", str(write_config(short_tmp)), "doctor")
    assert res.returncode == 0, res.stdout
    assert "all checks passed" in res.stdout
    for check in ("runtime handler runc (default)", "conmon", "cgroups", "overlayfs", "CNI",
                  "seccomp", "state dir", "socket"):
        assert f"] {check}:" in res.stdout
    if os.access("/usr/bin/crun", os.X_OK):
        # crun answers --version, then refuses every container on a v1 hybrid host.
        hybrid = cgroups.detect().mode == "hybrid"
        assert ("[warn] runtime handler crun: " in res.stdout) == hybrid, res.stdout
        assert ("crun refuses cgroup v1 hybrid hosts" in res.stdout) == hybrid


def test_doctor_names_the_fix_when_conmon_is_missing(short_tmp: Path) -> None:
    real_cni(short_tmp / "cni")
    cfg = write_config(short_tmp, '[runtime]\nconmon = "/nonexistent/conmon"\n')
    res = run_cli("--config", str(cfg), "doctor")
    assert res.returncode == 1
    assert "[FAIL] conmon: /nonexistent/conmon not found" in res.stdout
    assert "fix: apt-get install conmon" in res.stdout


def test_doctor_reports_an_unreachable_mirror(short_tmp: Path) -> None:
    real_cni(short_tmp / "cni")
    cfg = write_config(short_tmp, '[image.registries."docker.io"]\nmirrors = ["http://127.0.0.1:9"]\n')
    res = run_cli("--config", str(cfg), "doctor")
    assert res.returncode == 1
    assert "[FAIL] mirror http://127.0.0.1:9 (docker.io)" in res.stdout


def test_config_default_prints_a_loadable_file(short_tmp: Path) -> None:
    res = run_cli("config", "default")
    assert res.returncode == 0 and "[runtime.handlers.runc]" in res.stdout
    f = short_tmp / "default.toml"
    f.write_text(res.stdout)
    assert run_cli("--config", str(f), "config", "check").returncode == 0


def test_streaming_server_over_tls(short_tmp: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.registry_helpers import free_port, self_signed, write_key
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(short_tmp / "stream.crt", "127.0.0.1", key)
    port = free_port()
    d = DaemonProcess(write_config(short_tmp, f"""
[streaming]
port = {port}
tls_cert_file = "{cert}"
tls_key_file = "{write_key(short_tmp / 'stream.key', key)}"
""")).start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /exec/not-a-token HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 404")
    finally:
        d.kill()


def test_tls_needs_both_files(short_tmp: Path) -> None:
    res = run_cli("--config", str(write_config(short_tmp, '[streaming]\ntls_cert_file = "/x.crt"\n')),
                  "config", "check")
    assert res.returncode == 2 and "streaming.tls_key_file" in res.stderr and "both" in res.stderr
