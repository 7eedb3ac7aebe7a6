"""The whole critest validation suite, through hack/critest.sh (which holds the
skips that have reasons and prints the tally by area)."""

import os
import subprocess

from tests.conftest import REPO

# Areas whose issue has not landed yet; each goes when its issue lands.
PENDING = [
    r"Streaming",            # issue 5: streaming server (exec, attach, port-forward)
    r"listing.*stats",       # issue 6: container stats
]


def test_critest_whole_suite(endpoint: str, tmp_path) -> None:
    args = ["-ginkgo.skip", "|".join(f"({p})" for p in PENDING)] if PENDING else []
    res = subprocess.run([str(REPO / "hack/critest.sh"), *args], capture_output=True, text=True,
                         timeout=1800, env={**os.environ, "CRITEST_REPORT_DIR": str(tmp_path)})
    print(res.stdout)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "| total" in res.stdout
