"""ImageService: PullImage, ListImages, ImageStatus, RemoveImage, ImageFsInfo, StreamImages."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator

import grpc

from api import api_pb2 as pb
from criservice import convert
from criservice.deps import Area, Deps
from runtime import errors
from runtime.fsusage import Usage, UsageCache
from runtime.images import reference
from runtime.images.store import ImageRecord

log = logging.getLogger("criservice.images")


def _fs_usage(u: Usage) -> pb.FilesystemUsage:
    return pb.FilesystemUsage(timestamp=u.timestamp_ns, fs_id=pb.FilesystemIdentifier(mountpoint=u.path),
                              used_bytes=pb.UInt64Value(value=u.bytes_used),
                              inodes_used=pb.UInt64Value(value=u.inodes_used))


class Images(Area):
    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        self._usage = UsageCache()

    # ---- helpers -------------------------------------------------------------

    def _to_pb(self, image: ImageRecord) -> pb.Image:
        uid, username = image.uid_and_username
        msg = pb.Image(id=image.id, repo_tags=image.repo_tags, repo_digests=image.repo_digests,
                       size=image.size, username=username, spec=pb.ImageSpec(image=image.id),
                       pinned=self._pinned(image))
        if uid is not None:
            msg.uid.value = uid
        return msg

    def _pinned(self, image: ImageRecord) -> bool:
        # The infra image must survive the kubelet's image garbage collection.
        try:
            pause = reference.parse(self.deps.config.image.pause_image)
        except reference.InvalidReference:
            return False
        return str(pause.repo_tag) in image.repo_tags or \
            (pause.digest is not None and pause.with_digest(pause.digest) in image.repo_digests)

    def _check_handler(self, spec: pb.ImageSpec) -> None:
        handler = spec.runtime_handler
        if handler and handler not in self.deps.config.runtime.handlers:
            raise errors.InvalidArgument(f"image.runtime_handler: unknown runtime handler {errors.shown(handler)}")

    def _find(self, spec: pb.ImageSpec, field: str = "image.image") -> ImageRecord | None:
        if not spec.image:
            raise errors.InvalidArgument(f"{field} is empty")
        return self.deps.images.lookup(spec.image)

    # ---- RPCs ------------------------------------------------------------------

    async def PullImage(self, request: pb.PullImageRequest,
                        context: grpc.aio.ServicerContext) -> pb.PullImageResponse:
        self._check_handler(request.image)
        if not request.image.image:
            raise errors.InvalidArgument("image.image is empty")
        try:
            ref = reference.parse(request.image.image)
        except reference.InvalidReference as e:
            raise errors.InvalidArgument(f"image.image: {e}") from None
        remaining = context.time_remaining()
        pull = self.deps.puller.pull(ref, convert.credentials(request.auth))
        try:
            image = await (asyncio.wait_for(pull, remaining) if remaining is not None else pull)
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"pulling {ref}: the request deadline passed; the pull goes on in the background") from None
        self._usage.invalidate(self.deps.config.image_root)
        return pb.PullImageResponse(image_ref=image.id)

    async def ListImages(self, request: pb.ListImagesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListImagesResponse:
        return pb.ListImagesResponse(images=self._list_images(request.filter))

    def _list_images(self, flt: pb.ImageFilter) -> list[pb.Image]:
        if flt.image.image:
            try:
                found = self.deps.images.lookup(flt.image.image)
            except errors.InvalidArgument:
                return []  # a filter that can name no image matches none
            return [self._to_pb(found)] if found else []
        return [self._to_pb(i) for i in self.deps.images.list()]

    async def StreamImages(self, request: pb.StreamImagesRequest,
                           context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamImagesResponse]:
        images = self._list_images(request.filter)
        for start in range(0, len(images), 100):  # keep each message small
            yield pb.StreamImagesResponse(images=images[start:start + 100])

    async def ImageStatus(self, request: pb.ImageStatusRequest,
                          context: grpc.aio.ServicerContext) -> pb.ImageStatusResponse:
        image = self._find(request.image)
        if image is None:
            return pb.ImageStatusResponse()  # the CRI's "not present": no image, no error
        response = pb.ImageStatusResponse(image=self._to_pb(image))
        if request.verbose:
            response.info["info"] = json.dumps({
                "id": image.id, "manifestDigest": image.manifest_digest,
                "chainIDs": [layer.chain_id for layer in self.deps.images.layers_of(image)],
                "layerDirs": self.deps.images.layer_paths(image),
                "imageSpec": image.config})
        return response

    async def RemoveImage(self, request: pb.RemoveImageRequest,
                          context: grpc.aio.ServicerContext) -> pb.RemoveImageResponse:
        image = self._find(request.image)
        if image is not None:  # removing what is not there is success (idempotent)
            await asyncio.to_thread(self.deps.images.remove, image.id)
            self._usage.invalidate(self.deps.config.image_root)
            log.info("image removed", extra={"fields": {"image": image.id, "tags": list(image.repo_tags)}})
        return pb.RemoveImageResponse()

    async def ImageFsInfo(self, request: pb.ImageFsInfoRequest,
                          context: grpc.aio.ServicerContext) -> pb.ImageFsInfoResponse:
        cfg = self.deps.config
        images = await self._usage.get(cfg.image_root)
        containers = await self._usage.get(os.path.join(cfg.paths.state_dir, "containers"))
        return pb.ImageFsInfoResponse(image_filesystems=[_fs_usage(images)],
                                      container_filesystems=[_fs_usage(containers)])
