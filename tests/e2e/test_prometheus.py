"""A real Prometheus (Debian's package) scrapes the daemon's metrics endpoint and answers
queries for criservice's RPC counters and the pod start timeline."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BUSYBOX, Crictl

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _metrics_address() -> str:
    config = os.environ.get("CRISERVICE_CONFIG", "")
    if not config or not os.path.exists(config):
        pytest.skip("CRISERVICE_CONFIG (from hack/e2e-env.sh env) names no config file")
    with open(config, "rb") as f:
        address = tomllib.load(f).get("metrics", {}).get("address", "")
    if not address:
        pytest.skip("the e2e daemon serves no metrics ([metrics] address is empty)")
    return str(address)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    if not os.path.exists(PROMETHEUS):
        pytest.skip("Debian's prometheus is not installed (hack/install-deps.sh installs it)")
    target = _metrics_address()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "criservice", "static_configs": [{"targets": [target]}]}]}))
    web = f"127.0.0.1:{_free_port()}"
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address={web}", "--web.enable-lifecycle"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://{web}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


def _wait_for(base: str, expr: str, deadline: float = 60) -> list[dict]:
    end = time.monotonic() + deadline
    while True:
        try:
            result = _query(base, expr)
            if result:
                return result
        except OSError:
            pass  # not listening yet
        if time.monotonic() > end:
            raise AssertionError(f"prometheus has no result for {expr!r} after {deadline}s")
        time.sleep(0.5)


def test_prometheus_scrapes_operations_and_the_pod_start_timeline(cri: Crictl, prometheus: str) -> None:  # noqa: F811
    pod = cri("runp", cri.pod_config())
    ctr = cri("create", pod, cri.container_config("sleeper", BUSYBOX, command=["sleep", "600"]),
              cri.pod_config())
    cri("start", ctr)

    up = _wait_for(prometheus, 'up{job="criservice"} == 1')
    assert up[0]["value"][1] == "1"
    ops = _wait_for(prometheus, 'criservice_grpc_operations_total{method="RunPodSandbox",code="OK"}')
    assert float(ops[0]["value"][1]) >= 1
    phases = {r["metric"]["phase"]: float(r["value"][1])
              for r in _wait_for(prometheus, "criservice_pod_start_phase_duration_seconds_count")}
    for phase in ("namespaces", "cni", "create", "start"):
        assert phases.get(phase, 0) >= 1, phases
    # The histogram answers the question it is there for: how long does each phase take?
    quantiles = _wait_for(prometheus, "histogram_quantile(0.9, sum by (phase, le) "
                                      "(criservice_pod_start_phase_duration_seconds_bucket))")
    assert {r["metric"]["phase"] for r in quantiles} >= {"namespaces", "cni", "create", "start"}
    running = _wait_for(prometheus, 'criservice_containers{state="running"}')
    assert float(running[0]["value"][1]) >= 1
