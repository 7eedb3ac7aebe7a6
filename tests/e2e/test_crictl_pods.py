"""Pods and containers driven by crictl, as a node operator would."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.e2e.conftest import BUSYBOX, LABEL, NGINX, Crictl, free_port, http_status


def test_nginx_pod_answers_on_its_ip_and_a_host_port(cri: Crictl) -> None:
    port = free_port()
    pod_cfg = cri.pod_config(port_mappings=[{"protocol": 0, "container_port": 80, "host_port": port}])
    pod = cri("runp", pod_cfg)
    ctr = cri("create", pod, cri.container_config("web", NGINX), pod_cfg)
    cri("start", ctr)

    assert ctr in cri("ps", "-q", "--state", "running", "--pod", pod).split()
    assert pod in cri("pods", "-q", "--state", "ready", "--label", f"{LABEL}={cri.name}").split()
    podinfo = cri.inspect("inspectp", pod)
    ip = podinfo["status"]["network"]["ip"]
    assert podinfo["status"]["state"] == "SANDBOX_READY"
    assert podinfo["status"]["metadata"]["name"] == cri.name
    assert set(podinfo["info"]["phasesMs"]) >= {"namespaces", "network"}
    assert http_status(f"http://{ip}/") == 200
    assert http_status(f"http://127.0.0.1:{port}/") == 200

    status = cri.inspect("inspect", ctr)["status"]
    assert status["state"] == "CONTAINER_RUNNING" and status["image"]["image"] == NGINX
    assert status["imageRef"].startswith("registry.k8s.io/e2e-test-images/nginx@sha256:")
    assert status["logPath"] == str(cri.workdir / "logs" / "web.log")

    cri("stopp", pod)
    assert cri.inspect("inspectp", pod)["status"]["state"] == "SANDBOX_NOTREADY"
    assert cri.inspect("inspect", ctr)["status"]["state"] == "CONTAINER_EXITED"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    cri("rmp", pod)
    assert "not found" in cri("inspect", ctr, check=False).lower()


def test_container_lifecycle_exec_logs_update(cri: Crictl) -> None:
    pod_cfg = cri.pod_config(dns_config={"servers": ["10.0.0.10"], "searches": ["e2e.svc"]},
                             hostname="box-host")
    pod = cri("runp", pod_cfg)
    ctr = cri("create", pod, cri.container_config(
        "box", BUSYBOX, command=["sh", "-c", "echo started; trap 'echo bye; exit 7' TERM; "
                                             "while true; do sleep 0.1; done"],
        envs=[{"key": "GREETING", "value": "hello there"}]), pod_cfg)
    assert cri.inspect("inspect", ctr)["status"]["state"] == "CONTAINER_CREATED"
    cri("start", ctr)

    assert cri("exec", "-s", ctr, "sh", "-c", "echo $GREETING") == "hello there"
    assert cri("exec", "-s", ctr, "hostname") == "box-host"
    resolv = cri("exec", "-s", ctr, "cat", "/etc/resolv.conf")
    assert "nameserver 10.0.0.10" in resolv and "search e2e.svc" in resolv
    failed = cri("exec", "-s", ctr, "sh", "-c", "echo out; exit 3", check=False)
    assert "exited with 3" in failed

    cri("update", "--memory", str(64 << 20), ctr)
    assert cri.inspect("inspect", ctr)["status"]["resources"]["linux"]["memoryLimitInBytes"] == str(64 << 20)
    limit = cri("exec", "-s", ctr, "sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                                               "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert limit == str(64 << 20)

    cri("stop", "-t", "10", ctr)
    status = cri.inspect("inspect", ctr)["status"]
    assert (status["state"], status["exitCode"], status["reason"]) == ("CONTAINER_EXITED", 7, "Error")
    assert cri("logs", ctr).splitlines() == ["started", "bye"]
    cri("stop", ctr)  # idempotent
    cri("rm", ctr)
    assert not cri("ps", "-a", "-q", "--pod", pod)
    cri("stopp", pod)
    cri("rmp", pod)
    cri("rmp", pod, check=False)


def test_crictl_run_starts_pod_and_container_at_once(cri: Crictl) -> None:
    ctr_cfg = cri.container_config("once", BUSYBOX, command=["sh", "-c", "echo ran; exit 0"])
    ctr = cri("run", ctr_cfg, cri.pod_config())
    deadline = time.monotonic() + 20
    while (status := cri.inspect("inspect", ctr)["status"])["state"] != "CONTAINER_EXITED":
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert (status["exitCode"], status["reason"]) == (0, "Completed")
    assert cri("logs", ctr) == "ran"


def test_bad_requests_name_what_is_wrong(cri: Crictl) -> None:
    pod_cfg = cri.pod_config()
    out = cri("create", "0123456789ab", cri.container_config("x", BUSYBOX), pod_cfg, check=False)
    assert "NotFound" in out and "0123456789ab" in out
    pod = cri("runp", pod_cfg)
    missing = "registry.k8s.io/e2e-test-images/not-pulled:1.0"
    out = cri("create", "--no-pull", pod, cri.container_config("y", missing), pod_cfg, check=False)
    assert "NotFound" in out and missing in out
    out = cri("runp", pod_cfg, check=False)
    assert "AlreadyExists" in out
    out = cri("runp", "--runtime", "no-such-handler", cri.pod_config(metadata={
        "name": "other", "namespace": "e2e", "uid": "u-other"}), check=False)
    assert "no-such-handler" in out
    cri("stopp", pod)
    out = cri("create", pod, cri.container_config("z", BUSYBOX), pod_cfg, check=False)
    assert "FailedPrecondition" in out and "not ready" in out
