import os
from pathlib import Path

import pytest

from runtime.locks import LockHeld, PidLock


def test_second_holder_is_refused_with_the_first_pid(tmp_path: Path) -> None:
    first = PidLock(str(tmp_path / "x.lock"))
    first.acquire()
    assert PidLock(str(tmp_path / "x.lock")).holder() == str(os.getpid())
    with pytest.raises(LockHeld, match=f"locked by pid {os.getpid()}"):
        PidLock(str(tmp_path / "x.lock")).acquire()
    first.release()
    assert PidLock(str(tmp_path / "x.lock")).holder() is None
    again = PidLock(str(tmp_path / "x.lock"))
    again.acquire()
    again.release()
