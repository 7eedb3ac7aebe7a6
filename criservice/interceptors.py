"""One place where every request is logged, measured, and its errors mapped to gRPC codes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from criservice.metrics import Metrics
from runtime import errors

log = logging.getLogger("criservice.grpc")

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
            return STATUS_OF[cls]  # type: ignore[index]
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
            message = str(exc)
            log.info("request failed", extra={"fields": {
                "method": self.method, "code": self.code.name, "error": message}})
        else:
            self.code = grpc.StatusCode.INTERNAL
            message = f"{self.method}: internal error: {type(exc).__name__}: {exc}"
            log.error("request crashed", exc_info=exc, extra={"fields": {"method": self.method}})
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
        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                call = _Call(method, metrics)
                try:
                    return await inner_unary(request, context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped, logged and re-raised as a status
                    await call.fail(exc, context)
                finally:
                    call.done(context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                call = _Call(method, metrics)
                try:
                    async for response in inner_stream(request, context):
                        yield response
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001
                    await call.fail(exc, context)
                finally:
                    call.done(context)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer)
        return handler  # the CRI has no client-streaming calls
