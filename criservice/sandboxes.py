"""Pod sandbox RPCs: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
ListPodSandbox, StreamPodSandboxes, UpdatePodSandboxResources."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import AsyncIterator

import logging
from typing import Any

import grpc
from google.protobuf import json_format

from api import api_pb2 as pb
from criservice import convert
from criservice.deps import Area
from criservice.listing import ItemCache, chunks, selected
from runtime import errors
from runtime.oci.specinput import ResourcesInput
from runtime.podspec import PodSpec, PortMapping
from runtime.pods import PodRequest
from runtime.records import SANDBOX_READY, SandboxRecord

log = logging.getLogger("criservice.sandboxes")

_PROTOCOLS = {pb.Protocol.TCP: "tcp", pb.Protocol.UDP: "udp", pb.Protocol.SCTP: "sctp"}


def pod_request(request: pb.RunPodSandboxRequest) -> PodRequest:
    """The runtime's view of a RunPodSandbox request; the CRI config itself is kept as bytes."""
    cfg = request.config
    if not request.HasField("config"):
        raise errors.InvalidArgument("config is missing")
    if not cfg.HasField("metadata"):
        raise errors.InvalidArgument("config.metadata is missing")
    return PodRequest(
        name=cfg.metadata.name, namespace=cfg.metadata.namespace, uid=cfg.metadata.uid,
        attempt=cfg.metadata.attempt, handler=request.runtime_handler, config=cfg.SerializeToString(),
        labels=dict(cfg.labels), annotations=dict(cfg.annotations), pod=pod_spec(cfg))


def pod_spec(cfg: pb.PodSandboxConfig) -> PodSpec:
    """The pod's settings in runtime types, made once at RunPodSandbox."""
    ctx = cfg.linux.security_context
    ns = ctx.namespace_options
    field = "config.linux.security_context.namespace_options"
    if pb.NamespaceMode.TARGET in (ns.network, ns.ipc, ns.pid):
        raise errors.InvalidArgument(f"{field}: TARGET is only valid for the PID namespace of a container")
    ports = []
    for i, pm in enumerate(cfg.port_mappings):
        if pm.protocol not in _PROTOCOLS:
            raise errors.InvalidArgument(f"config.port_mappings[{i}].protocol: unknown protocol {pm.protocol}")
        ports.append(PortMapping(_PROTOCOLS[pm.protocol], pm.container_port, pm.host_port, pm.host_ip))
    return PodSpec(
        hostname=cfg.hostname, log_directory=cfg.log_directory,
        dns_servers=tuple(cfg.dns_config.servers), dns_searches=tuple(cfg.dns_config.searches),
        dns_options=tuple(cfg.dns_config.options), port_mappings=tuple(ports),
        host_network=ns.network == pb.NamespaceMode.NODE, host_ipc=ns.ipc == pb.NamespaceMode.NODE,
        host_pid=ns.pid == pb.NamespaceMode.NODE,
        # The CRI's zero value for the PID mode is POD: the pod's containers share one namespace.
        shared_pid=ns.pid == pb.NamespaceMode.POD,
        cgroup_parent=cfg.linux.cgroup_parent, sysctls=dict(cfg.linux.sysctls),
        security=convert.pod_security_input(ctx),
        namespaces=convert.namespaces_input(ns, field) if ctx.HasField("namespace_options") else None)


class LegacyRecords:
    """Reads what a state database of before typed records kept as CRI protobuf."""

    def pod_spec(self, config: bytes) -> PodSpec:
        cfg = pb.PodSandboxConfig.FromString(config)
        try:
            return pod_spec(cfg)
        except errors.CRIError as e:
            # The code of then took it; the record's own keys still give what it ran with.
            log.warning("a recorded pod's config does not convert; its security context is the default",
                        extra={"fields": {"pod": cfg.metadata.name, "error": str(e)}})
            return PodSpec()

    def resources(self, message: dict[str, Any]) -> ResourcesInput:
        return convert.resources_input(json_format.ParseDict(message, pb.LinuxContainerResources()))


def _state(record: SandboxRecord) -> pb.PodSandboxState:
    return pb.PodSandboxState.SANDBOX_READY if record.state == SANDBOX_READY else pb.PodSandboxState.SANDBOX_NOTREADY


def _metadata(record: SandboxRecord) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=record.name, uid=record.uid, namespace=record.namespace,
                                 attempt=record.attempt)


def _details(record: SandboxRecord) -> dict[str, Any]:
    """What `crictl inspectp` shows beyond the status: the record's own fields."""
    out = dataclasses.asdict(record)
    for key in ("id", "name", "namespace", "uid", "attempt", "state", "created_at", "handler", "config",
                "labels", "annotations"):
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
        req = dataclasses.replace(pod_request(request), handler=self._handler(request.runtime_handler))
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
        record = self.deps.pod_records.get(request.pod_sandbox_id)
        overhead = convert.resources_input(request.overhead) if request.HasField("overhead") else None
        resources = convert.resources_input(request.resources) if request.HasField("resources") else None
        self.deps.pod_records.update(record.id, lambda r: dataclasses.replace(
            r, overhead=overhead, resources=resources))
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
