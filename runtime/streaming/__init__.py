"""Exec, attach and port-forward for CRI clients: a streaming HTTP server speaking SPDY/3.1
and WebSocket, as the kubelet's does.

The CRI calls only hand out a URL with a single-use token (`StreamingServer.url`); the
client then upgrades a request to that URL and the session runs here.
"""

from runtime.streaming.attach import AttachSession
from runtime.streaming.exec import ExecSession
from runtime.streaming.portforward import dialer
from runtime.streaming.server import StreamingServer
from runtime.streaming.session import PortForwardRequest, RemoteCommandRequest

__all__ = ["AttachSession", "ExecSession", "PortForwardRequest", "RemoteCommandRequest", "StreamingServer",
           "dialer"]
