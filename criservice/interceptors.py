"""One place where every request is logged, measured, and its errors mapped to gRPC codes."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError, Message

from criservice import validation
from criservice.prometheus import Metrics
from runtime import errors

log = logging.getLogger("criservice.grpc")

# A status message travels in an HTTP/2 trailer; clients refuse trailers over 8 KiB
# (RESOURCE_EXHAUSTED instead of the real code), and percent-encoding can triple a message.
MAX_STATUS_MESSAGE = 1024

STATUS_OF: dict[type[errors.CRIError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_of(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL if isinstance(exc, errors.CRIError) else grpc.StatusCode.UNKNOWN


class _Call:
    """Bookkeeping of one request: outcome, duration, log line."""

    def __init__(self, method: str, metrics: Metrics) -> None:
        self.method = method.rsplit("/", 1)[-1]
        self.full = method
        self.metrics = metrics
        self.start = time.perf_counter()
        self.code = grpc.StatusCode.OK

    async def fail(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        if isinstance(exc, errors.CRIError):
            self.code = status_of(exc)
            message = capped(str(exc))
            log.info("request failed", extra={"fields": {
                "method": self.method, "code": self.code.name, "error": message}})
        else:
            # A bug: the client gets no Python (class names, tracebacks, values from
            # deep inside), only an id to find the traceback in the log by.
            self.code = grpc.StatusCode.INTERNAL
            error_id = secrets.token_hex(6)
            message = f"{self.method}: internal error (error id {error_id}); the daemon's log has the details"
            log.error("request crashed", exc_info=exc,
                      extra={"fields": {"method": self.method, "error_id": error_id}})
        await context.abort(self.code, message)

    def done(self, context: grpc.aio.ServicerContext) -> None:
        if self.code is grpc.StatusCode.OK:
            code = context.code()  # set when a handler aborted on its own
            if isinstance(code, grpc.StatusCode):
                self.code = code
        seconds = time.perf_counter() - self.start
        self.metrics.observe(self.method, self.code.name, seconds)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request", extra={"fields": {
                "method": self.method, "code": self.code.name, "ms": round(seconds * 1000, 3)}})


def capped(message: str, limit: int = MAX_STATUS_MESSAGE) -> str:
    """`message` cut to at most `limit` bytes of UTF-8, with its length said."""
    data = message.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return message
    suffix = f"... ({len(data)} bytes)"
    # errors="ignore" drops a character the cut went through.
    return data[:limit - len(suffix)].decode("utf-8", "ignore") + suffix


class _Received:
    """A request as the deserializer hands it to the handler: decoded, or why not."""

    __slots__ = ("request", "may_hold_nul", "undecodable")

    def __init__(self, request: Any, may_hold_nul: bool, undecodable: str = "") -> None:
        self.request = request
        self.may_hold_nul = may_hold_nul   # only if its bytes have a zero byte can a string hold a NUL
        self.undecodable = undecodable     # the request type it could not be decoded as

    def checked(self) -> Any:
        """The request, or InvalidArgument naming what is wrong with it."""
        if self.undecodable:
            raise errors.InvalidArgument(f"the request could not be decoded as {self.undecodable}")
        if self.may_hold_nul and isinstance(self.request, Message):
            path = validation.nul_field(self.request)
            if path is not None:
                raise errors.InvalidArgument(f"{path}: contains a NUL byte")
        return self.request


def _deserializer(method: str, inner: Callable[[bytes], Any] | None) -> Callable[[bytes], _Received]:
    """Decode errors raised here would reach the client as UNKNOWN with a Python class
    name (gRPC's own text): hand them to the handler wrapper instead."""
    type_name = _request_type(method)

    def deserialize(data: bytes) -> _Received:
        if inner is None:
            return _Received(data, False)
        try:
            return _Received(inner(data), b"\0" in data)
        except DecodeError:
            return _Received(None, False, type_name)

    return deserialize


def _request_type(method: str) -> str:
    """"runtime.v1.ExecSyncRequest" for "/runtime.v1.RuntimeService/ExecSync"."""
    try:
        return descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", ".")).input_type.full_name
    except KeyError:
        return f"the request of {method}"


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # gRPC asks on every call; a method's handler never changes, so wrap it once.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None:
                return handler
            wrapped = self._wrapped[details.method] = self._wrap(details.method, handler)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        metrics = self.metrics
        deserialize = _deserializer(method, handler.request_deserializer)
        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(received: _Received, context: grpc.aio.ServicerContext) -> Any:
                call = _Call(method, metrics)
                try:
                    return await inner_unary(received.checked(), context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped, logged and re-raised as a status
                    await call.fail(exc, context)
                finally:
                    call.done(context)

            return grpc.unary_unary_rpc_method_handler(unary, deserialize, handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(received: _Received, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                call = _Call(method, metrics)
                try:
                    async for response in inner_stream(received.checked(), context):
                        yield response
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001
                    await call.fail(exc, context)
                finally:
                    call.done(context)

            return grpc.unary_stream_rpc_method_handler(stream, deserialize, handler.response_serializer)
        return handler  # the CRI has no client-streaming calls
