"""critest (cri-tools v1.37.0), restricted to the areas criservice implements so far.

Each later issue widens FOCUS; the full suite becomes hack/critest.sh.
"""

import re
import subprocess

from tests.e2e.conftest import CRITEST

# area regex -> the number of specs it selects that must all pass
FOCUS = {
    r"Runtime info": 2,
}


def test_critest_implemented_areas(endpoint: str) -> None:
    focus = "|".join(f"({f})" for f in FOCUS)
    res = subprocess.run(
        [CRITEST, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
         "-ginkgo.focus", focus, "-ginkgo.no-color", "-ginkgo.v"],
        capture_output=True, text=True, timeout=1800)
    tally = re.search(r"Ran (\d+) of \d+ Specs.*\n.*?(\d+) Passed \| (\d+) Failed", res.stdout)
    assert tally, res.stdout[-3000:]
    ran, passed, failed = map(int, tally.groups())
    assert (ran, passed, failed) == (sum(FOCUS.values()), sum(FOCUS.values()), 0), res.stdout[-5000:]
    assert res.returncode == 0
