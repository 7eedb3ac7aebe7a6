"""The two CRI services, each assembled from one mixin per area.

Every RPC of the pinned proto is registered. An RPC no area implements yet
answers UNIMPLEMENTED naming itself, instead of the generated stub's anonymous
"Method not implemented!".
"""

from __future__ import annotations

from typing import Any

import grpc

from api import api_pb2, api_pb2_grpc
from criservice.checkpoint import Checkpoints
from criservice.deps import Deps
from criservice.containers import Containers
from criservice.events import ContainerEvents
from criservice.images import Images
from criservice.pod_metrics import PodMetrics
from criservice.runtime_info import RuntimeInfo
from criservice.sandboxes import Sandboxes
from criservice.streaming import Streaming
from criservice.stats import ResourceStats
from runtime import errors


def _unimplemented(service: str, method: str, server_streaming: bool) -> Any:
    message = f"{service}.{method} is not implemented yet"
    if server_streaming:
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            raise errors.Unimplemented(message)
            yield  # pragma: no cover - makes this an async generator, as streams must be
        stream.__name__ = method
        return stream

    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise errors.Unimplemented(message)
    unary.__name__ = method
    return unary


def _complete(cls: type, generated_base: type, service: str) -> type:
    descriptor = api_pb2.DESCRIPTOR.services_by_name[service]
    for m in descriptor.methods:
        if getattr(cls, m.name) is getattr(generated_base, m.name):
            setattr(cls, m.name, _unimplemented(service, m.name, m.server_streaming))
    return cls


class RuntimeService(RuntimeInfo, Sandboxes, Containers, ResourceStats, ContainerEvents, PodMetrics,
                     Checkpoints, Streaming, api_pb2_grpc.RuntimeServiceServicer):
    pass


class ImageService(Images, api_pb2_grpc.ImageServiceServicer):
    pass


_complete(RuntimeService, api_pb2_grpc.RuntimeServiceServicer, "RuntimeService")
_complete(ImageService, api_pb2_grpc.ImageServiceServicer, "ImageService")


def register(server: grpc.aio.Server, deps: Deps) -> None:
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RuntimeService(deps), server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageService(deps), server)
