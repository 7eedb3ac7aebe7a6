"""What the list RPCs of sandboxes and containers share: the filter and the chunking
of the streaming variants."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# Items per message of a Stream* list RPC: far below gRPC's 4 MiB default at any label load.
STREAM_CHUNK = 100


def selected(record: Any, flt: Any, state: int, *, building: bool) -> bool:
    """Whether a record passes a PodSandboxFilter or ContainerFilter (ids match by prefix,
    as crictl shows them truncated). Half-built records are never listed."""
    if building:
        return False
    if flt.id and not record.id.startswith(flt.id):
        return False
    if flt.HasField("state") and flt.state.state != state:
        return False
    return labels_match(record.labels, flt.label_selector)


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def chunks(items: Sequence[T], size: int = STREAM_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
