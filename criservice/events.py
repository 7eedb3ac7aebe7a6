"""GetContainerEvents: the lifecycle events of containers and sandboxes, streamed.

Each event carries the pod's status and the statuses of its containers as they
are when the event is sent, which is what the kubelet's Evented PLEG updates its
cache from. A sandbox's own events name the sandbox id as the container id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from api import api_pb2 as pb
from criservice.containers import container_status
from criservice.deps import Area
from criservice.sandboxes import sandbox_status
from runtime import events
from runtime.events import Event

_TYPES = {events.CREATED: pb.ContainerEventType.CONTAINER_CREATED_EVENT,
          events.STARTED: pb.ContainerEventType.CONTAINER_STARTED_EVENT,
          events.STOPPED: pb.ContainerEventType.CONTAINER_STOPPED_EVENT,
          events.DELETED: pb.ContainerEventType.CONTAINER_DELETED_EVENT}


class ContainerEvents(Area):
    def _event_response(self, event: Event) -> pb.ContainerEventResponse:
        response = pb.ContainerEventResponse(container_id=event.container_id,
                                             container_event_type=_TYPES[event.kind],
                                             created_at=event.timestamp_ns)
        sandbox = self.deps.pod_records.find(event.sandbox_id)
        if sandbox is None:
            return response  # the sandbox is gone: nothing left to describe
        response.pod_sandbox_status.CopyFrom(sandbox_status(sandbox).status)
        for record in self.deps.container_records.in_sandbox(event.sandbox_id):
            if not record.building:
                response.containers_statuses.append(container_status(self.deps.images, record).status)
        return response

    async def GetContainerEvents(self, request: pb.GetEventsRequest,
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ContainerEventResponse]:
        with self.deps.events.subscribe() as subscription:
            async for event in subscription:
                yield self._event_response(event)
