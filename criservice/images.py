"""ImageService: image filesystem usage now; pulling and listing come with the image store."""

from __future__ import annotations

import os

import grpc

from api import api_pb2 as pb
from criservice.deps import Area, Deps
from runtime.fsusage import Usage, UsageCache


def _fs_usage(u: Usage) -> pb.FilesystemUsage:
    return pb.FilesystemUsage(timestamp=u.timestamp_ns, fs_id=pb.FilesystemIdentifier(mountpoint=u.path),
                              used_bytes=pb.UInt64Value(value=u.bytes_used),
                              inodes_used=pb.UInt64Value(value=u.inodes_used))


class ImageFs(Area):
    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        self._usage = UsageCache()

    async def ImageFsInfo(self, request: pb.ImageFsInfoRequest,
                          context: grpc.aio.ServicerContext) -> pb.ImageFsInfoResponse:
        cfg = self.deps.config
        images = await self._usage.get(cfg.image_root)
        containers = await self._usage.get(os.path.join(cfg.paths.state_dir, "containers"))
        return pb.ImageFsInfoResponse(image_filesystems=[_fs_usage(images)],
                                      container_filesystems=[_fs_usage(containers)])
