"""criservice/sdnotify.py: the sd_notify(3) datagram, without systemd."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from criservice.sdnotify import Notifier


def test_a_path_is_taken_out_of_the_environment_and_messages_arrive_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        env = {"NOTIFY_SOCKET": str(path), "PATH": "/bin"}
        n = Notifier.from_environment(env)
        assert env == {"PATH": "/bin"}
        assert n.send("READY=1", "STATUS=serving", "MAINPID=42")
        assert s.recv(4096) == b"READY=1\nSTATUS=serving\nMAINPID=42"


def test_an_abstract_name_is_a_socket_in_the_abstract_namespace() -> None:
    name = f"criservice-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        n = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert n.address == "\0" + name
        assert n.send("STOPPING=1")
        assert s.recv(4096) == b"STOPPING=1"


def test_without_systemd_or_with_a_bad_value_nothing_is_sent(tmp_path: Path) -> None:
    assert Notifier.from_environment({}).send("READY=1") is False
    env = {"NOTIFY_SOCKET": "relative/notify.sock"}
    assert Notifier.from_environment(env).address is None and env == {}
    # A socket that went away: the daemon carries on.
    assert Notifier(str(tmp_path / "gone.sock")).send("READY=1") is False
