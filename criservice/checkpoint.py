"""CheckpointContainer (CRIU through the OCI runtime) and UpdatePodSandboxResources."""

from __future__ import annotations

import os

import grpc
from google.protobuf import json_format

from api import api_pb2 as pb
from criservice.deps import Area
from runtime import checkpoint, errors


class Checkpoints(Area):
    async def CheckpointContainer(self, request: pb.CheckpointContainerRequest,
                                  context: grpc.aio.ServicerContext) -> pb.CheckpointContainerResponse:
        record = self.deps.workloads.running(request.container_id)
        if not request.location:
            raise errors.InvalidArgument("location is empty: name the archive to write")
        runtime = self.deps.workloads.runtime_for(record.details["handler"])
        runtime_path, root = getattr(runtime, "runtime_path", None), getattr(runtime, "root", None)
        if runtime_path is None or root is None:
            raise errors.Unimplemented(f"runtime handler {record.details['handler']!r} cannot checkpoint")
        await checkpoint.checkpoint(
            runtime_path, root, record.id, record.details["bundle"], request.location,
            work_dir=os.path.join(self.deps.config.paths.state_dir, "checkpoints"),
            timeout=float(request.timeout) if request.timeout > 0 else None)
        return pb.CheckpointContainerResponse()

    async def UpdatePodSandboxResources(self, request: pb.UpdatePodSandboxResourcesRequest,
                                        context: grpc.aio.ServicerContext) -> pb.UpdatePodSandboxResourcesResponse:
        """The kubelet sizes the pod cgroup itself; the runtime keeps what it was told (shown by
        `crictl inspectp`) for its own accounting and for plugins."""
        record = self.deps.sandboxes.get(request.pod_sandbox_id)
        self.deps.sandboxes.update_details(record.id, pod_resources={
            "overhead": json_format.MessageToDict(request.overhead),
            "resources": json_format.MessageToDict(request.resources)})
        return pb.UpdatePodSandboxResourcesResponse()
