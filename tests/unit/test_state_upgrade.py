"""A state database written before typed records (format 1, an untyped bag of keys
in `details`) upgrades in place when the daemon starts, and then answers what it
answered before. tests/data/state-format1.json was recorded from a real daemon of
that version by tests/data/make_state_format1.py."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf import json_format

from api import api_pb2 as pb
from criservice.containers import container_status
from criservice.convert import LegacyRecords
from criservice.sandboxes import sandbox_status
from runtime.records import FORMAT, ContainerStore, SandboxStore
from runtime.state import MIGRATIONS, StateDB, StateError

FIXTURE = json.loads((Path(__file__).parents[1] / "data" / "state-format1.json").read_text())


def _old_database(path: Path) -> Path:
    """The database as that version left it: its schema, its rows, its user_version."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:FIXTURE["user_version"]]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {FIXTURE['user_version']}")
    for table in ("sandboxes", "containers"):
        for row in FIXTURE[table]:
            row = {**row, "config": base64.b64decode(row["config"])}
            conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row)
    conn.commit()
    conn.close()
    return path


def _formats(db: StateDB) -> set[int]:
    return {r[0] for t in ("sandboxes", "containers") for r in db.query(f"SELECT format FROM {t}")}


def test_the_upgrade_rewrites_every_row_once_and_in_place(tmp_path: Path) -> None:
    path = _old_database(tmp_path / "state.db")
    db = StateDB(path)
    assert db.schema_version == len(MIGRATIONS) and _formats(db) == {1}
    sandboxes, containers = SandboxStore(db, LegacyRecords()), ContainerStore(db, LegacyRecords())
    assert _formats(db) == {FORMAT}
    assert {s.id for s in sandboxes.list()} == {r["id"] for r in FIXTURE["sandboxes"]}
    assert {c.id for c in containers.list()} == {r["id"] for r in FIXTURE["containers"]}
    db.close()
    # Read again by a store that could not upgrade anything: nothing is left to upgrade.
    again = StateDB(path)
    assert SandboxStore(again).list() == sandboxes.list() and ContainerStore(again).list() == containers.list()


def test_a_format_1_row_needs_the_reader_and_a_newer_format_is_refused(tmp_path: Path) -> None:
    db = StateDB(_old_database(tmp_path / "state.db"))
    with pytest.raises(StateError, match="format 1"):
        SandboxStore(db)
    with db.transaction() as conn:
        conn.execute("UPDATE containers SET format = ?", (FORMAT + 1,))
    with pytest.raises(StateError, match=f"format {FORMAT + 1}, newer"):
        ContainerStore(db, LegacyRecords())


def _answer(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message)
    out.pop("timestamp", None)
    info = out.pop("info", {})
    return {**out, "info": json.loads(info["info"]) if info else {}}


@pytest.fixture
def upgraded(tmp_path: Path) -> tuple[SandboxStore, ContainerStore]:
    db = StateDB(_old_database(tmp_path / "state.db"))
    return SandboxStore(db, LegacyRecords()), ContainerStore(db, LegacyRecords())


def test_pod_sandbox_status_answers_what_it_answered(upgraded: tuple[SandboxStore, ContainerStore]) -> None:
    sandboxes, _ = upgraded
    for sandbox_id, recorded in FIXTURE["pod_status"].items():
        before, after = _answer(json_format.ParseDict(recorded, pb.PodSandboxStatusResponse())), \
            _answer(sandbox_status(sandboxes.get(sandbox_id), verbose=True))
        assert after["status"] == before["status"]
        old, new = before["info"], after["info"]
        assert {k: new[k] for k in ("id", "state", "runtimeHandler", "phasesMs")} == \
            {k: old[k] for k in ("id", "state", "runtimeHandler", "phasesMs")}
        # What the host holds of the pod is where the record said it was. The old bag left
        # keys out or null where the typed record has its empty value.
        for key in ("netns", "ipc_ns", "uts_ns", "shm", "pid_ns", "pod_dir", "infra_id", "infra_pid",
                    "infra_cgroups_path", "hostname", "cni_added", "torn_down", "building", "ips"):
            value, was = new["details"][key], old["details"].get(key)
            assert value == was or not (value or was), (key, value, was)
        assert new["details"]["cni_network"] == old["details"].get("network", "")
        assert new["details"]["pod"]["log_directory"] == old["details"]["log_directory"]


def test_a_shared_pid_pod_keeps_its_infra_and_its_settings(upgraded: tuple[SandboxStore, ContainerStore]) -> None:
    sandboxes, _ = upgraded
    web = next(s for s in sandboxes.list() if s.name == "web")
    assert web.infra_id == "infra-" + web.id and web.pid_ns == f"/proc/{web.infra_pid}/ns/pid"
    assert web.pod.shared_pid and not web.pod.host_network and web.ips and web.cni_added
    assert web.pod.sysctls == {"net.ipv4.ip_forward": "1"}
    assert [(p.protocol, p.container_port) for p in web.pod.port_mappings] == [("tcp", 80), ("udp", 53)]
    # From the stored CRI config: what the bag never held.
    assert web.pod.dns_servers == ("10.96.0.10",) and web.pod.security.supplemental_groups == (1000,)
    assert web.pod.security.seccomp is not None and web.pod.security.seccomp.type == "runtime_default"
    assert web.pod.namespaces is not None and web.pod.namespaces.pid == "pod"
    assert web.overhead is not None and web.overhead.cpu_shares == 10
    assert web.resources is not None and web.resources.cpu_quota == 150000
    host = next(s for s in sandboxes.list() if s.name == "host")
    assert host.pod.host_network and not host.netns and not host.infra_id


def test_container_status_answers_what_it_answered(upgraded: tuple[SandboxStore, ContainerStore]) -> None:
    _, containers = upgraded
    image = FIXTURE["image"]
    images = SimpleNamespace(get=lambda image_id: SimpleNamespace(
        repo_tags=image.get("repoTags", []), repo_digests=image.get("repoDigests", []))
        if image_id == image["id"] else None)
    for container_id, recorded in FIXTURE["container_status"].items():
        before = _answer(json_format.ParseDict(recorded, pb.ContainerStatusResponse()))
        after = _answer(container_status(images, containers.get(container_id), verbose=True))  # type: ignore[arg-type]
        assert after == before, container_id
    app = next(c for c in containers.list() if c.name == "app")
    assert app.resources is not None and app.resources.cpu_quota == 50000 and app.resources.hugepage_limits == (("2MB", 0),)
    assert [v.image_id for v in app.image_volumes.values()] == [image["id"]] and app.stop_signal == "SIGINT"
