"""A real kubelet (v1.37, standalone: static pods, no API server) runs pods on
criservice. Each scenario checks the kubelet's own view (its /pods, its logs and
/run endpoints) against the runtime's (crictl) and the host.

The tests share one kubelet and run in file order: the restart scenario finds the
pods of the earlier ones running, the last one removes every manifest and checks
that nothing is left. `hack/kubelet-e2e.sh` runs them (it builds the kubelet and
brings up the environment when needed)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import BUSYBOX, NGINX, free_port
from tests.e2e.kubelet_node import (
    CGROUP_FS, CGROUP_V2, CONTAINER_LOG_LINKS, KUBELET, Kubelet, cni_leases, foreign_sandboxes, mount_points, pgrep,
    runtime_cgroup_driver, wait_for,
)
from tests.e2e.kubelet_stream import kubelet_exec, kubelet_port_forward
from tests.e2e.kubelet_views import RUNTIME_PREFIX, RuntimeView, assert_agree

HOST_PORT = free_port()
TOKEN = f"token-{os.getpid()}"


@pytest.fixture(scope="module")
def kubelet(endpoint: str) -> Iterator[Kubelet]:
    if not KUBELET.exists():
        if os.environ.get("KUBELET_E2E_REQUIRED"):
            pytest.fail(f"{KUBELET} is missing: hack/install-kubelet.sh builds it")
        pytest.skip(f"{KUBELET} is missing: run hack/install-kubelet.sh (or hack/kubelet-e2e.sh)")
    # A kubelet stops and removes every pod it does not know: never on pods of others.
    others = foreign_sandboxes(endpoint)
    assert not others, (f"the runtime at {endpoint} has pods that a kubelet did not make "
                        f"({', '.join(others)}); the kubelet would remove them")
    k = Kubelet.from_env(endpoint)
    stale = k.cleanup()  # what an interrupted earlier run left
    assert not stale, f"cannot clean up an earlier run: {stale}"
    k.prepare()
    try:
        k.start()
        yield k
    finally:
        keep = os.environ.get("KUBELET_E2E_REPORT_DIR")
        if keep and k.log.exists():
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / "kubelet.log").write_bytes(k.log.read_bytes())
        left = k.cleanup()
        assert not left, f"left on the host after the kubelet tests: {left}"


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": containers, **spec}}


def shell(name: str, script: str, image: str = BUSYBOX, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "command": ["sh", "-c", script], **extra}


# A container's main loop that ends at once on SIGTERM (PID 1 ignores it otherwise).
IDLE = "trap 'exit 0' TERM; while true; do sleep 1; done"


def running(k: Kubelet, name: str, timeout: float = 120) -> dict[str, Any]:
    """The kubelet's pod once it is Running with every container ready."""
    def ready() -> dict[str, Any] | None:
        p = k.pod(name)
        if p and p["status"].get("phase") == "Running" and all(
                c.get("ready") for c in p["status"].get("containerStatuses", [])):
            return p
        return None
    try:
        return wait_for(ready, timeout, f"{name} to run")
    except AssertionError as e:
        raise AssertionError(f"{e}\nkubelet log:\n{k.log_tail()}") from None


def status_of(p: dict[str, Any], container: str) -> dict[str, Any]:
    statuses = p["status"].get("initContainerStatuses", []) + p["status"].get("containerStatuses", [])
    return next(c for c in statuses if c["name"] == container)


def cid(status: dict[str, Any]) -> str:
    return status["containerID"].removeprefix(RUNTIME_PREFIX)


def fetch(url: str, deadline: float = 20) -> str:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.read().decode()
    return wait_for(get, deadline, url)


@pytest.fixture(scope="module")
def web(kubelet: Kubelet) -> str:
    """An init container and two app containers sharing an emptyDir, env from the
    manifest, a hostPath volume and a host port."""
    host = kubelet.host_dir / "web"
    host.mkdir(parents=True, exist_ok=True)
    (host / "token").write_text(TOKEN + "\n")
    mounts = [{"name": "shared", "mountPath": "/shared"}]
    return kubelet.add(pod("web", initContainers=[
        shell("init", 'echo "$GREETING from init" > /shared/index.html && cat /host/token >> /shared/index.html'
                      " && hostname > /host/init-ran",
              env=[{"name": "GREETING", "value": "hello kubelet"}],
              volumeMounts=[*mounts, {"name": "host", "mountPath": "/host"}]),
    ], containers=[
        {"name": "web", "image": NGINX, "ports": [{"containerPort": 80, "hostPort": HOST_PORT, "protocol": "TCP"}],
         "volumeMounts": [{"name": "shared", "mountPath": "/usr/share/nginx/html"}]},
        shell("sidecar", f'echo "$NOTE" > /shared/note.txt; {IDLE}',
              env=[{"name": "NOTE", "value": "note from the manifest"}],
              volumeMounts=[*mounts, {"name": "host", "mountPath": "/host", "readOnly": True}]),
    ], volumes=[{"name": "shared", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": str(host), "type": "Directory"}}]))


def test_kubelet_runs_with_the_deploy_settings_and_the_runtimes_cgroup_driver(kubelet: Kubelet,
                                                                            endpoint: str) -> None:
    # deploy/kubelet/10-criservice.conf is in effect, merged under the test's own drop-in.
    cfg = kubelet.configz()
    assert cfg["featureGates"] == {"PodAndContainerStatsFromCRI": True}
    assert cfg["failCgroupV1"] is CGROUP_V2   # deploy/'s false on v1; upstream's true on v2
    assert (cfg["containerRuntimeEndpoint"], cfg["imageServiceEndpoint"]) == (endpoint, endpoint)
    assert (cfg["containerLogMaxSize"], cfg["containerLogMaxFiles"]) == (kubelet.log_max_size, kubelet.log_max_files)
    # The cgroup driver comes from criservice's RuntimeConfig, not from any kubelet setting.
    driver = runtime_cgroup_driver(endpoint)
    assert cfg["cgroupDriver"] == driver == kubelet.cgroup_driver
    log = kubelet.log.read_text()
    assert f'"Using cgroup driver setting received from the CRI runtime" cgroupDriver="{driver}"' in log
    assert "cgroup v1 detected" in log or not (CGROUP_FS / "memory").is_dir()


def test_pod_with_init_container_emptydir_env_hostpath_and_host_port(kubelet: Kubelet, web: str,
                                                                    endpoint: str) -> None:
    p = running(kubelet, web)
    init = status_of(p, "init")["state"]["terminated"]
    assert (init["exitCode"], init["reason"]) == (0, "Completed")
    assert {c["name"] for c in p["status"]["containerStatuses"]} == {"web", "sidecar"}
    ip = p["status"]["podIP"]
    assert ip and ip != "127.0.0.1"

    # The app answers on the pod IP and on the host port, serving what the init container
    # (env from the manifest, a file from the hostPath) and the sidecar wrote.
    assert fetch(f"http://{ip}/index.html") == f"hello kubelet from init\n{TOKEN}\n"
    assert fetch(f"http://127.0.0.1:{HOST_PORT}/note.txt") == "note from the manifest\n"
    assert (kubelet.host_dir / "web" / "init-ran").read_text().strip() == web
    # The kubelet's own /run (ExecSync through criservice) sees the env and the read-only hostPath.
    code, env = kubelet.run(web, "sidecar", "env")
    assert code == 200 and "NOTE=note from the manifest" in env.splitlines(), env
    assert kubelet.run(web, "sidecar", "cat /host/token") == (200, TOKEN + "\n")
    code, out = kubelet.run(web, "sidecar", "touch /host/x")
    assert code == 500 and "Read-only file system" in out, out
    assert_agree(kubelet, endpoint, "web pod running")


def test_kubelet_summary_stats_come_from_the_runtime(kubelet: Kubelet, web: str) -> None:
    running(kubelet, web)
    fetch(f"http://127.0.0.1:{HOST_PORT}/note.txt")

    def web_stats() -> dict[str, Any] | None:
        s = kubelet.summary()
        p = next((p for p in s["pods"] if p["podRef"]["name"] == web), None)
        ok = p and {c["name"] for c in p.get("containers", [])} == {"web", "sidecar"} \
            and p.get("network", {}).get("rxBytes", 0) > 0 and s["node"]["runtime"]["imageFs"]["capacityBytes"] > 0
        return p if ok else None
    p = wait_for(web_stats, 60, "the web pod in the kubelet's /stats/summary")
    for c in p["containers"]:
        assert c["cpu"]["usageCoreNanoSeconds"] > 0 and c["memory"]["workingSetBytes"] > 0, c
        assert c["rootfs"]["usedBytes"] >= 0 and c["logs"]["capacityBytes"] > 0, c
    assert p["memory"]["workingSetBytes"] >= sum(c["memory"]["workingSetBytes"] for c in p["containers"]) * 0.5
    # nginx's master and worker, the sidecar's shell and its sleep.
    assert p["process_stats"]["process_count"] >= 3, p.get("process_stats")
    print(f"\n{web} in /stats/summary: rx {p['network']['rxBytes']} B, tx {p['network']['txBytes']} B, "
          f"{p['process_stats']['process_count']} processes, "
          + ", ".join(f"{c['name']} cpu {c['cpu']['usageCoreNanoSeconds']} ns mem {c['memory']['workingSetBytes']} B"
                      for c in p["containers"]))


def test_kubelet_summary_without_the_cri_stats_gate(kubelet: Kubelet, web: str) -> None:
    """With the kubelet's default PodAndContainerStatsFromCRI=false (what a user gets who
    leaves out deploy/'s drop-in), CPU and memory still come from the CRI and the pod's
    cgroup, but pod network and process counts come only from cAdvisor entries carrying
    the pod's labels, which cAdvisor makes for containerd, CRI-O and Docker only (see the
    README). This pins down what such a user sees."""
    gate_off = kubelet.config_dir / "95-stats-gate-off.conf"
    gate_off.write_text(json.dumps({"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                                    "featureGates": {"PodAndContainerStatsFromCRI": False}}) + "\n")
    try:
        kubelet.restart()
        assert kubelet.configz()["featureGates"] == {"PodAndContainerStatsFromCRI": False}
        running(kubelet, web)
        fetch(f"http://127.0.0.1:{HOST_PORT}/note.txt")

        def web_stats() -> dict[str, Any] | None:
            p = next((p for p in kubelet.summary()["pods"] if p["podRef"]["name"] == web), None)
            ok = p and {c["name"] for c in p.get("containers", [])} == {"web", "sidecar"} \
                and all(c.get("cpu", {}).get("usageCoreNanoSeconds") for c in p["containers"]) \
                and p.get("cpu", {}).get("usageCoreNanoSeconds")
            return p if ok else None
        p = wait_for(web_stats, 60, "the web pod's CPU figures in /stats/summary without the gate")
        for c in p["containers"]:
            assert c["memory"]["workingSetBytes"] > 0 and c["logs"]["capacityBytes"] > 0, c
        assert p["memory"]["workingSetBytes"] > 0, p
        # The gap, as the README describes it: no network and no process count for the pod.
        assert not p.get("network", {}).get("rxBytes") and not p.get("process_stats", {}).get("process_count"), p
        print(f"\n{web} in /stats/summary without the gate: pod cpu {p['cpu']['usageCoreNanoSeconds']} ns, "
              f"mem {p['memory']['workingSetBytes']} B, network {p.get('network')}, "
              f"process_stats {p.get('process_stats')}")
    finally:
        gate_off.unlink()
        kubelet.restart()
    assert kubelet.configz()["featureGates"] == {"PodAndContainerStatsFromCRI": True}
    running(kubelet, web)


def test_exec_and_port_forward_through_the_kubelet(kubelet: Kubelet, web: str) -> None:
    """What `kubectl exec -i` and `kubectl port-forward` do past the API server."""
    running(kubelet, web)
    out, err, status = kubelet_exec(kubelet.port, web, "sidecar", ["sh", "-c", "cat; echo to-stderr >&2; exit 7"],
                                    stdin=b"hello through the kubelet\n")
    assert (out, err) == (b"hello through the kubelet\n", b"to-stderr\n")
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode", status
    assert status["details"]["causes"][0]["message"] == "7"
    out, _, status = kubelet_exec(kubelet.port, web, "web", ["cat", "/usr/share/nginx/html/note.txt"])
    assert (out, status["status"]) == (b"note from the manifest\n", "Success")

    reply = kubelet_port_forward(kubelet.port, web, 80, b"GET /note.txt HTTP/1.0\r\n\r\n",
                                 until=b"note from the manifest")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"note from the manifest\n"), reply


LIVENESS_SCRIPT = """
trap 'echo "run $n: got SIGTERM"; exit 0' TERM
if [ -e /state/first-run-done ]; then n=2; else n=1; touch /state/first-run-done; fi
echo "run $n: started"
touch /tmp/healthy
if [ $n = 1 ]; then sleep 4; rm /tmp/healthy; echo "run 1: probe file removed"; fi
while true; do sleep 1; done
"""


def test_failing_liveness_probe_restarts_the_container(kubelet: Kubelet, endpoint: str) -> None:
    # The emptyDir outlives the container: the second run stays healthy.
    name = kubelet.add(pod("liveness", [shell(
        "app", LIVENESS_SCRIPT, volumeMounts=[{"name": "state", "mountPath": "/state"}],
        livenessProbe={"exec": {"command": ["cat", "/tmp/healthy"]}, "initialDelaySeconds": 1,
                       "periodSeconds": 1, "failureThreshold": 2, "timeoutSeconds": 5})],
        volumes=[{"name": "state", "emptyDir": {}}]))
    first = cid(status_of(running(kubelet, name), "app"))

    def restarted() -> dict[str, Any] | None:
        p = kubelet.pod(name)
        s = status_of(p, "app") if p else None
        return p if s and s["restartCount"] == 1 and s.get("ready") and "running" in s["state"] else None
    p = wait_for(restarted, 90, "the kubelet to restart the unhealthy container")
    app = status_of(p, "app")
    last = app["lastState"]["terminated"]
    assert cid(app) != first and last["containerID"].removeprefix(RUNTIME_PREFIX) == first
    assert (last["exitCode"], last["reason"]) == (0, "Completed")

    assert kubelet.container_logs(name, "app", previous=True).splitlines() == [
        "run 1: started", "run 1: probe file removed", "run 1: got SIGTERM"]
    assert kubelet.container_logs(name, "app").splitlines() == ["run 2: started"]
    rt = RuntimeView.read(endpoint)
    attempts = sorted((c["metadata"]["attempt"], c["id"], c["state"]) for c in rt.containers_of(p["metadata"]["uid"]))
    assert attempts == [(0, first, "CONTAINER_EXITED"), (1, cid(app), "CONTAINER_RUNNING")]
    time.sleep(5)  # the second run stays healthy: no further restart
    assert status_of(kubelet.pod(name), "app")["restartCount"] == 1
    assert "Container app failed liveness probe, will be restarted" in kubelet.log.read_text()
    assert_agree(kubelet, endpoint, "liveness pod restarted once")


def test_exit_code_and_oom_kill_under_restart_policy_never(kubelet: Kubelet, endpoint: str) -> None:
    exit3 = kubelet.add(pod("exit3", [shell("main", 'echo "exiting with 3"; exit 3')], restartPolicy="Never"))
    # dd's 256 MiB block buffer is filled from /dev/zero: far beyond the 32 MiB limit.
    oom = kubelet.add(pod("oom", [shell("hog", 'echo allocating; exec dd if=/dev/zero of=/dev/null bs=256M count=1',
                                        resources={"limits": {"memory": "32Mi"}})], restartPolicy="Never"))

    def failed(name: str) -> dict[str, Any] | None:
        p = kubelet.pod(name)
        return p if p and p["status"].get("phase") == "Failed" else None
    for name, container, code, reason in ((exit3, "main", 3, "Error"), (oom, "hog", 137, "OOMKilled")):
        p = wait_for(lambda: failed(name), 90, f"{name} to fail")
        term = status_of(p, container)["state"]["terminated"]
        assert (term["exitCode"], term["reason"]) == (code, reason), term
        assert status_of(p, container)["restartCount"] == 0
    assert kubelet.container_logs(exit3, "main").splitlines() == ["exiting with 3"]
    assert kubelet.container_logs(oom, "hog").splitlines()[0] == "allocating"
    assert_agree(kubelet, endpoint, "exit code 3 and OOM kill")


CHATTY_LINES = 15000
# About 3.5 MB of numbered lines, 1500 a second: the kubelet (1 MiB, checked every 3 s,
# 5 files) rotates it two or three times, never more than its file limit keeps.
CHATTY_SCRIPT = f"""
trap 'exit 0' TERM
awk 'BEGIN {{ pad = sprintf("%180s", ""); gsub(/ /, "x", pad)
  for (i = 0; i < {CHATTY_LINES}; i++) {{
    printf "line %06d %s\\n", i, pad
    if (i % 1500 == 1499) {{ fflush(); system("sleep 1") }}
  }}
  print "done"; fflush() }}'
{IDLE}
"""


def read_cri_log(path: Path) -> list[str]:
    """The messages of one CRI log file (partial lines joined)."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    out, partial = [], ""
    for line in data.decode().splitlines():
        _ts, _stream, tag, msg = (line.split(" ", 3) + [""])[:4]
        partial += msg
        if tag == "F":
            out.append(partial)
            partial = ""
    return out


def test_kubelet_rotates_a_chatty_log_without_losing_a_line(kubelet: Kubelet, endpoint: str) -> None:
    name = kubelet.add(pod("chatty", [shell("chatty", CHATTY_SCRIPT)]))
    p = running(kubelet, name)
    logdir = kubelet.pod_logs / f"default_{name}_{p['metadata']['uid']}" / "chatty"
    current = logdir / "0.log"
    wait_for(lambda: current.exists() and "done" in read_cri_log(current), 90, "the last chatty line")

    rotated = sorted(logdir.glob("0.log.*"))  # the timestamp suffix sorts oldest first
    assert rotated, f"the kubelet never rotated {current} ({current.stat().st_size} bytes)"
    assert len(rotated) + 1 <= kubelet.log_max_files
    assert all(f.suffix == ".gz" for f in rotated[:-1]), rotated  # all but the newest compressed
    lines = [m for f in [*rotated, current] for m in read_cri_log(f)]
    numbers = [int(m.split()[1]) for m in lines if m.startswith("line ")]
    assert numbers == list(range(CHATTY_LINES)), "lines lost or repeated across rotations"
    assert lines[-1] == "done"
    # conmon writes to the new file after ReopenContainerLog; the kubelet reads it.
    assert kubelet.container_logs(name, "chatty").splitlines()[-1] == "done"
    assert "Failed to rotate log" not in kubelet.log.read_text()
    print(f"\nchatty: {len(rotated)} rotations, {len(numbers)} lines in "
          + ", ".join(f"{f.name} ({f.stat().st_size} B)" for f in [*rotated, current]))
    assert_agree(kubelet, endpoint, "after log rotation")


def snapshot(k: Kubelet, endpoint: str) -> dict[str, Any]:
    """What must not change across restarts: pods, sandboxes, containers, their starts."""
    view: dict[str, Any] = {}
    for name, p in k.pods().items():
        st = p["status"]
        # A restarted kubelet reads pod IPs only from ready sandboxes: a finished pod has none.
        view[f"pod {name}"] = (p["metadata"]["uid"], st.get("phase"),
                               st.get("podIP") if st.get("phase") in ("Running", "Pending") else "-")
        for c in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
            view[f"pod {name} container {c['name']}"] = (c.get("containerID"), c.get("restartCount"),
                                                         json.dumps(c.get("state"), sort_keys=True))
    rt = RuntimeView.read(endpoint)
    view |= {f"sandbox {s['id'][:13]}": (s["state"], s["createdAt"]) for s in rt.sandboxes}
    view |= {f"container {c['id'][:13]}": (c["state"], c["createdAt"]) for c in rt.containers}
    return view


def assert_unchanged(before: dict[str, Any], after: dict[str, Any], when: str) -> None:
    diff = [f"{key}: {before.get(key, '(none)')} -> {after.get(key, '(none)')}"
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
    assert not diff, f"changed {when}:\n  " + "\n  ".join(diff)


def test_criservice_then_kubelet_restart_recreate_nothing(kubelet: Kubelet, web: str, endpoint: str) -> None:
    env_sh = REPO / "hack/e2e-env.sh"
    env = subprocess.run([str(env_sh), "env"], capture_output=True, text=True, check=True).stdout
    if f"CONTAINER_RUNTIME_ENDPOINT={endpoint}" not in env.splitlines():
        pytest.skip("the runtime is not the one `hack/e2e-env.sh` (with this E2E_DIR) restarts")
    ip = running(kubelet, web)["status"]["podIP"]
    assert_agree(kubelet, endpoint, "before the restarts")
    before, names = snapshot(kubelet, endpoint), set(kubelet.pods())
    assert any(key.startswith("container ") for key in before)

    subprocess.run([str(env_sh), "restart"], capture_output=True, text=True, check=True)
    assert_agree(kubelet, endpoint, "after criservice restarted")
    time.sleep(6)  # a few PLEG relists and pod syncs against the new daemon
    assert_unchanged(before, snapshot(kubelet, endpoint), "by restarting criservice")
    assert fetch(f"http://{ip}/index.html").endswith(f"{TOKEN}\n")

    kubelet.restart()
    wait_for(lambda: set(kubelet.pods()) == names, 60, "the kubelet to list its pods again")
    running(kubelet, web)
    assert_agree(kubelet, endpoint, "after the kubelet restarted")
    time.sleep(6)
    assert_unchanged(before, snapshot(kubelet, endpoint), "by restarting the kubelet")
    assert fetch(f"http://127.0.0.1:{HOST_PORT}/note.txt") == "note from the manifest\n"


def host_traces(k: Kubelet, uids: list[str], ids: list[str]) -> list[str]:
    """Everything on the host that still names one of these pods or containers."""
    keys = [*uids, *(k.pod_cgroup_key(u) for u in uids), *ids, *(i[:16] for i in ids)]
    found = [f"mount {m}" for m in mount_points() if any(key in m for key in keys)]
    for top in k.cgroup_dirs():
        if top.is_dir():
            found += [f"cgroup {d}" for d in top.rglob("*") if d.is_dir() and any(key in d.name for key in keys)]
    found += [f"process {p} ({i[:13]})" for i in ids for p in pgrep(i)]
    found += [f"pod dir {d}" for u in uids for d in (k.root_dir / "pods" / u,) if d.exists()]
    found += [f"pod logs {d}" for d in k.pod_logs.iterdir() if any(u in d.name for u in uids)]
    if CONTAINER_LOG_LINKS.exists():
        found += [f"log link {f}" for f in CONTAINER_LOG_LINKS.iterdir() if any(i in f.name for i in ids)]
    return found


def test_removing_the_manifests_removes_everything(kubelet: Kubelet, web: str, endpoint: str) -> None:
    # A pod with one PID namespace (criservice runs its infra process) and a tmpfs emptyDir.
    shared = kubelet.add(pod(
        "shared-pid", [shell("a", "sleep 3600", volumeMounts=[{"name": "mem", "mountPath": "/mem"}]),
                       shell("b", "sleep 3600")],
        shareProcessNamespace=True, terminationGracePeriodSeconds=1,
        volumes=[{"name": "mem", "emptyDir": {"medium": "Memory"}}]))
    running(kubelet, shared)
    running(kubelet, web)
    assert_agree(kubelet, endpoint, "before removing the manifests")
    pods = kubelet.pods()
    rt = RuntimeView.read(endpoint)
    uids = [p["metadata"]["uid"] for p in pods.values()]
    ids = [s["id"] for s in rt.sandboxes] + [c["id"] for c in rt.containers]
    ips = {p["status"]["podIP"] for p in pods.values() if p["status"].get("podIP")}
    leases = cni_leases(os.environ.get("CRISERVICE_CONFIG"))
    # The checks below must have something to find while the pods run.
    traces = host_traces(kubelet, uids, ids)
    assert any(t.startswith("cgroup") for t in traces) and any(t.startswith("mount") for t in traces)
    assert leases is None or ips <= leases
    assert any(f"dpt:{HOST_PORT}" in r or f"--dport {HOST_PORT}" in r for r in nat_rules())

    kubelet.remove_all()
    wait_for(lambda: not kubelet.pods(), 60, "the kubelet to forget its pods")
    # Containers go at once; sandboxes with the kubelet's container GC (once a minute).
    wait_for(lambda: not RuntimeView.read(endpoint).sandboxes and not RuntimeView.read(endpoint).containers,
             150, "the kubelet to remove every sandbox and container")
    assert_agree(kubelet, endpoint, "after removing the manifests")
    # Pod cgroups and directories go with the kubelet's housekeeping, every 2 s.
    try:
        wait_for(lambda: not host_traces(kubelet, uids, ids), 30, "the pods' last traces to go")
    except AssertionError:
        raise AssertionError(f"left on the host: {host_traces(kubelet, uids, ids)}") from None
    if leases is not None:
        assert not ips & cni_leases(os.environ["CRISERVICE_CONFIG"]), "CNI addresses still allocated"
    assert not [r for r in nat_rules() if f"dpt:{HOST_PORT}" in r or f"--dport {HOST_PORT}" in r]
    qos = sorted(str(d.relative_to(top)) for top in kubelet.cgroup_dirs() if top.is_dir()
                 for d in top.rglob("*") if d.is_dir())
    left = (r"kubepods-(burstable|besteffort)\.slice" if kubelet.cgroup_driver == "systemd"
            else r"kubepods(/(burstable|besteffort))?")
    assert all(re.fullmatch(left, d) for d in qos), qos


def nat_rules() -> list[str]:
    return subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout.splitlines()
