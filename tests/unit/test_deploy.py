"""deploy/ agrees with itself and with the daemon: one socket everywhere, a systemd
unit that leaves containers alone, config files the daemon accepts."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from criservice import config
from criservice.config_template import DEFAULT_CONFIG
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
SOCKET = config.loads((DEPLOY / "criservice.toml").read_text()).api.socket
ENDPOINT = f"unix://{SOCKET}"
# Every file that names the runtime endpoint for a client (crictl, kubelet, kubeadm, kind).
CLIENT_FILES = ["crictl.yaml", "kubelet/10-criservice.conf", "kubelet/kubeadm.yaml",
                "kubelet/kubelet.env", "kind/kind-cluster.yaml"]


def test_default_config_file_is_what_the_daemon_prints() -> None:
    assert (DEPLOY / "criservice.toml").read_text() == DEFAULT_CONFIG


@pytest.mark.parametrize("name", CLIENT_FILES)
def test_clients_use_the_default_socket(name: str) -> None:
    endpoints = set(re.findall(r"unix://\S+?\.sock", (DEPLOY / name).read_text()))
    assert endpoints == {ENDPOINT}, name


def unit(path: Path) -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in path.read_text().splitlines() if "=" in ln and not ln.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def test_systemd_unit_keeps_containers_across_restarts() -> None:
    u = unit(DEPLOY / "systemd/criservice.service")
    assert u["KillMode"] == "process"  # conmon and containers live in the daemon's cgroup
    assert u["Restart"] in ("always", "on-failure") and float(u["RestartSec"]) > 0
    assert u["LimitNOFILE"] == "infinity" or int(u["LimitNOFILE"]) >= 65536
    assert u["Delegate"] == "yes"
    assert u["ExecStart"].endswith("criservice serve")
    # The socket's directory is the unit's runtime directory, kept across restarts
    # (conmon sockets and exit files live there).
    assert f"/run/{u['RuntimeDirectory']}" == str(Path(SOCKET).parent)
    assert u["RuntimeDirectoryPreserve"] == "yes"


def test_kubelet_unit_dropin_orders_kubelet_after_criservice() -> None:
    u = unit(DEPLOY / "kubelet/kubelet.service.d/20-criservice.conf")
    assert u["After"] == "criservice.service" and u["Wants"] == "criservice.service"


def test_kind_dropin_loads_over_the_default_config(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "criservice.toml", tmp_path / "criservice.toml")
    (tmp_path / "criservice.toml.d").mkdir()
    shutil.copy(DEPLOY / "kind/10-kind.toml", tmp_path / "criservice.toml.d")
    cfg = config.load(tmp_path / "criservice.toml")
    assert cfg.runtime.cgroup_driver == "systemd"
    assert cfg.cni.bin_dirs == ["/opt/cni/bin"] and cfg.api.socket == SOCKET


def test_kind_image_copies_files_that_exist() -> None:
    # The build context is deploy/.
    for line in (DEPLOY / "kind/Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            assert (DEPLOY / line.split()[1]).exists() or line.split()[1] == "kind/dist/", line


def test_cni_example_has_host_ports() -> None:
    net = json.loads((DEPLOY / "cni/10-criservice.conflist").read_text())
    assert net["cniVersion"] and net["plugins"][0]["type"] == "bridge"
    assert any(p["type"] == "portmap" and p["capabilities"] == {"portMappings": True} for p in net["plugins"])
