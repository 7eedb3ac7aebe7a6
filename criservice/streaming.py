"""Streaming RPCs: Exec, Attach, PortForward. Each answers with a URL of the streaming
server (runtime/streaming), where the client's session then runs."""

from __future__ import annotations

import grpc

from api import api_pb2 as pb
from criservice.deps import Area
from runtime import errors
from runtime.records import SANDBOX_READY
from runtime.streaming import (AttachSession, ExecSession, PortForwardRequest, RemoteCommandRequest,
                               StreamingServer, dialer)


def _check_streams(kind: str, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    if tty and stderr:
        raise errors.InvalidArgument(f"{kind}: tty and stderr cannot both be true")
    if not (stdin or stdout or stderr):
        raise errors.InvalidArgument(f"{kind}: one of stdin, stdout or stderr must be set")


class Streaming(Area):
    def _server(self) -> StreamingServer:
        if self.deps.streaming is None:
            raise errors.Unavailable("the streaming server is not running")
        return self.deps.streaming

    async def Exec(self, request: pb.ExecRequest, context: grpc.aio.ServicerContext) -> pb.ExecResponse:
        if not request.container_id:
            raise errors.InvalidArgument("container_id is empty")
        if not request.cmd:
            raise errors.InvalidArgument("cmd is empty")
        _check_streams("exec", request.stdin, request.stdout, request.stderr, request.tty)
        record = self.deps.containers.running(request.container_id)
        runtime = self.deps.containers.runtime_for(record.handler)
        run = ExecSession(runtime, record.id, list(request.cmd), tty=request.tty)   # type: ignore[arg-type]
        url = self._server().url(RemoteCommandRequest("exec", run, request.stdin, request.stdout,
                                                      request.stderr, request.tty))
        return pb.ExecResponse(url=url)

    async def Attach(self, request: pb.AttachRequest, context: grpc.aio.ServicerContext) -> pb.AttachResponse:
        if not request.container_id:
            raise errors.InvalidArgument("container_id is empty")
        _check_streams("attach", request.stdin, request.stdout, request.stderr, request.tty)
        record = self.deps.containers.running(request.container_id)
        runtime = self.deps.containers.runtime_for(record.handler)
        config = pb.ContainerConfig.FromString(record.config)
        run = AttachSession(runtime, record.id, tty=config.tty,
                            stdin_once=config.stdin_once)
        url = self._server().url(RemoteCommandRequest("attach", run, request.stdin, request.stdout,
                                                      request.stderr, request.tty))
        return pb.AttachResponse(url=url)

    async def PortForward(self, request: pb.PortForwardRequest,
                          context: grpc.aio.ServicerContext) -> pb.PortForwardResponse:
        if not request.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is empty")
        sandbox = self.deps.pod_records.get(request.pod_sandbox_id)
        if sandbox.state != SANDBOX_READY:
            raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        for port in request.port:
            if not 0 < port < 65536:
                raise errors.InvalidArgument(f"port {port} is out of range")
        netns = None if sandbox.pod.host_network else (sandbox.netns or None)
        if netns is None and not sandbox.pod.host_network:
            raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} has no network namespace")
        url = self._server().url(PortForwardRequest(dialer(netns), tuple(request.port)))
        return pb.PortForwardResponse(url=url)
