"""The whole critest validation suite, through hack/critest.sh (which holds the
skips that have reasons and prints the tally by area)."""

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO


def test_critest_whole_suite(endpoint: str, tmp_path: Path) -> None:
    res = subprocess.run([str(REPO / "hack/critest.sh")], capture_output=True, text=True,
                         timeout=1800, env={**os.environ, "CRITEST_REPORT_DIR": str(tmp_path)})
    print(res.stdout)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "| total" in res.stdout
