"""Running steps side by side, the way the runtime wants it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def together(*steps: Coroutine[Any, Any, T]) -> list[T]:
    """Run steps at once; their results in order. The first failure cancels the others
    (which undo their own half-done work when cancelled) and is raised as it is, not
    as a group, so that callers and the gRPC face see its own type."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(step) for step in steps]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
