"""The event hub: fan-out, bounded buffers, counted drops, publishers never blocked."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runtime.events import CREATED, DELETED, STARTED, STOPPED, EventHub


async def test_every_subscriber_gets_every_event_in_order() -> None:
    hub = EventHub()
    a, b = hub.subscribe(), hub.subscribe()
    for i, kind in enumerate((CREATED, STARTED, STOPPED, DELETED)):
        hub.publish(kind, "c1", "s1", i)
    for sub in (a, b):
        got = [await asyncio.wait_for(sub.get(), 1) for _ in range(4)]
        assert [e.kind for e in got] == [CREATED, STARTED, STOPPED, DELETED]
        assert [e.timestamp_ns for e in got] == [0, 1, 2, 3]
        assert {(e.container_id, e.sandbox_id) for e in got} == {("c1", "s1")}
    assert hub.subscribers == 2 and hub.published == 4 and hub.dropped == 0


async def test_a_slow_subscriber_loses_events_counted_and_others_do_not() -> None:
    hub = EventHub(buffer=3)
    slow, fast = hub.subscribe(), hub.subscribe(buffer=100)
    for i in range(10):
        hub.publish(STARTED, f"c{i}", "s", i)  # returns at once although nobody reads
    assert slow.pending() == 3 and slow.dropped == 7
    assert fast.pending() == 10 and fast.dropped == 0
    assert hub.dropped == 7
    # The buffer keeps the oldest events; newer ones are what was dropped.
    assert [(await slow.get()).container_id for _ in range(3)] == ["c0", "c1", "c2"]


async def test_a_late_subscriber_sees_only_later_events_and_closing_unsubscribes() -> None:
    hub = EventHub()
    hub.publish(CREATED, "early", "s", 1)
    with hub.subscribe() as sub:
        hub.publish(CREATED, "late", "s", 2)
        assert (await sub.get()).container_id == "late"
        assert sub.pending() == 0
    assert hub.subscribers == 0
    hub.publish(CREATED, "after", "s", 3)  # nobody listening: fine


async def test_iteration_and_publishing_from_another_thread() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    t = threading.Thread(target=lambda: [hub.publish(STOPPED, f"c{i}", "s", i) for i in range(5)])
    t.start()
    t.join()
    got = []
    async for event in sub:
        got.append(event.container_id)
        if len(got) == 5:
            break
    assert got == [f"c{i}" for i in range(5)]


def test_unknown_kind_is_a_bug() -> None:
    with pytest.raises(ValueError):
        EventHub().publish("exploded", "c", "s", 0)
