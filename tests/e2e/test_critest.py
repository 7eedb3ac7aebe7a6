"""critest (cri-tools v1.37.0), restricted to the areas criservice implements so far.

Each later issue widens FOCUS; the full suite becomes hack/critest.sh.
"""

import re
import subprocess

from tests.e2e.conftest import CRITEST

# The areas criservice implements so far; every spec they select must pass.
FOCUS = [
    r"Runtime info",
    r"Image Manager",
    r"Image Consistency",
    r"PodSandbox runtime should support basic operations",
    r"Container runtime should support basic operations",
    r"Container runtime should support adding volume",
    r"Container runtime should support log",
    r"Networking",
    r"Idempotence",
    r"Multiple Containers",
    r"Container Mount Propagation",
    r"Container OOM",
    r"Container Mount Readonly",
]
# Specs the focus selects (some areas overlap, and feature-gated ones skip themselves).
EXPECTED = 50
# Specs left out, each with its reason.
SKIP = {
    # Pins the digest of the upstream busybox image; a rebuilt offline image cannot have it.
    r"public image with digest should be pulled and removed",
    # Container stats arrive with issue 6 (observability).
    r"listing.*stats",
}


def test_critest_implemented_areas(endpoint: str) -> None:
    focus = "|".join(f"({f})" for f in FOCUS)
    skip = "|".join(f"({s})" for s in sorted(SKIP))
    res = subprocess.run(
        [CRITEST, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
         "-ginkgo.focus", focus, "-ginkgo.skip", skip, "-ginkgo.no-color", "-ginkgo.v"],
        capture_output=True, text=True, timeout=1800)
    tally = re.search(r"Ran (\d+) of \d+ Specs.*\n.*?(\d+) Passed \| (\d+) Failed", res.stdout)
    assert tally, res.stdout[-3000:]
    ran, passed, failed = map(int, tally.groups())
    assert (ran, passed, failed) == (EXPECTED, EXPECTED, 0), res.stdout[-5000:]
    assert res.returncode == 0
