"""Input checks at the gRPC face: NUL bytes, undecodable messages, and what a client
and the log see of bad input and of crashes (precise codes, bounded text, no Python)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from api import api_pb2 as pb, api_pb2_grpc
from criservice import validation
from criservice.interceptors import MAX_STATUS_MESSAGE, ErrorMappingInterceptor
from criservice.prometheus import Metrics
from runtime import errors

# What must never reach a client: a traceback or the name of a Python exception class.
PYTHON_TEXT = re.compile(r"Traceback|\b[A-Z][A-Za-z]*(?:Error|Exception|ExceptionGroup)\b")


# ---- the walk ------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_msg,path", [
    (pb.ExecSyncRequest(container_id="c", cmd=["sh", "a\0b"]), "cmd[1]"),
    (pb.ExecSyncRequest(container_id="c\0"), "container_id"),
    (pb.CreateContainerRequest(config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="n\0"))),
     "config.metadata.name"),
    (pb.CreateContainerRequest(config=pb.ContainerConfig(
        envs=[pb.KeyValue(key="A", value=b"1"), pb.KeyValue(key="B", value=b"x\0y")])), "config.envs[1].value"),
    (pb.CreateContainerRequest(config=pb.ContainerConfig(labels={"k": "v\0"})), "config.labels['k']"),
    (pb.CreateContainerRequest(config=pb.ContainerConfig(labels={"k\0": "v"})), "config.labels['k\\x00']"),
    (pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(dns_config=pb.DNSConfig(searches=["a", "\0"]))),
     "config.dns_config.searches[1]"),
    (pb.CreateContainerRequest(config=pb.ContainerConfig(mounts=[
        pb.Mount(container_path="/a", host_path="/b"), pb.Mount(container_path="/c", host_path="/d\0")])),
     "config.mounts[1].host_path"),
    (pb.CreateContainerRequest(config=pb.ContainerConfig(linux=pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(
            seccomp=pb.SecurityProfile(localhost_ref="/p\0")))))
     , "config.linux.security_context.seccomp.localhost_ref"),
])
def test_nul_field_names_the_path(request_msg: object, path: str) -> None:
    assert validation.nul_field(request_msg) == path  # type: ignore[arg-type]


def test_clean_requests_pass() -> None:
    full = pb.CreateContainerRequest(
        pod_sandbox_id="p", config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="n", attempt=0), image=pb.ImageSpec(image="busybox"),
            command=["sh"], args=["-c", "true"], envs=[pb.KeyValue(key="A", value=b"1")],
            labels={"a": "b"}, mounts=[pb.Mount(container_path="/a", host_path="/b")]),
        sandbox_config=pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n")))
    assert validation.nul_field(full) is None
    assert validation.nul_field(pb.ListContainersRequest()) is None


def test_a_long_map_key_is_shortened_in_the_path() -> None:
    key = "k" * 10_000
    path = validation.nul_field(pb.CreateContainerRequest(config=pb.ContainerConfig(labels={key: "\0"})))
    assert path is not None and len(path) < 200 and "10000 bytes" in path


# ---- through a server ----------------------------------------------------------------------------


def _raise(exc: BaseException) -> grpc.GenericRpcHandler:
    """A RuntimeService whose Version and ListContainers raise `exc`."""
    async def unary(request: pb.VersionRequest, context: grpc.aio.ServicerContext) -> pb.VersionResponse:
        raise exc

    async def stream(request: pb.StreamContainersRequest,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamContainersResponse]:
        raise exc
        yield pb.StreamContainersResponse()  # pragma: no cover - makes this a generator

    return grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", {
        "Version": grpc.unary_unary_rpc_method_handler(
            unary, pb.VersionRequest.FromString, pb.VersionResponse.SerializeToString),
        "StreamContainers": grpc.unary_stream_rpc_method_handler(
            stream, pb.StreamContainersRequest.FromString, pb.StreamContainersResponse.SerializeToString),
    })


async def _serve(tmp: str, handler: grpc.GenericRpcHandler) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor(Metrics())])
    server.add_generic_rpc_handlers((handler,))
    address = f"unix:{tmp}/s.sock"
    server.add_insecure_port(address)
    await server.start()
    return server, address


async def _raw_call(ch: grpc.aio.Channel, method: str, request: bytes, *,
                    stream: bool = False) -> grpc.aio.AioRpcError:
    """The error of `method` called with `request` as it is on the wire."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        if stream:
            async for _ in ch.unary_stream(method)(request):
                pass
        else:
            await ch.unary_unary(method)(request)
    return e.value


async def _status(address: str, method: str, request: bytes, *, stream: bool = False) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as ch:
        return await _raw_call(ch, method, request, stream=stream)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_a_crash_answers_internal_with_an_error_id_and_no_python(
        short_tmp: Path, caplog: pytest.LogCaptureFixture, stream: bool) -> None:
    server, address = await _serve(str(short_tmp), _raise(KeyError("secret detail")))
    try:
        method = "StreamContainers" if stream else "Version"
        with caplog.at_level(logging.ERROR, logger="criservice.grpc"):
            err = await _status(address, f"/runtime.v1.RuntimeService/{method}", b"", stream=stream)
    finally:
        await server.stop(None)
    assert err.code() == grpc.StatusCode.INTERNAL
    details = err.details() or ""
    assert not PYTHON_TEXT.search(details) and "secret detail" not in details
    match = re.search(r"error id ([0-9a-f]+)", details)
    assert match and method in details, details
    crashed = [r for r in caplog.records if r.getMessage() == "request crashed"]
    assert crashed and crashed[0].fields["error_id"] == match.group(1)  # type: ignore[attr-defined]
    assert crashed[0].exc_info is not None  # the traceback goes to the log, not the client


async def test_a_long_status_message_is_capped(short_tmp: Path) -> None:
    server, address = await _serve(str(short_tmp), _raise(errors.NotFound("x" * 300_000)))
    try:
        err = await _status(address, "/runtime.v1.RuntimeService/Version", b"")
    finally:
        await server.stop(None)
    assert err.code() == grpc.StatusCode.NOT_FOUND  # not RESOURCE_EXHAUSTED
    details = err.details() or ""
    assert len(details.encode()) <= MAX_STATUS_MESSAGE and "300000 bytes" in details


async def test_a_capped_message_is_cut_at_a_character(short_tmp: Path) -> None:
    server, address = await _serve(str(short_tmp), _raise(errors.NotFound("é" * 3000)))
    try:
        err = await _status(address, "/runtime.v1.RuntimeService/Version", b"")
    finally:
        await server.stop(None)
    details = err.details() or ""
    assert details.startswith("éé") and len(details.encode()) <= MAX_STATUS_MESSAGE


@pytest.mark.parametrize("raw", [b"\x0a\x03\xff\xfe\xfd", b"\x0a\x10ab", b"\xff"],
                         ids=["invalid-utf8", "truncated", "bad-tag"])
async def test_undecodable_requests_are_invalid_argument(channel: grpc.aio.Channel, raw: bytes) -> None:
    for service, method, stream in (("RuntimeService", "ContainerStatus", False),
                                    ("RuntimeService", "StreamContainers", True),
                                    ("ImageService", "PullImage", False)):
        err = await _raw_call(channel, f"/runtime.v1.{service}/{method}", raw, stream=stream)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.details())
        assert err.details() == f"the request could not be decoded as runtime.v1.{method}Request"


async def test_a_nul_byte_is_invalid_argument_naming_the_field(channel: grpc.aio.Channel) -> None:
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await rt.ExecSync(pb.ExecSyncRequest(container_id="nope", cmd=["sh", "-c\0"]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "cmd[1]: contains a NUL byte"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in rt.StreamContainers(pb.StreamContainersRequest(
                filter=pb.ContainerFilter(label_selector={"a": "\0"}))):
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "filter.label_selector['a']: contains a NUL byte"


async def test_a_huge_id_is_not_found_with_a_short_message(channel: grpc.aio.Channel) -> None:
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await rt.ContainerStatus(pb.ContainerStatusRequest(container_id="f" * 300_000))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    details = e.value.details() or ""
    assert len(details) < 200 and "300000 bytes" in details, details
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id="f" * 300_000))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and len(e.value.details() or "") < 200


async def test_pull_of_a_port_out_of_range_names_the_field(channel: grpc.aio.Channel) -> None:
    images = api_pb2_grpc.ImageServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="127.0.0.1:99999/x")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = e.value.details() or ""
    assert details.startswith("image.image: ") and "99999" in details and not PYTHON_TEXT.search(details)


# ---- errors.shown ---------------------------------------------------------------------------------


def test_shown_keeps_short_values_and_shortens_long_ones() -> None:
    assert errors.shown("abc") == "'abc'"
    assert errors.shown("a" * 64) == repr("a" * 64)
    assert errors.shown("a" * 300_000) == repr("a" * 64) + "... (300000 bytes)"
    assert errors.shown("é" * 100, limit=4) == "'éééé'... (200 bytes)"
    assert errors.shown(b"\0" * 100, limit=2) == "b'\\x00\\x00'... (100 bytes)"


# ---- host paths the spec builder meets ----------------------------------------------------------


def test_a_host_path_that_cannot_be_made_is_invalid_argument(tmp_path: Path) -> None:
    from runtime.oci import spec
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(errors.InvalidArgument) as e:
        spec._host_source(str(afile / "sub"), "mount '/data'", create_missing=True, from_pod=False)
    assert str(e.value).startswith("mount '/data': host_path ") and "cannot be created" in str(e.value)
    assert not PYTHON_TEXT.search(str(e.value)) and "Errno" not in str(e.value)


def test_a_device_path_that_cannot_be_read_is_invalid_argument(tmp_path: Path) -> None:
    from runtime.oci import spec
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(errors.InvalidArgument) as e:
        spec._devices_at(str(afile / "dev"), "/dev/x")
    assert "Not a directory" in str(e.value) and "Errno" not in str(e.value)
