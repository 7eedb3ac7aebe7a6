"""Pulling an image: resolve, fetch the config, stream every layer straight into
its unpacker, and record the image once it is whole.

Each layer's bytes go from the HTTP stream, through a digest check, into a pipe
that an unpacker thread reads: downloading, verifying and unpacking overlap, and
layers run in parallel up to the configured limit. Two pulls of one image share
one task; two images sharing a layer share its download.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from runtime import errors
from runtime.images import registry
from runtime.images.reference import Reference
from runtime.images.store import ImageRecord, ImageStore, LayerRecord, chain_ids
from runtime.images.unpack import UnpackError, UnpackLimits, UnpackResult, detect_compression, unpack_layer
from runtime.crashpoints import crash_point
from runtime.tasks import together

log = logging.getLogger("criservice.images")

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


@dataclass
class PullStats:
    """What one pull did, for metrics and logs."""
    reference: str
    bytes: int = 0
    layers_fetched: int = 0
    layers_reused: int = 0
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)


def _translate(exc: Exception) -> errors.CRIError:
    """Registry failures become the runtime's error kinds (the gRPC face maps those).

    A registry that stops sending (ProgressTimeout) is UNAVAILABLE like any other registry
    fault: DEADLINE_EXCEEDED would tell the kubelet that its own deadline passed."""
    message = str(exc)
    if isinstance(exc, registry.NotFoundError):
        return errors.NotFound(message)
    if isinstance(exc, registry.AuthError):
        return errors.PermissionDenied(message)
    if isinstance(exc, registry.UnsupportedManifest):
        return errors.FailedPrecondition(message)
    if isinstance(exc, UnpackError):
        return errors.FailedPrecondition(f"unpacking a layer failed: {message}")
    return errors.Unavailable(message)


class Puller:
    def __init__(self, store: ImageStore, client: registry.RegistryClient, *,
                 max_concurrent_downloads: int = 3, limits: UnpackLimits = UnpackLimits(),
                 on_done: Callable[[PullStats, BaseException | None], None] | None = None) -> None:
        self.store = store
        self.client = client
        self.limits = limits
        self.on_done = on_done
        self._slots = asyncio.Semaphore(max_concurrent_downloads)
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent_downloads, thread_name_prefix="unpack")
        self._pulls: dict[str, asyncio.Task[ImageRecord]] = {}
        self._layers: dict[str, asyncio.Task[LayerRecord]] = {}

    async def pull(self, ref: Reference, creds: registry.Credentials | None = None) -> ImageRecord:
        """Pull `ref`; a second caller for the same reference waits on the first pull.
        Cancelling a caller (deadline, client gone) does not cancel the shared pull."""
        key = str(ref)
        task = self._pulls.get(key)
        if task is None:
            task = asyncio.ensure_future(self._pull(ref, creds))
            self._pulls[key] = task
            task.add_done_callback(lambda _t: self._pulls.pop(key, None))
        return await asyncio.shield(task)

    async def close(self) -> None:
        for task in list(self._pulls.values()) + list(self._layers.values()):
            task.cancel()
        await asyncio.gather(*self._pulls.values(), *self._layers.values(), return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _pull(self, ref: Reference, creds: registry.Credentials | None) -> ImageRecord:
        stats = PullStats(str(ref))
        failure: BaseException | None = None
        try:
            return await self._pull_image(ref, creds, stats)
        except (registry.RegistryError, UnpackError) as e:
            failure = e
            raise _translate(e) from e
        except BaseException as e:
            failure = e
            raise
        finally:
            stats.seconds = time.monotonic() - stats.started
            if self.on_done is not None:
                self.on_done(stats, failure)
            log.info("pull finished" if failure is None else "pull failed", extra={"fields": {
                "image": stats.reference, "seconds": round(stats.seconds, 3), "bytes": stats.bytes,
                "layers_fetched": stats.layers_fetched, "layers_reused": stats.layers_reused,
                **({"error": str(failure)} if failure is not None else {})}})

    async def _pull_image(self, ref: Reference, creds: registry.Credentials | None,
                          stats: PullStats) -> ImageRecord:
        image = await self.client.resolve(ref, creds)
        known = self.store.get(image.config.digest)
        if known is not None:  # the same image under another (or the same) name: just name it
            await asyncio.to_thread(self.store.add_names, known.id, _names(ref, image))
            stats.layers_reused = len(known.layer_ids)
            record = self.store.get(known.id)
            assert record is not None
            return record
        config_bytes = await self.client.fetch_config(image, creds)
        diff_ids = _diff_ids(config_bytes, len(image.layers), str(ref))
        chains = chain_ids(diff_ids)
        self.store.hold(chains)  # no gc of these layers until the image is recorded
        try:
            # The first layer failure says it; the rest are cancelled.
            layers = await together(*(self._layer(image, desc, diff_id, chain, creds, stats)
                                      for desc, diff_id, chain in zip(image.layers, diff_ids, chains)))
            layer_ids = [layer.id for layer in layers]
            size = image.config.size + sum(d.size for d in image.layers)
            await asyncio.to_thread(
                self.store.commit_image, image_id=image.config.digest, config=config_bytes,
                config_media_type=image.config.media_type, manifest=image.manifest,
                manifest_digest=image.manifest_digest, manifest_media_type=_media_type(image.manifest),
                size=size, layer_ids=layer_ids, names=_names(ref, image))
            crash_point("image.pull.committed")
        finally:
            self.store.release(chains)
        record = self.store.get(image.config.digest)
        assert record is not None
        return record

    async def _layer(self, image: registry.ResolvedImage, desc: registry.Descriptor, diff_id: str,
                     chain_id: str, creds: registry.Credentials | None, stats: PullStats) -> LayerRecord:
        existing = self.store.layer_by_chain(chain_id)
        if existing is not None:
            stats.layers_reused += 1
            return existing
        task = self._layers.get(chain_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch_layer(image, desc, diff_id, chain_id, creds, stats))
            self._layers[chain_id] = task
            task.add_done_callback(lambda _t: self._layers.pop(chain_id, None))
        return await asyncio.shield(task)

    async def _fetch_layer(self, image: registry.ResolvedImage, desc: registry.Descriptor, diff_id: str,
                           chain_id: str, creds: registry.Credentials | None,
                           stats: PullStats) -> LayerRecord:
        async with self._slots:
            staging = await asyncio.to_thread(self.store.staging_dir)
            try:
                result = await self._stream_unpack(image, desc, staging, creds, stats)
                if result.diff_id != diff_id:
                    raise registry.DigestMismatch(
                        f"layer {desc.digest} of {image.reference}: uncompressed content has digest "
                        f"{result.diff_id}, the image config says {diff_id}")
                layer = await asyncio.to_thread(self.store.commit_layer, staging, chain_id, diff_id, result.size)
                crash_point("image.pull.layer")
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, staging, True)
                raise
            stats.layers_fetched += 1
            return layer

    async def _stream_unpack(self, image: registry.ResolvedImage, desc: registry.Descriptor, staging: str,
                             creds: registry.Credentials | None, stats: PullStats) -> UnpackResult:
        loop = asyncio.get_running_loop()
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(wfd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only costs more wake-ups
        reader = open(rfd, "rb", buffering=PIPE_SIZE)
        writer_file = open(wfd, "wb", buffering=0)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, writer_file)
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        unpacking: asyncio.Future[UnpackResult] | None = None
        failure: BaseException | None = None
        try:
            async with self.client.blob_stream(image, desc, creds) as chunks:
                async for chunk in chunks:
                    if unpacking is None:
                        compression = detect_compression(desc.media_type, chunk[:16])
                        unpacking = loop.run_in_executor(self._executor, _unpack, reader, staging,
                                                         compression, self.limits)
                    if unpacking.done():
                        break  # the unpacker stopped early; its error is raised below
                    writer.write(chunk)
                    stats.bytes += len(chunk)
                    await writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the unpacker closed its end: its own exception says why
        except BaseException as e:
            failure = e
        finally:
            writer.close()  # EOF for the unpacker
            if unpacking is None:
                reader.close()
        if unpacking is None:
            if failure is not None:
                raise failure
            raise registry.RegistryError(f"layer {desc.digest} of {image.reference}: empty blob")
        try:
            result = await asyncio.shield(unpacking)
        except BaseException:
            if failure is not None:
                raise failure from None
            raise
        if failure is not None:
            raise failure
        return result


def _unpack(reader: BinaryIO, dest: str, compression: str, limits: UnpackLimits) -> UnpackResult:
    with reader:
        return unpack_layer(reader, dest, compression, limits)


def _diff_ids(config_bytes: bytes, layer_count: int, ref: str) -> list[str]:
    try:
        config: dict[str, Any] = json.loads(config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise registry.UnsupportedManifest(f"{ref}: the image config has no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or len(diff_ids) != layer_count:
        raise registry.UnsupportedManifest(
            f"{ref}: the manifest lists {layer_count} layers but the config {len(diff_ids)} diff_ids")
    return [str(d) for d in diff_ids]


def _names(ref: Reference, image: registry.ResolvedImage) -> list[tuple[str, str]]:
    """A pull by tag names the image by that tag and by the digest the tag points to;
    a pull by digest only by that digest (as the kubelet and containerd see it)."""
    if ref.digest:
        return [(ref.with_digest(ref.digest), "digest")]
    top = image.index_digest or image.manifest_digest
    assert ref.repo_tag is not None
    return [(ref.repo_tag, "tag"), (ref.with_digest(top), "digest")]


def _media_type(manifest: bytes) -> str:
    try:
        return str(json.loads(manifest).get("mediaType") or "application/vnd.oci.image.manifest.v1+json")
    except ValueError:
        return "application/octet-stream"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
