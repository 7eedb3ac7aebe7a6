"""Checks that every request gets before its handler, from its message descriptor alone.

A NUL byte cannot cross into the kernel (paths, argv, environment) or a CNI plugin's
arguments, and Python refuses it with a bare `ValueError: embedded null byte` deep in
whatever handler meets it first. Refusing it here, once for every field of every
request, names the field instead (`config.envs[0].value`, `cmd[1]`) and keeps the
check out of each handler.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from runtime.errors import shown

# How a field is walked; a field that cannot hold text (numbers, enums, bools) is skipped.
_SKIP, _TEXT, _TEXTS, _MESSAGE, _MESSAGES, _MAP = range(6)
_TEXT_TYPES = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)

# Per field: its kind, the NUL to look for (str or bytes; for a map, in its values,
# None if they are not text), and for a map whether its keys are text and its values
# messages. Filled on first sight of a field.
_Plan = tuple[int, str | bytes | None, bool, bool]
_plans: dict[FieldDescriptor, _Plan] = {}
# Message types with no text anywhere inside them (wrappers, resources of numbers...).
_textless: dict[Descriptor, bool] = {}


def nul_field(message: Message) -> str | None:
    """The path of the first set string or bytes field holding a NUL byte, or None.

    The CRI's only bytes field in a request is KeyValue.value, an environment value:
    it cannot carry a NUL into exec either, so bytes are checked as text is."""
    for fd, value in message.ListFields():
        kind, nul, key_is_text, values_are_messages = _plans.get(fd) or _plan(fd)
        if kind == _SKIP:
            continue
        if kind == _TEXT:
            if nul in value:
                return fd.name
        elif kind == _TEXTS:
            for i, item in enumerate(value):
                if nul in item:
                    return f"{fd.name}[{i}]"
        elif kind == _MESSAGE:
            inner = nul_field(value)
            if inner is not None:
                return f"{fd.name}.{inner}"
        elif kind == _MESSAGES:
            for i, item in enumerate(value):
                inner = nul_field(item)
                if inner is not None:
                    return f"{fd.name}[{i}].{inner}"
        else:  # a map
            for key, item in value.items():
                if key_is_text and "\0" in key:
                    return f"{fd.name}[{shown(key)}]"
                if values_are_messages:
                    inner = nul_field(item)
                    if inner is not None:
                        return f"{fd.name}[{shown(key)}].{inner}"
                elif nul is not None and nul in item:
                    return f"{fd.name}[{shown(key)}]"
    return None


def _plan(fd: FieldDescriptor) -> _Plan:
    plan: _Plan = (_SKIP, None, False, False)
    if fd.type in _TEXT_TYPES:
        plan = (_TEXTS if fd.is_repeated else _TEXT, _nul(fd), False, False)
    elif fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key, value = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
        key_is_text = key.type in _TEXT_TYPES
        values_are_messages = value.message_type is not None
        if key_is_text or value.type in _TEXT_TYPES or (
                value.message_type is not None and not _is_textless(value.message_type)):
            plan = (_MAP, _nul(value) if value.type in _TEXT_TYPES else None, key_is_text, values_are_messages)
    elif fd.message_type is not None and not _is_textless(fd.message_type):
        plan = (_MESSAGES if fd.is_repeated else _MESSAGE, None, False, False)
    _plans[fd] = plan
    return plan


def _nul(fd: FieldDescriptor) -> str | bytes:
    return b"\0" if fd.type == FieldDescriptor.TYPE_BYTES else "\0"


def _is_textless(desc: Descriptor, seen: frozenset[Descriptor] = frozenset()) -> bool:
    known = _textless.get(desc)
    if known is not None:
        return known
    if desc in seen:  # a recursive type (the CRI has none): walked, to be safe
        return False
    result = all(
        fd.type not in _TEXT_TYPES and (fd.message_type is None or _is_textless(fd.message_type, seen | {desc}))
        for fd in desc.fields)
    _textless[desc] = result
    return result
