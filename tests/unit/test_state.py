import sqlite3
from pathlib import Path

import pytest

from runtime import state


def test_new_database_is_migrated_and_settings_persist(tmp_path: Path) -> None:
    db = state.StateDB(tmp_path / "state.db")
    assert db.schema_version == state.SCHEMA_VERSION
    settings = state.SettingsStore(db)
    assert settings.pod_cidr == ""
    settings.pod_cidr = "10.244.0.0/24"
    db.close()
    db = state.StateDB(tmp_path / "state.db")
    assert state.SettingsStore(db).pod_cidr == "10.244.0.0/24"
    assert (tmp_path / "state.db").stat().st_mode & 0o777 == 0o600
    db.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute(f"PRAGMA user_version = {state.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(state.StateError, match="newer than this criservice"):
        state.StateDB(tmp_path / "state.db")


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    db = state.StateDB(tmp_path / "state.db")
    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            conn.execute("INSERT INTO settings VALUES ('a', '1')")
            raise RuntimeError("crash in the middle")
    assert state.SettingsStore(db).get("a") is None
    db.close()


def test_wal_mode(tmp_path: Path) -> None:
    db = state.StateDB(tmp_path / "state.db")
    assert db.query("PRAGMA journal_mode")[0][0] == "wal"
    db.close()
