"""CheckpointContainer: CRIU through the OCI runtime."""

from __future__ import annotations

import os

import grpc

from api import api_pb2 as pb
from criservice.deps import Area
from runtime import checkpoint, errors


class Checkpoints(Area):
    async def CheckpointContainer(self, request: pb.CheckpointContainerRequest,
                                  context: grpc.aio.ServicerContext) -> pb.CheckpointContainerResponse:
        record = self.deps.containers.running(request.container_id)
        if not request.location:
            raise errors.InvalidArgument("location is empty: name the archive to write")
        runtime = self.deps.containers.runtime_for(record.handler)
        runtime_path, root = getattr(runtime, "runtime_path", None), getattr(runtime, "root", None)
        if runtime_path is None or root is None:
            raise errors.Unimplemented(f"runtime handler {record.handler!r} cannot checkpoint")
        await checkpoint.checkpoint(
            runtime_path, root, record.id, record.bundle, request.location,
            work_dir=os.path.join(self.deps.config.paths.state_dir, "checkpoints"),
            timeout=float(request.timeout) if request.timeout > 0 else None)
        return pb.CheckpointContainerResponse()
