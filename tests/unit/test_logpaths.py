"""Container log paths stay inside their pod's log directory and never follow a symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime import errors, logpaths


def test_an_absolute_log_path_is_taken_under_the_directory() -> None:
    assert logpaths.join("/var/log/pods/p", "/etc/shadow") == "/var/log/pods/p/etc/shadow"
    assert logpaths.join("/var/log/pods/p", "web/0.log") == "/var/log/pods/p/web/0.log"
    assert logpaths.join("/var/log/pods/p", "web/../1.log") == "/var/log/pods/p/1.log"


@pytest.mark.parametrize("path", ["..", "../x.log", "web/../../x.log", "/", "", ".", "./", "x" * 256 + "/0.log"])
def test_paths_that_leave_or_name_no_file_are_refused(path: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="config.log_path"):
        logpaths.join("/var/log/pods/p", path)


def test_prepare_makes_the_directories_and_the_file(tmp_path: Path) -> None:
    logdir = tmp_path / "pod"
    path = logpaths.join(str(logdir), "web/0.log")
    logpaths.prepare(str(logdir), path)
    assert Path(path).is_file() and Path(path).stat().st_size == 0
    assert Path(path).stat().st_mode & 0o777 == 0o600   # as conmon makes it: logs can hold secrets
    Path(path).write_text("kept\n")
    logpaths.prepare(str(logdir), path)   # an existing file is kept as it is (a restart appends)
    assert Path(path).read_text() == "kept\n"


def test_a_symlink_at_the_file_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    logdir = tmp_path / "pod"
    (logdir / "web").mkdir(parents=True)
    (logdir / "web" / "0.log").symlink_to(victim)
    with pytest.raises(errors.FailedPrecondition, match="symlink"):
        logpaths.prepare(str(logdir), logpaths.join(str(logdir), "web/0.log"))
    assert victim.read_text() == "untouched\n"


def test_a_symlinked_directory_on_the_way_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    logdir = tmp_path / "pod"
    logdir.mkdir()
    (logdir / "web").symlink_to(elsewhere)
    with pytest.raises(errors.FailedPrecondition, match="symlink"):
        logpaths.prepare(str(logdir), logpaths.join(str(logdir), "web/0.log"))
    assert os.listdir(elsewhere) == []


def test_a_fifo_or_directory_at_the_file_is_refused(tmp_path: Path) -> None:
    logdir = tmp_path / "pod"
    logdir.mkdir()
    os.mkfifo(logdir / "fifo.log")
    (logdir / "dir.log").mkdir()
    for name in ("fifo.log", "dir.log"):
        with pytest.raises(errors.FailedPrecondition):
            logpaths.prepare(str(logdir), logpaths.join(str(logdir), name))


def test_the_log_directory_itself_may_be_a_symlink(tmp_path: Path) -> None:
    """/var/log/pods on another disk is common: the kubelet's directory is trusted."""
    real = tmp_path / "disk"
    real.mkdir()
    (tmp_path / "pods").symlink_to(real)
    logdir = str(tmp_path / "pods")
    logpaths.prepare(logdir, logpaths.join(logdir, "0.log"))
    assert (real / "0.log").is_file()
