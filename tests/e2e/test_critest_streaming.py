"""critest's Streaming specs over SPDY and again over WebSocket, and its log specs."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.conftest import CRITEST

WEBSOCKET = ["-websocket-exec", "-websocket-attach", "-websocket-portforward"]


def critest(endpoint: str, focus: str, *flags: str) -> tuple[int, int, int]:
    res = subprocess.run([CRITEST, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint, *flags,
                          "-ginkgo.focus", focus, "-ginkgo.no-color"], capture_output=True, text=True, timeout=900)
    tally = re.search(r"Ran (\d+) of \d+ Specs.*\n.*?(\d+) Passed \| (\d+) Failed", res.stdout)
    assert tally, res.stdout[-3000:]
    assert res.returncode == 0, res.stdout[-5000:]
    ran, passed, failed = map(int, tally.groups())
    return ran, passed, failed


@pytest.mark.parametrize("flags", [[], WEBSOCKET], ids=["spdy", "websocket"])
def test_critest_streaming(endpoint: str, flags: list[str]) -> None:
    # exec (tty and not), attach, port-forward, port-forward in the host network
    assert critest(endpoint, "Streaming", *flags) == (5, 5, 0)


def test_critest_logs(endpoint: str) -> None:
    # starting a container with a log, reopening the log, the log of several containers
    assert critest(endpoint, r"support log|container log") == (3, 3, 0)
