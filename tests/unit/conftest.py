"""Fixtures of the unit tests: the daemon served in-process on a unix socket, with stand-in
runtime binaries (no root needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from criservice import config as cfg
from criservice.server import Daemon
from tests.conftest import write_config


def _tool(d: Path, name: str) -> str:
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text(f'#!/bin/sh\necho "{name} version 9.9"\n')
    p.chmod(0o755)
    return str(p)


@pytest.fixture
async def daemon(short_tmp: Path) -> AsyncIterator[Daemon]:
    bins = short_tmp / "bin"
    extra = f"""
[runtime]
conmon = "{_tool(bins, 'conmon')}"
[runtime.handlers.runc]
path = "{_tool(bins, 'runc')}"
[runtime.handlers.crun]
path = "{bins}/crun-missing"
"""
    d = Daemon(cfg.load(write_config(short_tmp, extra)))
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def channel(daemon: Daemon) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel("unix:" + daemon.config.api.socket) as ch:
        yield ch
