"""Stats, metrics and events as a node operator sees them: crictl stats, statsp,
metricdescs, metricsp and events, and critest's stats and metrics specs."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

from tests.e2e.conftest import CRICTL, CRITEST
from tests.e2e.conftest import BUSYBOX, Crictl

BURN = ["sh", "-c", "while :; do :; done"]
FILL = ["sh", "-c", "x=$(head -c 41943040 /dev/zero | tr '\\0' a); while :; do sleep 1; done"]


def _size(text: str) -> float:
    """crictl's human sizes (4.096kB, 42.3MB) in bytes."""
    m = re.fullmatch(r"([\d.]+)([kMGT]?)i?B", text)
    assert m, text
    return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]


def _table(out: str) -> list[list[str]]:
    """Rows of crictl's table output (after the screen-clearing escape it starts with)."""
    lines = [ln for ln in out.split("\x1b[H")[-1].splitlines() if ln.strip()]
    return [re.split(r"\s{2,}", ln.strip()) for ln in lines[1:]]


def _pod_with(cri: Crictl) -> tuple[str, str, str]:  # noqa: F811
    pod = cri("runp", cri.pod_config())
    burn = cri("create", pod, cri.container_config("burn", BUSYBOX, command=BURN), cri.pod_config())
    fill = cri("create", pod, cri.container_config("fill", BUSYBOX, command=FILL), cri.pod_config())
    cri("start", burn)
    cri("start", fill)
    return pod, burn, fill


def test_crictl_stats_and_statsp_show_moving_numbers(cri: Crictl) -> None:  # noqa: F811
    pod, burn, fill = _pod_with(cri)
    time.sleep(1)  # the filler allocates its memory
    rows = {r[1]: r for r in _table(cri("stats", "--label", f"criservice-e2e={cri.name}"))}
    assert float(rows["burn"][2]) > 10, rows  # CPU %, over crictl's one-second sample (a shared 2-core machine)
    assert _size(rows["fill"][3]) > 40e6, rows       # memory (working set)
    assert _size(rows["burn"][4]) > 0 and int(rows["burn"][5]) > 0  # writable layer bytes and inodes

    raw = json.loads(cri("stats", "-o", "json", "--id", burn))["stats"][0]
    first = int(raw["cpu"]["usageCoreNanoSeconds"]["value"])
    time.sleep(1)
    raw = json.loads(cri("stats", "-o", "json", "--id", burn))["stats"][0]
    assert int(raw["cpu"]["usageCoreNanoSeconds"]["value"]) - first > 3e8  # the counter moves

    pods = {r[0]: r for r in _table(cri("statsp", "--label", f"criservice-e2e={cri.name}"))}
    assert float(pods[cri.name][2]) > 10 and _size(pods[cri.name][3]) > 40e6, pods
    detail = json.loads(cri("statsp", "-o", "json", "--id", pod))["stats"][0]
    assert detail["linux"]["network"]["defaultInterface"]["name"] == "eth0"
    assert int(detail["linux"]["process"]["processCount"]["value"]) >= 2
    assert {c["attributes"]["metadata"]["name"] for c in detail["linux"]["containers"]} == {"burn", "fill"}


def test_crictl_metricdescs_and_metricsp(cri: Crictl) -> None:  # noqa: F811
    pod, burn, fill = _pod_with(cri)
    descs = {d["name"]: d for d in json.loads(cri("metricdescs"))["descriptors"]}
    assert descs["container_memory_working_set_bytes"]["labelKeys"][:6] == [
        "container", "id", "image", "name", "namespace", "pod"]
    assert "interface" in descs["container_network_receive_bytes_total"]["labelKeys"]

    def sample() -> tuple[dict[str, Any], dict[tuple[str, str], int]]:
        (mine,) = [p for p in json.loads(cri("metricsp"))["podMetrics"] if p["podSandboxId"] == pod]
        return mine, {(c["containerId"], m["name"]): int(m["value"]["value"])
                      for c in mine["containerMetrics"] for m in c["metrics"]}

    # The filler allocates its 40 MiB in about a second; on a loaded machine it takes longer.
    deadline = time.monotonic() + 20
    mine, values = sample()
    while values[(fill, "container_memory_working_set_bytes")] <= 40e6 and time.monotonic() < deadline:
        time.sleep(0.5)
        mine, values = sample()
    assert values[(fill, "container_memory_working_set_bytes")] > 40e6
    assert values[(burn, "container_processes")] >= 1
    assert {m["name"] for m in mine["metrics"]} >= {"container_network_receive_bytes_total"}


def test_crictl_events_follow_a_container(cri: Crictl, endpoint: str) -> None:  # noqa: F811
    pod = cri("runp", cri.pod_config())
    watcher = subprocess.Popen([CRICTL, "--runtime-endpoint", endpoint, "events", "-o", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.5)
        ctr = cri("create", pod, cri.container_config("ev", BUSYBOX, command=["sleep", "600"]), cri.pod_config())
        cri("start", ctr)
        cri("stop", "-t", "1", ctr)
        cri("rm", ctr)
        time.sleep(0.5)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    decoder, events, text = json.JSONDecoder(), [], out.strip()
    while text:
        event, end = decoder.raw_decode(text)
        events.append(event)
        text = text[end:].strip()
    mine = [(e["containerEventType"], e) for e in events if e["containerId"] == ctr]
    assert [kind for kind, _ in mine] == ["CONTAINER_CREATED_EVENT", "CONTAINER_STARTED_EVENT",
                                          "CONTAINER_STOPPED_EVENT", "CONTAINER_DELETED_EVENT"]
    started = mine[1][1]
    assert started["podSandboxStatus"]["id"] == pod
    assert started["containersStatuses"][0]["state"] == "CONTAINER_RUNNING"
    # The pod start timeline in inspectp: its own phases, then its containers, in ms.
    info = cri.inspect("inspectp", pod)["info"]
    assert {"namespaces", "network"} <= set(info["phasesMs"])
    timeline = info["details"]["timeline_ms"]
    assert 0 < timeline["ev created"] < timeline["ev started"]


def test_critest_stats_and_metrics_specs(endpoint: str) -> None:
    res = subprocess.run(
        [CRITEST, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
         "-ginkgo.focus", "stats|metrics|Stats|Metrics", "-ginkgo.no-color", "-ginkgo.v"],
        capture_output=True, text=True, timeout=900)
    tally = re.search(r"Ran (\d+) of \d+ Specs.*\n.*?(\d+) Passed \| (\d+) Failed", res.stdout)
    assert tally, res.stdout[-3000:]
    assert tuple(map(int, tally.groups())) == (7, 7, 0), res.stdout[-5000:]
