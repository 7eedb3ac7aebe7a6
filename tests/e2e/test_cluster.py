"""A one-node cluster on criservice (hack/local-cluster.sh), driven as a user drives one:
through kubectl only. Run by hack/cluster-e2e.sh, which brings the cluster up, runs
this module and takes it down, checking that nothing of the pods is left on the host.

The tests share one namespace and run in file order; each waits for what it asks for.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.e2e.kubelet_node import wait_for

KUBECTL = str(REPO / ".tools/bin/kubectl")
NS = "crs-e2e"
BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
NGINX = "registry.k8s.io/e2e-test-images/nginx:1.14-2"
HTTPD = "registry.k8s.io/e2e-test-images/httpd:2.4.39-4"
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]

pytestmark = pytest.mark.skipif(not os.environ.get("KUBECONFIG") or not os.environ.get("LOCAL_CLUSTER_NODE"),
                                reason="needs the cluster of hack/local-cluster.sh up (run hack/cluster-e2e.sh)")


def kubectl(*args: str, input: str | None = None, timeout: float = 120, check: bool = True,
            namespaced: bool = True) -> str:
    argv = [KUBECTL, *(["-n", NS] if namespaced else []), *args]
    res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def apply(doc: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(doc))


def get(kind: str, name: str = "", selector: str = "") -> dict[str, Any]:
    args = ["get", kind, *([name] if name else []), *(["-l", selector] if selector else []), "-o", "json"]
    return json.loads(kubectl(*args))  # type: ignore[no-any-return]


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": containers, **spec}}


def container(name: str, image: str = BUSYBOX, command: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            **({"command": command} if command else {}), **extra}


def running(name: str) -> dict[str, Any]:
    kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=90s", timeout=100)
    return get("pod", name)


def deployment(image: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "terminationGracePeriodSeconds": 2,
                         "containers": [container("web", image, ports=[{"containerPort": 80}])]}}}}


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def ready_replicas() -> int:
    return int(get("deployment", "web")["status"].get("readyReplicas") or 0)


@pytest.fixture(scope="module", autouse=True)
def namespace() -> Iterator[None]:
    kubectl("create", "namespace", NS, namespaced=False)
    # The CronJob fires on the minute: made first, looked at last.
    apply({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": NS},
           "spec": {"schedule": "* * * * *", "successfulJobsHistoryLimit": 1, "jobTemplate": {"spec": {
               "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                     "containers": [container("tick", command=["echo", "tick"])]}}}}}})
    yield
    kubectl("delete", "namespace", NS, "--wait=true", "--timeout=180s", namespaced=False, timeout=200)


def test_the_node_runs_on_criservice() -> None:
    node = os.environ["LOCAL_CLUSTER_NODE"]
    wide = kubectl("get", "node", node, "-o", "wide", namespaced=False)
    assert re.search(rf"^{node}\s+Ready\s", wide, re.M), wide
    assert "criservice://0.1.0" in wide, wide


def test_a_deployment_rolls_out_scales_and_rolls_back() -> None:
    apply(deployment(NGINX, 3))
    kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
    assert ready_replicas() == 3
    kubectl("scale", "deployment/web", "--replicas=5")
    wait_for(lambda: ready_replicas() == 5, 120, "5 ready replicas")
    kubectl("scale", "deployment/web", "--replicas=3")
    wait_for(lambda: len(get("pods", selector="app=web")["items"]) == 3, 120, "3 pods left")
    kubectl("set", "image", "deployment/web", f"web={HTTPD}")
    kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
    # Rolled out: the old pods may still be terminating, then only the new image is left.
    wait_for(lambda: web_images() == {HTTPD}, 60, "only the new image")
    kubectl("rollout", "undo", "deployment/web")
    kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
    wait_for(lambda: web_images() == {NGINX}, 60, "only the old image")
    assert ready_replicas() == 3


def web_images() -> set[str]:
    return {c["image"] for p in get("pods", selector="app=web")["items"] for c in p["spec"]["containers"]}


def test_a_service_cluster_ip_reaches_the_pods_through_kube_proxy() -> None:
    kubectl("expose", "deployment/web", "--port=80", "--name=web")
    ip = get("service", "web")["spec"]["clusterIP"]
    wait_for(lambda: get("endpointslices", selector="kubernetes.io/service-name=web")["items"][0].get("endpoints"),
             60, "the service's endpoints")
    # From the node: kube-proxy's iptables rules send the ClusterIP to a pod, once it
    # has written them.
    wait_for(lambda: http_ok(f"http://{ip}/"), 60, f"HTTP 200 from {ip}")
    # From a pod on the same bridge.
    apply(pod("client", [container("client", command=SLEEP)]))
    running("client")
    # (busybox 1.35's wget crashes on -T: timeout(1) bounds it instead)
    out = kubectl("exec", "client", "--", "timeout", "10", "wget", "-q", "-O", "-", f"http://{ip}/")
    assert "nginx" in out.lower() or "<html" in out.lower(), out


def test_exec_with_a_terminal_and_with_stdin() -> None:
    # A terminal of our own for kubectl's -t (script(1) runs it on a pty).
    res = subprocess.run(["script", "-qec", f"{KUBECTL} -n {NS} exec -it client -- sh -c 'tty; echo in-$((6*7))'",
                          "/dev/null"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "/dev/pts/" in res.stdout and "in-42" in res.stdout, res.stdout
    assert kubectl("exec", "-i", "client", "--", "tr", "a-z", "A-Z", input="shout\n") == "SHOUT\n"
    res = subprocess.run([KUBECTL, "-n", NS, "exec", "client", "--", "sh", "-c", "exit 7"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 7, res


def test_logs_follow_and_previous() -> None:
    apply(pod("logger", [container("logger", command=[
        "sh", "-c", "echo run-$(cat /proc/sys/kernel/random/uuid); i=0; "
                    "while [ $i -lt 6 ]; do echo line-$i; i=$((i+1)); sleep 0.5; done; exit 1"])]))
    wait_for(lambda: get("pod", "logger")["status"].get("phase") == "Running", 90, "logger running")
    follow = subprocess.Popen([KUBECTL, "-n", NS, "logs", "-f", "logger"], stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        seen = [follow.stdout.readline().strip() for _ in range(4)]
    finally:
        follow.kill()
        follow.wait()
    assert seen[0].startswith("run-") and seen[1:] == ["line-0", "line-1", "line-2"], seen
    first_run = seen[0]

    def restarted() -> bool:
        statuses = get("pod", "logger")["status"].get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0)) >= 1
    wait_for(restarted, 90, "the logger's restart")
    previous = kubectl("logs", "--previous", "logger")
    assert previous.splitlines()[0] == first_run and "line-5" in previous, previous
    kubectl("delete", "pod", "logger", "--wait=false")


def test_port_forward_to_a_pod() -> None:
    web = get("pods", selector="app=web")["items"][0]["metadata"]["name"]
    forward = subprocess.Popen([KUBECTL, "-n", NS, "port-forward", f"pod/{web}", "18080:80"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert forward.stdout is not None
        assert "Forwarding from 127.0.0.1:18080" in forward.stdout.readline()
        for _ in range(3):   # one connection after another over the same session
            with urllib.request.urlopen("http://127.0.0.1:18080/", timeout=10) as r:
                assert r.status == 200
    finally:
        forward.terminate()
        forward.wait(10)


def test_cp_both_ways(tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(200_000))
    kubectl("cp", str(src), f"{NS}/client:/tmp/in.bin", namespaced=False)
    assert kubectl("exec", "client", "--", "wc", "-c", "/tmp/in.bin").split()[0] == "200000"
    kubectl("exec", "client", "--", "sh", "-c", "mkdir -p /tmp/out && echo made-in-pod > /tmp/out/note")
    kubectl("cp", f"{NS}/client:/tmp/out", str(tmp_path / "out"), namespaced=False)
    assert (tmp_path / "out" / "note").read_text() == "made-in-pod\n"
    kubectl("cp", f"{NS}/client:/tmp/in.bin", str(tmp_path / "back.bin"), namespaced=False)
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_attach_to_a_running_container() -> None:
    apply(pod("talker", [container("talker", command=["sh", "-c", "while read l; do echo got-$l; done"],
                                   stdin=True, stdinOnce=False, tty=False)]))
    running("talker")
    kubectl("attach", "-i", "talker", "-c", "talker", input="hello\nworld\n", timeout=60)
    wait_for(lambda: "got-world" in kubectl("logs", "talker"), 30, "the attached input echoed")
    assert kubectl("logs", "talker").splitlines()[:2] == ["got-hello", "got-world"]


def test_debug_with_an_ephemeral_container_in_the_target_pid_namespace() -> None:
    apply(pod("target", [container("main", command=["sh", "-c", "exec sleep 3600"])]))
    running("target")
    kubectl("debug", "target", f"--image={BUSYBOX}", "--target=main", "-c", "dbg", "--", "ps", "-o", "args")

    def finished() -> dict[str, Any] | None:
        for s in get("pod", "target")["status"].get("ephemeralContainerStatuses") or []:
            if s["name"] == "dbg" and s["state"].get("terminated"):
                return s  # type: ignore[no-any-return]
        return None
    status = wait_for(finished, 90, "the ephemeral container to finish")
    assert status["state"]["terminated"]["exitCode"] == 0
    assert "sleep 3600" in kubectl("logs", "target", "-c", "dbg")   # it sees the target's process


def test_a_job_runs_to_completion() -> None:
    apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": NS},
           "spec": {"completions": 2, "parallelism": 2, "backoffLimit": 0, "template": {"spec": {
               "restartPolicy": "Never", "containers": [container("once", command=["sh", "-c", "echo job-done"])]}}}})
    kubectl("wait", "--for=condition=Complete", "job/once", "--timeout=120s", timeout=130)
    assert get("job", "once")["status"]["succeeded"] == 2
    assert "job-done" in kubectl("logs", "job/once")


def test_a_daemonset_runs_on_the_node() -> None:
    apply({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": NS},
           "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
               "metadata": {"labels": {"app": "agent"}},
               "spec": {"terminationGracePeriodSeconds": 2, "containers": [container("agent", command=SLEEP)]}}}})
    kubectl("rollout", "status", "daemonset/agent", "--timeout=120s", timeout=130)
    [agent] = get("pods", selector="app=agent")["items"]
    assert agent["spec"]["nodeName"] == os.environ["LOCAL_CLUSTER_NODE"]


def _pod_sandboxes(uid: str) -> list[dict[str, Any]]:
    crictl = [str(REPO / ".tools/bin/crictl"), "--runtime-endpoint", os.environ["CONTAINER_RUNTIME_ENDPOINT"]]
    out = subprocess.run([*crictl, "pods", "-o", "json", "--label", f"io.kubernetes.pod.uid={uid}"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return list(json.loads(out)["items"])


def test_a_pod_deleted_by_force_goes_from_the_runtime_too() -> None:
    apply(pod("doomed", [container("doomed", command=["sh", "-c", "trap '' TERM; while :; do sleep 1; done"])],
              terminationGracePeriodSeconds=300))
    uid = running("doomed")["metadata"]["uid"]
    assert _pod_sandboxes(uid)
    kubectl("delete", "pod", "doomed", "--grace-period=0", "--force")
    assert "doomed" not in {p["metadata"]["name"] for p in get("pods")["items"]}
    wait_for(lambda: not _pod_sandboxes(uid), 120, "the runtime to lose the pod's sandbox")


def test_the_node_drains_and_uncordons() -> None:
    node = os.environ["LOCAL_CLUSTER_NODE"]
    kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=120s",
            namespaced=False, timeout=150)
    assert get("node", node)["spec"].get("unschedulable") is True
    wait_for(lambda: all(p["metadata"].get("labels", {}).get("app") == "agent" or p["status"].get("phase") == "Pending"
                         for p in get("pods")["items"]), 120, "only the DaemonSet left running")
    kubectl("uncordon", node, namespaced=False)
    wait_for(lambda: ready_replicas() == 3, 120, "the Deployment back on the node")


QOS = {
    "guaranteed": ({"cpu": "100m", "memory": "64Mi"}, {"cpu": "100m", "memory": "64Mi"}, "Guaranteed"),
    "burstable": ({"cpu": "50m", "memory": "32Mi"}, {"memory": "96Mi"}, "Burstable"),
    "besteffort": ({}, {}, "BestEffort"),
}


def _pod_cgroup(qos: str, uid: str, controller: str) -> Path:
    root = Path("/sys/fs/cgroup") / controller / "criservice-cluster" / "kubepods"
    return (root if qos == "guaranteed" else root / qos) / f"pod{uid}"


@pytest.mark.skipif(not Path("/sys/fs/cgroup/memory").is_dir(), reason="reads cgroup v1 files")
@pytest.mark.parametrize("name", list(QOS))
def test_the_kubelet_sizes_each_qos_class(name: str) -> None:
    requests, limits, qos = QOS[name]
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    apply(pod(f"qos-{name}", [container("main", command=SLEEP, resources=resources)]))
    status = running(f"qos-{name}")
    assert status["status"]["qosClass"] == qos
    uid = status["metadata"]["uid"]
    memory = int((_pod_cgroup(name, uid, "memory") / "memory.limit_in_bytes").read_text())
    shares = int((_pod_cgroup(name, uid, "cpu") / "cpu.shares").read_text())
    if name == "guaranteed":
        assert memory == 64 << 20 and shares == 102   # 100m
    elif name == "burstable":
        assert memory == 96 << 20 and shares == 51    # 50m
    else:
        assert memory > 1 << 40 and shares == 2       # unlimited, the minimum share
    # The container's own cgroup (what runc mounts as its /sys/fs/cgroup/memory) carries its limit.
    limit = int(kubectl("exec", f"qos-{name}", "--", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"))
    assert limit == memory if name != "besteffort" else limit > 1 << 40


def test_the_cronjob_fired() -> None:
    def completed() -> bool:
        return any(j["status"].get("succeeded") for j in get("jobs")["items"]
                   if j["metadata"]["name"].startswith("tick-"))
    wait_for(completed, 130, "a job of the CronJob to complete", interval=2)
