"""Shared fixtures: a daemon configuration rooted in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# CNI plugins as Debian installs them; tests that need real plugins skip without them.
CNI_BIN_DIRS = ["/usr/lib/cni", "/opt/cni/bin"]


def write_config(base: Path, extra: str = "", cni_dir: Path | None = None) -> Path:
    """A config whose socket, state and run dirs all live under `base`."""
    # Unix socket paths are limited to 107 bytes; pytest's tmp paths can be long.
    run = base / "run"
    cfg = base / "criservice.toml"
    cfg.write_text(f"""
[api]
socket = "{run}/c.sock"
[paths]
state_dir = "{base}/state"
run_dir = "{run}"
[cni]
conf_dir = "{cni_dir or base / 'cni'}"
{extra}
""")
    return cfg


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary directory with a short path (unix socket paths max out at 107 bytes)."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="crs-", dir="/tmp"))
    yield d
    import shutil
    shutil.rmtree(d, ignore_errors=True)


def is_root() -> bool:
    return os.geteuid() == 0
