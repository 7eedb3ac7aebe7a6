"""Requests that fail, half-way or up front, through a real daemon: refused pod
metadata leaves nothing, a pod whose undo fails stays visible until a later
Remove succeeds, StopPodSandbox kills at once, and container logs stay inside
their pod's log directory (needs root and the local test registry)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from api import api_pb2 as pb
from tests.node import BUSYBOX, Node, host_view, running_node
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

pytestmark = pytest.mark.skipif(not registry_is_up(),
                                reason=f"needs the test registry on {TEST_REGISTRY} (hack/e2e-env.sh up)")


@pytest.fixture
def node(short_tmp: Path) -> Iterator[Node]:
    with running_node(short_tmp, "crs-fail0", "10.95.0.0/24") as n:
        yield n


# A CNI plugin whose ADD always fails and whose DEL fails until its pass file exists:
# the undo of a failed RunPodSandbox then fails for real, as it did for metadata that
# CNI_ARGS cannot carry.
FAILER = """#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'; exit 0;;
DEL) [ -e "%(pass)s" ] && exit 0;;
esac
echo '{"cniVersion":"1.0.0","code":11,"msg":"crs-failer refuses '"$CNI_COMMAND"'"}'
exit 1
"""


@pytest.fixture
def failing_node(short_tmp: Path) -> Iterator[Node]:
    bin_dir = short_tmp / "cnibin"

    def configure(config: Path) -> None:
        bin_dir.mkdir()
        plugin = bin_dir / "crs-failer"
        plugin.write_text(FAILER % {"pass": short_tmp / "pass"})
        plugin.chmod(0o755)
        conflist = short_tmp / "cni" / "10-node.conflist"
        doc = json.loads(conflist.read_text())
        doc["plugins"].insert(0, {"type": "crs-failer"})
        conflist.write_text(json.dumps(doc))
        config.write_text(config.read_text().replace(
            "[cni]\n", f'[cni]\nbin_dirs = ["{bin_dir}", "/usr/lib/cni", "/opt/cni/bin"]\n', 1))

    with running_node(short_tmp, "crs-fail1", "10.94.0.0/24", configure) as n:
        # The fixture's last Remove must be able to succeed.
        try:
            yield n
        finally:
            (short_tmp / "pass").touch()


def pod_config(name: str, **kw: object) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, namespace="fail", uid=f"uid-{name}"),
                               linux=pb.LinuxPodSandboxConfig(), **kw)


def failure(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=60)  # type: ignore[operator]
    return e.value


BAD_PODS: list[tuple[str, dict[str, str], str]] = [
    ("name with =", {"name": "a=b"}, "config.metadata.name"),
    ("namespace with ;", {"namespace": "a;b"}, "config.metadata.namespace"),
    ("uid with NUL", {"uid": "a\0b"}, "config.metadata.uid"),
    ("300 KB uid", {"uid": "u" * 300_000}, "config.metadata.uid"),
    ("name over 255 bytes", {"name": "n" * 300}, "config.metadata.name"),
    ("NUL in hostname", {"hostname": "web\0x"}, "config.hostname"),
    ("cgroup parent not absolute", {"cgroup_parent": "kubepods.slice"}, "config.linux.cgroup_parent"),
    ("relative log directory", {"log_directory": "logs/here"}, "config.log_directory"),
]


def test_refused_pod_metadata_names_its_field_and_leaves_nothing(node: Node) -> None:
    before = host_view(node.base)
    for what, change, field in BAD_PODS:
        cfg = pod_config("bad")
        for key, value in change.items():
            if key in ("name", "namespace", "uid"):
                setattr(cfg.metadata, key, value)
            elif key == "cgroup_parent":
                cfg.linux.cgroup_parent = value
            else:
                setattr(cfg, key, value)
        err = failure(node.rt.RunPodSandbox, pb.RunPodSandboxRequest(config=cfg))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, err.details())
        assert field in err.details() and len(err.details()) < 1024, (what, err.details()[:300])
        assert not node.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items, what
        assert host_view(node.base) == before, what
    assert not (node.base / "logs").exists() and not Path("/logs/here").exists()


def test_a_pod_whose_undo_fails_stays_listed_until_remove_succeeds(failing_node: Node) -> None:
    node = failing_node
    before = host_view(node.base)
    cfg = pod_config("undo")
    err = failure(node.rt.RunPodSandbox, pb.RunPodSandboxRequest(config=cfg))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "crs-failer refuses ADD" in err.details()
    # What could be undone is undone: no namespace pinned, nothing mounted.
    assert host_view(node.base) == before
    # What could not (CNI DEL) is kept, in a record that List shows and Remove retries.
    [pod] = node.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert (pod.metadata.name, pod.state) == ("undo", pb.PodSandboxState.SANDBOX_NOTREADY)
    err = failure(node.rt.RemovePodSandbox, pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "crs-failer refuses DEL" in err.details()
    node.restart()   # the start tries again, fails again, and hides nothing
    assert [p.id for p in node.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items] == [pod.id]
    assert "crs-failer refuses DEL" in node.daemon.log.read_text()
    (node.base / "pass").touch()
    node.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    node.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    assert not node.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert host_view(node.base) == before
    # And the same metadata makes a pod again (it fails at ADD again, as configured).
    err = failure(node.rt.RunPodSandbox, pb.RunPodSandboxRequest(config=cfg))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def _container(node: Node, pod: str, cfg: pb.PodSandboxConfig, name: str, command: list[str],
               log_path: str = "") -> str:
    config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=BUSYBOX),
                                command=command, log_path=log_path, linux=pb.LinuxContainerConfig())
    return node.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=config,
                                                             sandbox_config=cfg), timeout=60).container_id


def test_stop_pod_sandbox_kills_its_containers_at_once(node: Node) -> None:
    cfg = pod_config("force")
    pod = node.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    # A TERM would end it with 3: the CRI says StopPodSandbox forces its containers.
    ctr = _container(node, pod, cfg, "stubborn", ["sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.1; done"])
    node.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)
    node.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    status = node.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
    assert (status.state, status.exit_code) == (pb.ContainerState.CONTAINER_EXITED, 137)


def test_container_logs_stay_inside_the_pod_log_directory(node: Node) -> None:
    logdir = node.base / "logs" / "fail_logs_uid"
    victim = node.base / "victim"
    victim.write_text("untouched\n")
    cfg = pod_config("logs", log_directory=str(logdir))
    pod = node.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    # An absolute log path is taken under the directory, as containerd does.
    outside = f"/tmp/crs-outside-{os.getpid()}.log"
    ctr = _container(node, pod, cfg, "abs", ["echo", "inside"], log_path=outside)
    node.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)
    assert not os.path.exists(outside)
    inside = logdir / outside.lstrip("/")
    deadline = time.monotonic() + 10
    while b"inside" not in (inside.read_bytes() if inside.exists() else b""):
        assert time.monotonic() < deadline, "the log line never arrived"
        time.sleep(0.05)
    status = node.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
    assert status.log_path == str(inside)

    err = failure(node.rt.CreateContainer, pb.CreateContainerRequest(
        pod_sandbox_id=pod, sandbox_config=cfg, config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="up"), image=pb.ImageSpec(image=BUSYBOX), log_path="../../up.log")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "config.log_path" in err.details()
    (logdir / "planted.log").symlink_to(victim)
    err = failure(node.rt.CreateContainer, pb.CreateContainerRequest(
        pod_sandbox_id=pod, sandbox_config=cfg, config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="planted"), image=pb.ImageSpec(image=BUSYBOX),
            command=["echo", "appended"], log_path="planted.log")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "symlink" in err.details()
    assert victim.read_text() == "untouched\n"
    assert [c.metadata.name for c in node.rt.ListContainers(pb.ListContainersRequest()).containers] == ["abs"]

    # The kubelet rotates by renaming, then asks for a reopen: a symlink planted in
    # between is refused too, and a reopen after it is gone works.
    rot = _container(node, pod, cfg, "rot", ["sh", "-c", "while :; do echo line; sleep 0.1; done"],
                     log_path="rot/0.log")
    node.rt.StartContainer(pb.StartContainerRequest(container_id=rot), timeout=60)
    (logdir / "rot" / "0.log").rename(logdir / "rot" / "0.log.1")
    (logdir / "rot" / "0.log").symlink_to(victim)
    err = failure(node.rt.ReopenContainerLog, pb.ReopenContainerLogRequest(container_id=rot))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    (logdir / "rot" / "0.log").unlink()
    node.rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=rot), timeout=30)
    assert victim.read_text() == "untouched\n"
    assert (logdir / "rot" / "0.log").is_file() and not (logdir / "rot" / "0.log").is_symlink()


def test_the_daemon_works_in_the_root_directory(node: Node) -> None:
    assert node.daemon.proc is not None
    assert os.readlink(f"/proc/{node.daemon.proc.pid}/cwd") == "/"


def test_a_host_network_pod_goes_whole(node: Node) -> None:
    """It has an IPC namespace and no UTS one of its own: Remove must undo just those."""
    before = host_view(node.base)
    cfg = pod_config("hostnet")
    cfg.linux.security_context.namespace_options.network = pb.NamespaceMode.NODE
    pod = node.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    node.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    node.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    assert not node.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert host_view(node.base) == before


def test_a_ghost_pod_of_an_older_version_is_undone_at_start(node: Node) -> None:
    """Before metadata was checked up front, a uid with '=' made both CNI ADD and DEL fail,
    and the record stayed, half-built and hidden, for ever. Such a record left in the
    database is undone at the next start: DEL runs without the values it cannot carry."""
    from runtime.state import StateDB
    node.daemon.stop()
    sandbox_id = "ab" * 32
    db = StateDB(node.base / "state" / "state.db")
    details = {"building": True, "cni_added": True, "pod_dir": str(node.base / "run" / "pods" / sandbox_id),
               "netns": str(node.base / "netns" / f"cri-{sandbox_id[:16]}"),
               "pod_args": {"K8S_POD_NAMESPACE": "fail", "K8S_POD_NAME": "ghost",
                            "K8S_POD_INFRA_CONTAINER_ID": sandbox_id, "K8S_POD_UID": "u=1"}}
    with db.transaction() as conn:   # a row as that version wrote it: format 1, the untyped bag
        conn.execute("INSERT INTO sandboxes (id, name, namespace, uid, attempt, state, created_at, handler, "
                     "config, labels, annotations, details, format) "
                     "VALUES (?, 'ghost', 'fail', 'u=1', 0, 'notready', 1, 'runc', x'', '{}', '{}', ?, 1)",
                     (sandbox_id, json.dumps(details)))
    db.close()
    node.daemon.start()
    assert not node.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert "undoing a pod sandbox a crash left half-built" in node.daemon.log.read_text()
