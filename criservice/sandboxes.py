"""Pod sandbox RPCs: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
ListPodSandbox, StreamPodSandboxes, UpdatePodSandboxResources."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from api import api_pb2 as pb
from criservice import convert
from criservice.deps import Area
from criservice.listing import ItemCache, chunks, selected
from runtime import errors
from runtime.records import SANDBOX_READY, SandboxRecord, SandboxStore

def _state(record: SandboxRecord) -> pb.PodSandboxState:
    return pb.PodSandboxState.SANDBOX_READY if record.state == SANDBOX_READY else pb.PodSandboxState.SANDBOX_NOTREADY


def _metadata(record: SandboxRecord) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=record.name, uid=record.uid, namespace=record.namespace,
                                 attempt=record.attempt)


def _details(record: SandboxRecord) -> dict[str, Any]:
    """What `crictl inspectp` shows beyond the status: the record's own fields."""
    out = dataclasses.asdict(record)
    for key in SandboxStore.columns:   # the status says those
        del out[key]
    return out


def sandbox_status(record: SandboxRecord, verbose: bool = False) -> pb.PodSandboxStatusResponse:
    """PodSandboxStatus's answer (GetContainerEvents sends it with every event)."""
    ips = record.ips
    namespaces = record.pod.namespaces
    status = pb.PodSandboxStatus(
        id=record.id, metadata=_metadata(record), state=_state(record), created_at=record.created_at,
        network=pb.PodSandboxNetworkStatus(
            ip=ips[0] if ips else "", additional_ips=[pb.PodIP(ip=ip) for ip in ips[1:]]),
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(
            options=convert.namespace_option(namespaces) if namespaces is not None else None)),
        labels=record.labels, annotations=record.annotations, runtime_handler=record.handler)
    response = pb.PodSandboxStatusResponse(status=status, timestamp=time.time_ns())
    if verbose:
        response.info["info"] = json.dumps({
            "id": record.id, "state": record.state, "runtimeHandler": record.handler,
            "phasesMs": record.phases_ms, "details": _details(record)})
    return response


class Sandboxes(Area):
    def _handler(self, name: str) -> str:
        handler = name or self.deps.config.runtime.default_handler
        if handler not in self.deps.config.runtime.handlers:
            raise errors.InvalidArgument(f"runtime_handler: unknown runtime handler {errors.shown(name)} "
                                         f"(configured: {', '.join(sorted(self.deps.config.runtime.handlers))})")
        return handler

    async def RunPodSandbox(self, request: pb.RunPodSandboxRequest,
                            context: grpc.aio.ServicerContext) -> pb.RunPodSandboxResponse:
        req = dataclasses.replace(convert.pod_request(request), handler=self._handler(request.runtime_handler))
        record = await self.deps.pods.run(req)
        return pb.RunPodSandboxResponse(pod_sandbox_id=record.id)

    async def StopPodSandbox(self, request: pb.StopPodSandboxRequest,
                             context: grpc.aio.ServicerContext) -> pb.StopPodSandboxResponse:
        if not request.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is empty")
        record = self.deps.pod_records.find(request.pod_sandbox_id)
        if record is not None:  # stopping what is gone already is success, as the kubelet expects
            await self.deps.pods.stop(record.id, self.deps.containers.stop_all)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest,
                               context: grpc.aio.ServicerContext) -> pb.RemovePodSandboxResponse:
        if not request.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is empty")
        record = self.deps.pod_records.find(request.pod_sandbox_id)
        if record is not None:  # removing what is gone already is success
            await self.deps.pods.remove(record.id, self.deps.containers.stop_all, self.deps.containers.remove_all)
        return pb.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest,
                               context: grpc.aio.ServicerContext) -> pb.PodSandboxStatusResponse:
        return sandbox_status(self.deps.pod_records.get(request.pod_sandbox_id), verbose=request.verbose)

    async def UpdatePodSandboxResources(self, request: pb.UpdatePodSandboxResourcesRequest,
                                        context: grpc.aio.ServicerContext) -> pb.UpdatePodSandboxResourcesResponse:
        """The kubelet sizes the pod cgroup itself; the runtime keeps what it was told (shown by
        `crictl inspectp`) for its own accounting and for plugins."""
        self.deps.pods.told_resources(
            request.pod_sandbox_id,
            overhead=convert.resources_input(request.overhead) if request.HasField("overhead") else None,
            resources=convert.resources_input(request.resources) if request.HasField("resources") else None)
        return pb.UpdatePodSandboxResourcesResponse()

    @functools.cached_property
    def _sandbox_items(self) -> ItemCache[pb.PodSandbox]:
        return ItemCache()

    def _list_sandboxes(self, flt: pb.PodSandboxFilter) -> list[pb.PodSandbox]:
        out = []
        records = self.deps.pod_records.list()
        for record in records:
            # A sandbox is not one until RunPodSandbox returned it.
            if not selected(record, flt, _state(record), building=record.building):
                continue
            out.append(self._sandbox_items.item(record, lambda: pb.PodSandbox(
                id=record.id, metadata=_metadata(record), state=_state(record), created_at=record.created_at,
                labels=record.labels, annotations=record.annotations, runtime_handler=record.handler)))
        self._sandbox_items.prune(records)
        return out

    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListPodSandboxResponse:
        return pb.ListPodSandboxResponse(items=self._list_sandboxes(request.filter))

    async def StreamPodSandboxes(self, request: pb.StreamPodSandboxesRequest,
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamPodSandboxesResponse]:
        for chunk in chunks(self._list_sandboxes(request.filter)):
            yield pb.StreamPodSandboxesResponse(pod_sandboxes=chunk)
