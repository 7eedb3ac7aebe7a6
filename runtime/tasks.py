"""Running steps side by side, or one after another past failures, the way the runtime wants it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
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


async def every(steps: Iterable[Callable[[], Awaitable[object]]],
                on_failure: Callable[[Exception], None] | None = None) -> None:
    """Run every step, in order, even when one fails (one stuck part of an undo must
    not leave the others behind); then raise the first failure."""
    first: Exception | None = None
    for step in steps:
        try:
            await step()
        except Exception as e:  # noqa: BLE001 - reported; the other steps still run
            if on_failure is not None:
                on_failure(e)
            first = first or e
    if first is not None:
        raise first
