"""Container RPCs: CreateContainer, StartContainer, StopContainer, RemoveContainer,
ContainerStatus, ListContainers, StreamContainers, ExecSync, UpdateContainerResources,
ReopenContainerLog."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator

import grpc

from api import api_pb2 as pb
from criservice import convert
from criservice.deps import Area
from criservice.listing import ItemCache, chunks, selected
from runtime import errors
from runtime.images.store import ImageRecord, ImageStore
from runtime.records import CONTAINER_CREATED, CONTAINER_EXITED, CONTAINER_RUNNING, ContainerRecord

_STATES = {CONTAINER_CREATED: pb.ContainerState.CONTAINER_CREATED,
           CONTAINER_RUNNING: pb.ContainerState.CONTAINER_RUNNING,
           CONTAINER_EXITED: pb.ContainerState.CONTAINER_EXITED}

# ExecSync output is held in memory and sent in one message: bound it.
EXEC_SYNC_MAX_OUTPUT = 16 * 1024 * 1024


def _config(record: ContainerRecord) -> pb.ContainerConfig:
    return pb.ContainerConfig.FromString(record.config)


def _mounts(record: ContainerRecord, cfg: pb.ContainerConfig) -> list[pb.Mount]:
    """The mounts asked for; an image volume also names the image it resolved to."""
    volumes = record.image_volumes
    out = []
    for m in cfg.mounts:
        if m.HasField("image") and m.container_path in volumes:
            m = pb.Mount.FromString(m.SerializeToString())
            m.image.image_ref = volumes[m.container_path].image_id
        out.append(m)
    return out


def _metadata(record: ContainerRecord) -> pb.ContainerMetadata:
    return pb.ContainerMetadata(name=record.name, attempt=record.attempt)


def _state(record: ContainerRecord) -> pb.ContainerState:
    return _STATES.get(record.state, pb.ContainerState.CONTAINER_UNKNOWN)


def image_ref(images: ImageStore, image_id: str) -> str:
    """A digest the image can be pulled by again, as the kubelet shows it; else the id."""
    return _pullable_ref(images.get(image_id), image_id)


def _pullable_ref(image: ImageRecord | None, image_id: str) -> str:
    return image.repo_digests[0] if image is not None and image.repo_digests else image_id


def _image_name(image: ImageRecord | None, record: ContainerRecord, cfg: pb.ContainerConfig) -> str:
    """The image as its user named it, which the kubelet shows as the pod's
    containerStatuses[].image: it sends the image's id as `image` and the pod spec's
    name as `user_specified_image`. Without that name (crictl, older kubelets), a
    reference given by id is shown by the image's first tag, as containerd does."""
    if cfg.image.user_specified_image:
        return cfg.image.user_specified_image
    if record.image_ref in (record.image_id, record.image_id.removeprefix("sha256:")):
        if image is not None and image.repo_tags:
            return image.repo_tags[0]
    return record.image_ref


def container_status(images: ImageStore, record: ContainerRecord,
                     verbose: bool = False) -> pb.ContainerStatusResponse:
    """ContainerStatus's answer (GetContainerEvents sends it with every event)."""
    cfg = _config(record)
    image = images.get(record.image_id)   # one lookup for both the name and the digest
    status = pb.ContainerStatus(
        id=record.id, metadata=_metadata(record), state=_state(record), created_at=record.created_at,
        started_at=record.started_at, finished_at=record.finished_at, exit_code=record.exit_code,
        image=pb.ImageSpec(image=_image_name(image, record, cfg), annotations=cfg.image.annotations,
                           user_specified_image=cfg.image.user_specified_image),
        image_ref=_pullable_ref(image, record.image_id), image_id=record.image_id, reason=record.reason,
        message=record.message, labels=record.labels, annotations=record.annotations,
        mounts=_mounts(record, cfg), log_path=record.log_path,
        stop_signal=cfg.stop_signal)
    if record.resources is not None:
        status.resources.linux.CopyFrom(convert.resources_to_pb(record.resources))
    elif cfg.linux.HasField("resources"):
        status.resources.linux.CopyFrom(cfg.linux.resources)
    if record.user is not None:
        status.user.linux.uid = record.user.uid
        status.user.linux.gid = record.user.gid
        status.user.linux.supplemental_groups.extend(record.user.additional_gids)
    response = pb.ContainerStatusResponse(status=status)
    if verbose:
        response.info["info"] = json.dumps({
            "sandboxID": record.sandbox_id, "pid": record.pid, "runtimeHandler": record.handler,
            "bundle": record.bundle, "cgroupsPath": record.cgroups_path})
    return response


class Containers(Area):
    async def CreateContainer(self, request: pb.CreateContainerRequest,
                              context: grpc.aio.ServicerContext) -> pb.CreateContainerResponse:
        if not request.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is empty")
        if not request.HasField("config"):
            raise errors.InvalidArgument("config is missing")
        sandbox = self.deps.pod_records.get(request.pod_sandbox_id)
        # The kubelet sends the pod's config again; crictl often does not, and then the
        # record's stands in.
        pod_ns = sandbox.pod.namespaces
        if request.HasField("sandbox_config"):
            pod_ns = convert.pod_namespaces(request.sandbox_config)
        container = convert.container_input(request.config, pod_ns)
        record = await self.deps.containers.create(sandbox.id, container, image_ref=request.config.image.image,
                                                  config=request.config.SerializeToString())
        return pb.CreateContainerResponse(container_id=record.id)

    async def StartContainer(self, request: pb.StartContainerRequest,
                             context: grpc.aio.ServicerContext) -> pb.StartContainerResponse:
        await self.deps.containers.start(self.deps.container_records.get(request.container_id).id)
        return pb.StartContainerResponse()

    async def StopContainer(self, request: pb.StopContainerRequest,
                            context: grpc.aio.ServicerContext) -> pb.StopContainerResponse:
        if not request.container_id:
            raise errors.InvalidArgument("container_id is empty")
        record = self.deps.container_records.find(request.container_id)
        if record is not None:  # stopping what is gone already is success
            await self.deps.containers.stop(record.id, request.timeout)
        return pb.StopContainerResponse()

    async def RemoveContainer(self, request: pb.RemoveContainerRequest,
                              context: grpc.aio.ServicerContext) -> pb.RemoveContainerResponse:
        if not request.container_id:
            raise errors.InvalidArgument("container_id is empty")
        record = self.deps.container_records.find(request.container_id)
        if record is not None:  # removing what is gone already is success
            await self.deps.containers.remove(record.id)
        return pb.RemoveContainerResponse()

    async def ContainerStatus(self, request: pb.ContainerStatusRequest,
                              context: grpc.aio.ServicerContext) -> pb.ContainerStatusResponse:
        return container_status(self.deps.images, self.deps.container_records.get(request.container_id),
                                verbose=request.verbose)

    @functools.cached_property
    def _container_items(self) -> ItemCache[pb.Container]:
        return ItemCache()

    def _list_containers(self, flt: pb.ContainerFilter) -> list[pb.Container]:
        out = []
        # One image lookup (several queries) per image, not per container: pods share images.
        refs: dict[str, str] = {}
        records = self.deps.container_records.list()
        for record in records:
            if not selected(record, flt, _state(record), building=record.building):
                continue
            if flt.pod_sandbox_id and not record.sandbox_id.startswith(flt.pod_sandbox_id):
                continue
            if record.image_id not in refs:
                refs[record.image_id] = image_ref(self.deps.images, record.image_id)
            ref = refs[record.image_id]
            out.append(self._container_items.item(record, lambda: pb.Container(
                id=record.id, pod_sandbox_id=record.sandbox_id, metadata=_metadata(record),
                image=pb.ImageSpec(image=record.image_ref), image_ref=ref,
                image_id=record.image_id, state=_state(record), created_at=record.created_at,
                labels=record.labels, annotations=record.annotations), extra=ref))
        self._container_items.prune(records)
        return out

    async def ListContainers(self, request: pb.ListContainersRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListContainersResponse:
        return pb.ListContainersResponse(containers=self._list_containers(request.filter))

    async def StreamContainers(self, request: pb.StreamContainersRequest,
                               context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamContainersResponse]:
        for chunk in chunks(self._list_containers(request.filter)):
            yield pb.StreamContainersResponse(containers=chunk)

    async def ExecSync(self, request: pb.ExecSyncRequest,
                       context: grpc.aio.ServicerContext) -> pb.ExecSyncResponse:
        if not request.cmd:
            raise errors.InvalidArgument("cmd is empty")
        record = self.deps.containers.running(request.container_id)
        runtime = self.deps.containers.runtime_for(record.handler)
        result = await runtime.exec_sync(record.id, list(request.cmd),
                                         timeout=float(request.timeout) if request.timeout > 0 else None,
                                         max_output=EXEC_SYNC_MAX_OUTPUT)
        if result.timed_out:
            raise errors.DeadlineExceeded(
                f"command {errors.shown(' '.join(request.cmd), 256)} timed out after {request.timeout}s and was killed")
        return pb.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    async def UpdateContainerResources(self, request: pb.UpdateContainerResourcesRequest,
                                       context: grpc.aio.ServicerContext) -> pb.UpdateContainerResourcesResponse:
        await self.deps.containers.update(self.deps.container_records.get(request.container_id).id,
                                          convert.resources_input(request.linux))
        return pb.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(self, request: pb.ReopenContainerLogRequest,
                                 context: grpc.aio.ServicerContext) -> pb.ReopenContainerLogResponse:
        await self.deps.containers.reopen_log(request.container_id)
        return pb.ReopenContainerLogResponse()
