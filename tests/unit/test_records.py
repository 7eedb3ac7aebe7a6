import dataclasses
from pathlib import Path

import pytest

from runtime import errors
from runtime.records import (CONTAINER_CREATED, CONTAINER_EXITED, CONTAINER_RUNNING, SANDBOX_NOTREADY,
                             SANDBOX_READY, ContainerRecord, ContainerStore, SandboxRecord, SandboxStore)
from runtime.state import StateDB


def _sandbox(ident: str, name: str = "web", attempt: int = 0) -> SandboxRecord:
    return SandboxRecord(ident, name, "default", "uid-1", attempt, SANDBOX_READY, 1, "runc", b"cfg",
                         {"app": "web"}, {"a": "b"}, netns="/run/netns/x")


def _container(ident: str, sandbox: str, name: str = "c", attempt: int = 0) -> ContainerRecord:
    return ContainerRecord(ident, sandbox, name, attempt, CONTAINER_CREATED, 2, "sha256:i", "busybox", b"cc")


def test_records_persist_and_reload(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.db")
    sandboxes, containers = SandboxStore(db), ContainerStore(db)
    sandboxes.add(_sandbox("aaaa1111"))
    containers.add(_container("cccc2222", "aaaa1111"))
    containers.transition("cccc2222", CONTAINER_RUNNING, started_at=5)
    sandboxes.update("aaaa1111", lambda r: dataclasses.replace(r, ips=("10.88.0.2",)))
    db.close()
    db = StateDB(tmp_path / "s.db")
    sb = SandboxStore(db).get("aaaa")
    assert sb.labels == {"app": "web"} and sb.ips == ("10.88.0.2",)
    c = ContainerStore(db).get("cccc2222")
    assert (c.state, c.started_at) == (CONTAINER_RUNNING, 5)


def test_names_are_unique_per_attempt(tmp_path: Path) -> None:
    sandboxes = SandboxStore(StateDB(tmp_path / "s.db"))
    sandboxes.add(_sandbox("a1"))
    with pytest.raises(errors.AlreadyExists, match="default/web"):
        sandboxes.add(_sandbox("a2"))
    sandboxes.add(_sandbox("a3", attempt=1))
    assert {s.id for s in sandboxes.list()} == {"a1", "a3"}


def test_lookup_errors(tmp_path: Path) -> None:
    sandboxes = SandboxStore(StateDB(tmp_path / "s.db"))
    sandboxes.add(_sandbox("ab1", name="x"))
    sandboxes.add(_sandbox("ab2", name="y"))
    with pytest.raises(errors.NotFound, match="'zz' not found"):
        sandboxes.get("zz")
    with pytest.raises(errors.InvalidArgument, match="ambiguous"):
        sandboxes.get("ab")
    with pytest.raises(errors.InvalidArgument, match="empty"):
        sandboxes.get("")
    assert sandboxes.update("ab1", lambda r: dataclasses.replace(r, state=SANDBOX_NOTREADY)).state == SANDBOX_NOTREADY


def test_container_transitions_are_checked(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.db")
    SandboxStore(db).add(_sandbox("s"))
    containers = ContainerStore(db)
    containers.add(_container("c", "s"))
    containers.transition("c", CONTAINER_EXITED, exit_code=3)
    with pytest.raises(errors.FailedPrecondition, match="is exited; it cannot become running"):
        containers.transition("c", CONTAINER_RUNNING)
    assert [c.id for c in containers.in_sandbox("s")] == ["c"]
    containers.delete("c")
    assert containers.find("c") is None
