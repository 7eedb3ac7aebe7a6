"""Print a ginkgo suite's result by area from its JSON report: critest's (hack/critest.sh)
or e2e_node.test's (hack/node-e2e.sh). Usage: critest_tally.py REPORT [AREA COLUMN TITLE]
A suite set-up or tear-down that failed counts as a failed spec of "(suite set-up)".

Exit status 1 when a spec failed, or when the report holds no spec at all.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict

STATES = ("passed", "skipped", "failed")


def tally(report: list[dict]) -> dict[str, Counter[str]]:
    areas: dict[str, Counter[str]] = defaultdict(Counter)
    for suite in report:
        for spec in suite.get("SpecReports") or []:
            state = spec.get("State", "?")
            if spec.get("LeafNodeType") != "It":
                if state not in ("passed", "skipped", "pending"):
                    areas["(suite set-up)"]["failed"] += 1
                continue
            area = (spec.get("ContainerHierarchyTexts") or ["?"])[0].removeprefix("[k8s.io] ")
            areas[area]["failed" if state not in ("passed", "skipped", "pending") else state] += 1
    return areas


def main(path: str, title: str = "critest area", ran_only: bool = False) -> int:
    with open(path) as f:
        areas = tally(json.load(f))
    total: Counter[str] = Counter()
    print(f"| {title:<40} | passed | skipped | failed |")
    print(f"|{'-' * 42}|--------|---------|--------|")
    for area in sorted(areas):
        c = areas[area]
        total.update(c)
        if ran_only and not (c["passed"] or c["failed"]):
            continue   # every spec of the area was left out by the focus
        print(f"| {area:<40} | {c['passed']:>6} | {c['skipped']:>7} | {c['failed']:>6} |")
    print(f"| {'total':<40} | {total['passed']:>6} | {total['skipped']:>7} | {total['failed']:>6} |")
    return 1 if total["failed"] or not sum(total.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], *sys.argv[2:3], ran_only="--ran-only" in sys.argv))
