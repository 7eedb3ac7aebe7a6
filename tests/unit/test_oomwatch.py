"""The OOM watch on a plain file standing in for memory.events: inotify reports its
writes as the kernel's cgroup files report their changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runtime.oomwatch import OomWatch, oom_kills

EVENTS = "low 0\nhigh 0\nmax {max}\noom {oom}\noom_kill {kill}\noom_group_kill 0\n"


def test_oom_kills_reads_the_counter() -> None:
    assert oom_kills(EVENTS.format(max=3, oom=1, kill=2)) == 2
    assert oom_kills("low 0\n") == 0


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_a_kill_is_reported_once_and_other_events_are_not(tmp_path: Path) -> None:
    cgroup = tmp_path / "ctr"
    cgroup.mkdir()
    events = cgroup / "memory.events"
    events.write_text(EVENTS.format(max=0, oom=0, kill=0))
    seen: list[str] = []
    watch = OomWatch(seen.append)
    try:
        watch.watch("c1", str(cgroup))
        watch.watch("c1", str(cgroup))                # idempotent
        events.write_text(EVENTS.format(max=5, oom=0, kill=0))   # hitting the limit is no kill
        await _settle()
        assert seen == []
        events.write_text(EVENTS.format(max=6, oom=1, kill=1))
        await _settle()
        events.write_text(EVENTS.format(max=7, oom=2, kill=2))
        await _settle()
        assert seen == ["c1"]
    finally:
        watch.close()


async def test_a_kill_before_the_watch_counts_and_a_missing_cgroup_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "memory.events").write_text(EVENTS.format(max=1, oom=1, kill=1))
    seen: list[str] = []
    watch = OomWatch(seen.append)
    try:
        watch.watch("gone", str(tmp_path / "gone"))
        watch.watch("early", str(tmp_path / "early"))
        assert seen == ["early"]
    finally:
        watch.close()


async def test_a_cgroup_gone_before_its_read_is_told_by_its_parent(tmp_path: Path) -> None:
    """systemd removes a killed container's scope at once: the parent's counters, which
    include their children's, say whether the kill was an OOM kill."""
    parent = tmp_path / "pod.slice"
    child = parent / "cri-x.scope"
    child.mkdir(parents=True)
    (parent / "memory.events").write_text(EVENTS.format(max=0, oom=0, kill=2))   # earlier kills
    (child / "memory.events").write_text(EVENTS.format(max=0, oom=0, kill=0))
    seen: list[str] = []
    watch = OomWatch(seen.append)
    try:
        watch.watch("x", str(child))
        assert not watch.killed_in_parent("x")
        (parent / "memory.events").write_text(EVENTS.format(max=1, oom=1, kill=3))
        (child / "memory.events").write_text(EVENTS.format(max=1, oom=1, kill=1))
        (child / "memory.events").unlink()           # before the event loop reads it
        await _settle()
        assert seen == ["x"]
    finally:
        watch.close()


async def test_without_a_kill_in_the_parent_a_vanished_cgroup_is_no_oom(tmp_path: Path) -> None:
    parent = tmp_path / "pod.slice"
    child = parent / "cri-y.scope"
    child.mkdir(parents=True)
    (parent / "memory.events").write_text(EVENTS.format(max=0, oom=0, kill=0))
    (child / "memory.events").write_text(EVENTS.format(max=0, oom=0, kill=0))
    seen: list[str] = []
    watch = OomWatch(seen.append)
    try:
        watch.watch("y", str(child))
        (child / "memory.events").write_text(EVENTS.format(max=4, oom=0, kill=0))
        (child / "memory.events").unlink()
        await _settle()
        assert seen == [] and not watch.killed_in_parent("y")
    finally:
        watch.close()
