"""ContainerManager's lifecycle logic against a fake OCI runtime (tests/unit/fake_oci.py):
state transitions and their events, the undo of a failed create, a start that failed
late, and what recovery makes of every record after a restart. No root, no runc."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import errors
from runtime.containers import ContainerManager
from runtime.images.store import ImageStore
from runtime.oci.runtime import OCIError
from runtime.oci.specinput import ContainerInput, NamespacesInput, SecurityInput
from runtime.records import (CONTAINER_CREATED, CONTAINER_EXITED, CONTAINER_RUNNING, SANDBOX_READY,
                             ContainerRecord, ContainerStore, SandboxRecord, SandboxStore)
from runtime.state import StateDB
from tests.unit.fake_oci import FakeRuntime, FakeSnapshots

IMAGE_ID = "sha256:" + "ab" * 32


class Node:
    """The manager with real stores on a temporary state database, and the fakes."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.db = StateDB(base / "state.db")
        self.images = ImageStore(str(base / "images"), self.db)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        self.images.commit_image(image_id=IMAGE_ID, config=config,
                                 config_media_type="application/vnd.oci.image.config.v1+json",
                                 manifest=b"{}", manifest_digest="sha256:" + "cd" * 32,
                                 manifest_media_type="application/vnd.oci.image.manifest.v1+json",
                                 size=0, layer_ids=[], names=[("example.test/busybox:1", "tag")])
        self.sandboxes = SandboxStore(self.db)
        pod_dir = base / "pod1"
        pod_dir.mkdir()
        for name in ("hostname", "hosts", "resolv.conf"):
            (pod_dir / name).write_text("")
        self.sandboxes.add(SandboxRecord("pod1", "pod", "ns", "uid1", 0, SANDBOX_READY, 1, "fake", b"",
                                         pod_dir=str(pod_dir), netns="/run/netns/pod1", ipc_ns="/run/pods/pod1/ipc",
                                         uts_ns="/run/pods/pod1/uts"))
        self.runtime = FakeRuntime()
        self.snapshots = FakeSnapshots(str(base / "snapshots"))
        self.events: list[tuple[str, str]] = []
        self.manager = self.new_manager()

    def new_manager(self) -> ContainerManager:
        """A manager as a restarted daemon makes it: the stores read from the database again."""
        return ContainerManager(
            ContainerStore(self.db), self.sandboxes, self.images, self.snapshots, None,
            {"fake": self.runtime}, cgroup_driver="cgroupfs", pause_image="",
            on_event=lambda kind, cid, sid, ts: self.events.append((kind, cid)))

    async def create(self, name: str = "app") -> str:
        # The kubelet's namespace options: the pod's network and IPC, a PID namespace of its own.
        security = SecurityInput(namespaces=NamespacesInput(pid="container"))
        record = await self.manager.create("pod1", ContainerInput(name, command=("sh",), security=security),
                                           image_ref=IMAGE_ID, config=b"")
        return record.id

    def state(self, container_id: str) -> str:
        return str(self.manager.store.get(container_id).state)


async def exit_recorded(manager: ContainerManager, container_id: str) -> None:
    async with asyncio.timeout(5):
        while manager.store.get(container_id).state != CONTAINER_EXITED:
            await asyncio.sleep(0.01)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.db.close()


async def test_created_running_exited_removed_with_an_event_each(node: Node) -> None:
    cid = await node.create()
    assert node.state(cid) == CONTAINER_CREATED
    bundle = node.runtime.containers[cid].bundle
    assert json.loads((Path(bundle) / "config.json").read_text())["process"]["args"] == ["sh"]
    await node.manager.start(cid)
    assert node.state(cid) == CONTAINER_RUNNING
    node.runtime.exit(cid, 3)
    await exit_recorded(node.manager, cid)   # by the exit watcher, unasked
    await node.manager.stop(cid, 10)   # it exited already: nothing is signalled
    record = node.manager.store.get(cid)
    assert (record.state, record.exit_code, record.reason) == (CONTAINER_EXITED, 3, "Error")
    assert ("stop", cid) not in node.runtime.calls
    await node.manager.remove(cid)
    await node.manager.remove(cid)   # idempotent
    assert node.manager.store.find(cid) is None and cid not in node.snapshots.snapshots
    assert node.events == [("created", cid), ("started", cid), ("stopped", cid), ("deleted", cid)]
    await node.manager.close()


async def test_stop_signals_a_running_container_and_records_its_exit_once(node: Node) -> None:
    cid = await node.create()
    await node.manager.start(cid)
    await node.manager.stop(cid, 5)
    await node.manager.stop(cid, 5)
    record = node.manager.store.get(cid)
    assert (record.state, record.exit_code) == (CONTAINER_EXITED, 128 + 15)
    assert node.runtime.calls.count(("stop", cid)) == 1
    assert [e for e in node.events if e[0] == "stopped"] == [("stopped", cid)]
    await node.manager.close()


async def test_a_failed_runtime_create_is_undone_completely(node: Node) -> None:
    node.runtime.fail["create"] = OCIError("runc create: exec: \"sh\": not found")
    with pytest.raises(OCIError):
        await node.create()
    assert node.manager.store.list() == [] and node.snapshots.snapshots == {}
    assert [call for call, _ in node.runtime.calls] == ["create", "delete"]
    assert node.events == []


async def test_an_undo_that_fails_keeps_the_record_for_remove_to_retry(node: Node) -> None:
    node.runtime.fail["create"] = OCIError("runc create failed")
    node.snapshots.fail_remove = OSError(16, "Device or resource busy")
    with pytest.raises(OCIError):
        await node.create()
    (record,) = node.manager.store.list()
    assert (record.state, record.reason) == (CONTAINER_EXITED, "CreateError")
    assert "busy" in record.message and not record.building
    await node.manager.remove(record.id)
    assert node.manager.store.list() == [] and node.snapshots.snapshots == {}


async def test_a_start_that_failed_late_is_adopted_when_the_container_runs(node: Node) -> None:
    cid = await node.create()
    node.runtime.fail["start"] = OCIError("runc start: timed out")
    node.runtime.started_anyway = True
    record = await node.manager.start(cid)
    assert record.state == CONTAINER_RUNNING and node.events[-1] == ("started", cid)
    await node.manager.close()


async def test_a_start_that_never_ran_is_a_start_error(node: Node) -> None:
    cid = await node.create()
    node.runtime.fail["start"] = OCIError("runc start: permission denied")
    with pytest.raises(OCIError):
        await node.manager.start(cid)
    record = node.manager.store.get(cid)
    assert (record.state, record.exit_code, record.reason) == (CONTAINER_EXITED, 128, "StartError")
    with pytest.raises(errors.FailedPrecondition):
        await node.manager.start(cid)


async def test_recovery_makes_every_record_say_what_the_runtime_says(node: Node) -> None:
    exited, running, lost, crashed_in_start = [await node.create(n) for n in ("exited", "running", "lost", "start")]
    for cid in (exited, running, lost):
        await node.manager.start(cid)
    await node.manager.close()   # the daemon goes down; containers live on in the runtime
    node.runtime.exit(exited, 0)                              # exited while it was down
    del node.runtime.containers[lost]                         # gone without an exit (host reboot)
    node.runtime.containers[crashed_in_start].status = "running"   # started, but not recorded
    half_built = "half" + "0" * 60                            # a crash inside CreateContainer
    node.manager.store.add(ContainerRecord(
        half_built, "pod1", "half", 0, CONTAINER_CREATED, 1, IMAGE_ID, IMAGE_ID, b"",
        handler="fake", building=True))
    node.snapshots.create(half_built, node.images.get(IMAGE_ID))

    restarted = node.new_manager()
    await restarted.recover()
    got = {cid: (r.state, r.exit_code, r.reason) for cid, r in ((r.id, r) for r in restarted.store.list())}
    assert got == {exited: (CONTAINER_EXITED, 0, "Completed"), running: (CONTAINER_RUNNING, 0, ""),
                   lost: (CONTAINER_EXITED, 255, "Error"), crashed_in_start: (CONTAINER_RUNNING, 0, "")}
    assert half_built not in node.snapshots.snapshots
    # The running ones are watched again: an exit now is recorded without anyone asking.
    node.runtime.exit(running, 7)
    await exit_recorded(restarted, running)
    assert (restarted.store.get(running).state, restarted.store.get(running).exit_code) == (CONTAINER_EXITED, 7)
    await restarted.close()
    assert os.path.isdir(node.snapshots.snapshots[running].path)
