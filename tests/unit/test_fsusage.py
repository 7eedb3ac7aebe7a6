import os
from pathlib import Path

from runtime.fsusage import UsageCache, measure


def test_counts_blocks_and_inodes_once_per_hard_link(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"a" * 8192)
    os.link(tmp_path / "d" / "a", tmp_path / "b")
    os.symlink("d/a", tmp_path / "c")
    u = measure(str(tmp_path))
    assert u.inodes_used == 3  # d, a (= b), c
    assert u.bytes_used >= 8192


def test_missing_directory_is_empty(tmp_path: Path) -> None:
    u = measure(str(tmp_path / "nope"))
    assert (u.bytes_used, u.inodes_used) == (0, 0)


async def test_cache_reuses_a_fresh_result(tmp_path: Path) -> None:
    cache = UsageCache(ttl=60)
    first = await cache.get(str(tmp_path))
    (tmp_path / "new").write_bytes(b"x")
    assert await cache.get(str(tmp_path)) is first
    assert (await UsageCache(ttl=0).get(str(tmp_path))).inodes_used == 1
