"""List items are built once per record version and always show the current one."""

from __future__ import annotations

import dataclasses

import grpc

from api import api_pb2 as pb, api_pb2_grpc
from criservice.listing import ItemCache
from criservice.server import Daemon
from runtime.records import CONTAINER_CREATED, CONTAINER_RUNNING, SANDBOX_READY, ContainerRecord, SandboxRecord


def _pod(ident: str) -> SandboxRecord:
    return SandboxRecord(ident, "web", "default", "uid-" + ident, 0, SANDBOX_READY, 1, "runc",
                         pb.PodSandboxConfig().SerializeToString(), labels={"app": "web"})


def _container(ident: str, sandbox: str) -> ContainerRecord:
    return ContainerRecord(ident, sandbox, "app", 0, CONTAINER_CREATED, 2, "sha256:" + "e" * 64, "busybox",
                           pb.ContainerConfig().SerializeToString(), labels={"tier": "a"})


def test_item_is_rebuilt_only_when_its_record_or_extra_changes() -> None:
    cache: ItemCache[str] = ItemCache()
    built: list[str] = []

    def build(text: str):  # type: ignore[no-untyped-def]
        return lambda: built.append(text) or text

    rec = _pod("a" * 64)
    assert cache.item(rec, build("v1")) == "v1"
    assert cache.item(rec, build("again")) == "v1"
    changed = dataclasses.replace(rec, labels={"app": "db"})
    assert cache.item(changed, build("v2")) == "v2"
    assert cache.item(changed, build("v3"), extra="sha256:new") == "v3"
    assert built == ["v1", "v2", "v3"]


def test_prune_forgets_records_that_are_gone() -> None:
    cache: ItemCache[str] = ItemCache()
    a, b = _pod("a" * 64), _pod("b" * 64)
    cache.item(a, lambda: "a")
    cache.item(b, lambda: "b")
    cache.prune([b])
    assert cache.item(a, lambda: "rebuilt") == "rebuilt"
    assert cache.item(b, lambda: "not rebuilt") == "b"


async def test_lists_show_every_change_of_a_record(channel: grpc.aio.Channel, daemon: Daemon) -> None:
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    assert daemon.deps is not None
    pods, containers = daemon.deps.pod_records, daemon.deps.container_records
    pods.add(_pod("a" * 64))
    containers.add(_container("c" * 64, "a" * 64))
    first = await rt.ListContainers(pb.ListContainersRequest())
    assert [(c.id, c.state) for c in first.containers] == [("c" * 64, pb.CONTAINER_CREATED)]

    containers.transition("c" * 64, CONTAINER_RUNNING, started_at=3)
    running = pb.ListContainersRequest(filter=pb.ContainerFilter(
        state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)))
    assert [c.id for c in (await rt.ListContainers(running)).containers] == ["c" * 64]
    assert [c.state for c in (await rt.ListContainers(pb.ListContainersRequest())).containers] == [
        pb.CONTAINER_RUNNING]

    pods.update("a" * 64, lambda r: dataclasses.replace(r, ips=("10.0.0.9",)))
    pods.update("a" * 64, lambda r: dataclasses.replace(r, state="notready"))
    listed = (await rt.ListPodSandbox(pb.ListPodSandboxRequest())).items
    assert [(p.id, p.state, dict(p.labels)) for p in listed] == [("a" * 64, pb.SANDBOX_NOTREADY, {"app": "web"})]

    containers.delete("c" * 64)
    pods.delete("a" * 64)
    assert not (await rt.ListContainers(pb.ListContainersRequest())).containers
    assert not (await rt.ListPodSandbox(pb.ListPodSandboxRequest())).items
