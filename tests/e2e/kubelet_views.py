"""The kubelet's view of its pods (its /pods endpoint) set beside the runtime's (crictl),
and the differences between them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.e2e.conftest import crictl
from tests.e2e.kubelet_node import POD_UID_LABEL, Kubelet, wait_for

RUNTIME_PREFIX = "criservice://"
STATE = {"running": "CONTAINER_RUNNING", "terminated": "CONTAINER_EXITED"}


def _crictl_json(endpoint: str, *args: str) -> Any:
    res = crictl(endpoint, args[0], "-o", "json", *args[1:])
    assert res.returncode == 0, f"crictl {' '.join(args)}: {res.stderr}"
    return json.loads(res.stdout)


@dataclass
class RuntimeView:
    sandboxes: list[dict[str, Any]]
    containers: list[dict[str, Any]]
    endpoint: str

    @classmethod
    def read(cls, endpoint: str) -> RuntimeView:
        sbs = [s for s in _crictl_json(endpoint, "pods")["items"] if POD_UID_LABEL in (s.get("labels") or {})]
        ctrs = [c for c in _crictl_json(endpoint, "ps", "-a")["containers"]
                if POD_UID_LABEL in (c.get("labels") or {})]
        return cls(sbs, ctrs, endpoint)

    def sandboxes_of(self, uid: str) -> list[dict[str, Any]]:
        return [s for s in self.sandboxes if s["labels"][POD_UID_LABEL] == uid]

    def containers_of(self, uid: str) -> list[dict[str, Any]]:
        return [c for c in self.containers if c["labels"][POD_UID_LABEL] == uid]

    def inspectp(self, sid: str) -> dict[str, Any]:
        return _crictl_json(self.endpoint, "inspectp", sid)

    def inspect(self, cid: str) -> dict[str, Any]:
        return _crictl_json(self.endpoint, "inspect", cid)


def _kubelet_state(cs: dict[str, Any]) -> tuple[str, str]:
    """('running'|'terminated'|'waiting', detail) of one container status."""
    (kind, detail), = cs.get("state", {"waiting": {}}).items() or [("waiting", {})]
    if kind == "terminated":
        return kind, f"exit={detail.get('exitCode')} {detail.get('reason', '')}".strip()
    if kind == "waiting":
        return kind, detail.get("reason", "")
    return kind, ""


def compare(kubelet: Kubelet, endpoint: str) -> tuple[list[str], list[str]]:
    """(a table of both views, the disagreements) for every pod the kubelet has."""
    pods, rt = kubelet.pods(), RuntimeView.read(endpoint)
    table, problems = [], []
    for name, pod in sorted(pods.items()):
        uid, status = pod["metadata"]["uid"], pod.get("status", {})
        phase, pod_ip = status.get("phase", "?"), status.get("podIP", "")
        sbs = rt.sandboxes_of(uid)
        ready = [s for s in sbs if s["state"] == "SANDBOX_READY"]
        side = "no sandbox"
        if ready:
            sb = ready[0]
            rt_ip = rt.inspectp(sb["id"])["status"]["network"]["ip"]
            side = f"sandbox {sb['id'][:13]} READY    ip={rt_ip}"
            if rt_ip != pod_ip:
                problems.append(f"{name}: kubelet podIP {pod_ip!r}, runtime {rt_ip!r}")
        elif sbs:
            side = f"sandbox {sbs[0]['id'][:13]} NOTREADY"
        table.append(f"{name:<26} kubelet: {phase:<9} ip={pod_ip:<12} | crictl: {side}")
        if phase in ("Running", "Pending") and len(ready) != 1:
            problems.append(f"{name}: phase {phase} but {len(ready)} ready sandboxes in the runtime")
        if phase in ("Succeeded", "Failed") and ready:
            problems.append(f"{name}: phase {phase} but its sandbox is still ready")
        by_id = {c["id"]: c for c in rt.containers_of(uid)}
        listed = set()
        for cs in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
            kind, detail = _kubelet_state(cs)
            cid = cs.get("containerID", "")
            left = f"  {cs['name']:<10} kubelet: {kind:<10} {detail:<16} restarts={cs.get('restartCount', 0)}"
            if not cid:
                table.append(f"{left} | crictl: (no container)")
                if kind != "waiting":
                    problems.append(f"{name}/{cs['name']}: {kind} without a container ID")
                continue
            if not cid.startswith(RUNTIME_PREFIX):
                problems.append(f"{name}/{cs['name']}: container ID {cid!r} lacks {RUNTIME_PREFIX}")
            cid = cid.removeprefix(RUNTIME_PREFIX)
            listed.add(cid)
            c = by_id.get(cid)
            if c is None:
                table.append(f"{left} | crictl: {cid[:13]} MISSING")
                problems.append(f"{name}/{cs['name']}: container {cid[:13]} is not in the runtime")
                continue
            st = rt.inspect(cid)["status"]
            rt_detail = f"exit={st['exitCode']} {st.get('reason', '')}".strip() if c["state"] == "CONTAINER_EXITED" else ""
            table.append(f"{left} | crictl: {cid[:13]} {c['state']:<18} attempt={c['metadata']['attempt']} {rt_detail}")
            if kind in STATE and STATE[kind] != c["state"]:
                problems.append(f"{name}/{cs['name']}: kubelet {kind}, runtime {c['state']}")
            if kind == "terminated" and detail != rt_detail:
                problems.append(f"{name}/{cs['name']}: kubelet {detail!r}, runtime {rt_detail!r}")
            if c["metadata"]["attempt"] != cs.get("restartCount", 0):
                problems.append(f"{name}/{cs['name']}: restartCount {cs.get('restartCount')} "
                                f"but the runtime's attempt is {c['metadata']['attempt']}")
            if c["podSandboxId"] not in {s["id"] for s in sbs}:
                problems.append(f"{name}/{cs['name']}: container in an unknown sandbox")
        for cid, c in by_id.items():
            if c["state"] == "CONTAINER_RUNNING" and cid not in listed:
                problems.append(f"{name}: runtime runs {c['metadata']['name']} {cid[:13]}, the kubelet does not say so")
    known = {p["metadata"]["uid"] for p in pods.values()}
    for sb in rt.sandboxes:
        if sb["state"] == "SANDBOX_READY" and sb["labels"][POD_UID_LABEL] not in known:
            problems.append(f"runtime has a ready sandbox {sb['id'][:13]} ({sb['metadata']['name']}) "
                            "the kubelet does not know")
    return table, problems


def assert_agree(kubelet: Kubelet, endpoint: str, when: str, timeout: float = 45) -> None:
    """Wait until the kubelet's /pods and crictl agree, then print both side by side."""
    last: list[list[str]] = [[], []]

    def agreed() -> bool:
        try:
            last[:] = compare(kubelet, endpoint)
        except (OSError, ValueError, AssertionError) as e:  # the kubelet or the runtime restarting
            last[:] = [[], [repr(e)]]
        return not last[1]

    try:
        wait_for(agreed, timeout, f"the kubelet and crictl to agree ({when})", interval=1)
    except AssertionError:
        raise AssertionError(f"kubelet /pods and crictl disagree ({when}):\n" + "\n".join(last[0])
                             + "\nproblems:\n  " + "\n  ".join(last[1])) from None
    print(f"\n--- kubelet /pods vs crictl, {when}: they agree\n" + "\n".join(last[0]), flush=True)
