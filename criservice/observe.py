"""What ties the machinery's lifecycle to observers: the event hub, the stats caches,
and the Prometheus metrics computed at scrape time."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from runtime import events
from runtime.events import EventHub
from runtime.records import ContainerStore, SandboxStore
from runtime.stats import Stats


def lifecycle_listener(hub: EventHub, stats: Stats, sandboxes: SandboxStore,
                       containers: ContainerStore) -> Callable[[str, str, str, int], None]:
    """The on_event hook of the container and pod managers. An exit recorded twice (the
    exit watcher and StopContainer racing to write it) is published once."""
    last: dict[str, str] = {}

    def on_event(kind: str, container_id: str, sandbox_id: str, timestamp_ns: int) -> None:
        if last.get(container_id) == kind:
            return
        last[container_id] = kind
        if kind == events.DELETED:
            del last[container_id]
        hub.publish(kind, container_id, sandbox_id, timestamp_ns)
        if container_id != sandbox_id and kind in (events.CREATED, events.STARTED):
            _timeline(sandboxes, containers, kind, container_id, sandbox_id, timestamp_ns)
        if container_id == sandbox_id and kind == events.STOPPED:
            # Its network namespace is gone: close the netlink socket that pins it.
            record = sandboxes.find(sandbox_id)
            stats.forget(sandbox_id, netns=(record.netns or None) if record is not None else None)
        elif kind == events.DELETED:
            stats.forget(container_id)

    return on_event


def _timeline(sandboxes: SandboxStore, containers: ContainerStore, kind: str, container_id: str,
              sandbox_id: str, timestamp_ns: int) -> None:
    """The pod start timeline (`crictl inspectp`: details.timeline_ms): when each container
    was created and started, in ms since RunPodSandbox began; the first time only, so a
    restarted container does not move its pod's start."""
    sandbox, container = sandboxes.find(sandbox_id), containers.find(container_id)
    if sandbox is None or container is None:
        return
    key = f"{container.name} {kind}"
    if key not in sandbox.timeline_ms:
        timeline = {**sandbox.timeline_ms, key: round((timestamp_ns - sandbox.created_at) / 1e6, 3)}
        sandboxes.update(sandbox_id, lambda r: dataclasses.replace(r, timeline_ms=timeline))


def state_metrics(sandboxes: SandboxStore, containers: ContainerStore,
                  hub: EventHub) -> Callable[[], Iterator[GaugeMetricFamily | CounterMetricFamily]]:
    def collect() -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        pods = GaugeMetricFamily("criservice_pod_sandboxes", "Pod sandboxes, by state.", labels=["state"])
        for state, n in sorted(Counter(s.state for s in sandboxes.list()).items()):
            pods.add_metric([state], n)
        yield pods
        ctrs = GaugeMetricFamily("criservice_containers", "Containers, by state.", labels=["state"])
        for state, n in sorted(Counter(c.state for c in containers.list()).items()):
            ctrs.add_metric([state], n)
        yield ctrs
        yield GaugeMetricFamily("criservice_event_subscribers",
                                "Clients subscribed to GetContainerEvents now.", value=hub.subscribers)
        yield CounterMetricFamily("criservice_events_published", "Container and sandbox events published.",
                                  value=hub.published)
        yield CounterMetricFamily("criservice_events_dropped",
                                  "Events a subscriber had no buffer room for (a slow client).",
                                  value=hub.dropped)

    return collect
