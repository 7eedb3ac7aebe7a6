"""A pull from a registry that stalls in the middle of a layer, against a fake registry on
loopback (no root): the caller gets the registry's fault (UNAVAILABLE), not a deadline of its
own, and the message says how many bytes really arrived before the stall."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest

from runtime import errors
from runtime.images import reference
from runtime.images.puller import Puller
from runtime.images.registry import Platform, RegistryClient
from runtime.images.store import ImageStore
from runtime.state import StateDB
from tests.registry_helpers import OCI_MANIFEST, BuiltImage, build_image, layer_tar

PROGRESS_TIMEOUT = 0.5


class StallingRegistry:
    """Serves one image at /v2/fake/img; the blob `stalled` sends half its bytes, then nothing
    until the registry is closed. Each response closes its connection, so every request is
    a connection of its own."""

    def __init__(self, image: BuiltImage, stalled: str) -> None:
        self.image, self.stalled = image, stalled
        self.port = 0
        self._release = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        http = h11.Connection(h11.SERVER)
        try:
            target = await _request_target(http, reader)
            status, body, content_type = self._answer(target)
            cut = len(body) // 2 if target.endswith(f"/blobs/{self.stalled}") else len(body)
            writer.write(http.send(h11.Response(status_code=status, headers=[
                ("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")])))
            writer.write(http.send(h11.Data(data=body[:cut])))
            await writer.drain()
            if cut < len(body):
                await self._release.wait()
        except (h11.RemoteProtocolError, ConnectionError):
            pass   # the client's https attempt (a TLS hello is no HTTP), or the client gave up
        finally:
            writer.close()

    def _answer(self, target: str) -> tuple[int, bytes, str]:
        prefix = "/v2/fake/img/"
        if target == prefix + "manifests/v1":
            return 200, self.image.manifest, OCI_MANIFEST
        blob = self.image.blobs.get(target.removeprefix(prefix + "blobs/"))
        if target.startswith(prefix + "blobs/") and blob is not None:
            return 200, blob, "application/octet-stream"
        return 404, b"", "text/plain"


async def _request_target(http: h11.Connection, reader: asyncio.StreamReader) -> str:
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the client closed before its request")
            http.receive_data(data)
        elif isinstance(event, h11.Request):
            return event.target.decode()


@pytest.fixture
async def puller(tmp_path: Path) -> AsyncIterator[Puller]:
    client = RegistryClient({}, progress_timeout=PROGRESS_TIMEOUT, platform=Platform("linux", "amd64"))
    p = Puller(ImageStore(str(tmp_path / "images"), StateDB(tmp_path / "state.db")), client)
    try:
        yield p
    finally:
        await p.close()
        await client.aclose()


async def test_a_stalled_layer_is_the_registrys_fault_with_the_bytes_received(puller: Puller) -> None:
    # Less than one read chunk of the client arrives before the stall: the count must still be true.
    layer = layer_tar({"data.bin": os.urandom(600_000)})
    image = build_image([layer_tar({"hello.txt": b"hello\n"}), layer])
    registry = StallingRegistry(image, stalled=image.layer_digests[1])
    await registry.start()
    try:
        with pytest.raises(errors.Unavailable) as info:
            await puller.pull(reference.parse(f"{registry.host}/fake/img:v1"))
    finally:
        await registry.close()
    message = str(info.value)
    assert f"registry {registry.host}: blob {image.layer_digests[1]}" in message
    assert f"no data for {PROGRESS_TIMEOUT:g}s after {len(layer) // 2} of {len(layer)} bytes" in message
    assert puller.store.list() == []
