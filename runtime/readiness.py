"""Is the runtime ready to run containers, and is the pod network ready?

These answer the two conditions of CRI Status. They probe real binaries and
files each time (probes are cached per binary identity), so fixing the host
turns the condition true without a restart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from runtime import binaries
from runtime.cni_config import CniConfigError, check_network


@dataclass(frozen=True)
class Condition:
    ready: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class HandlerStatus:
    name: str
    binary: binaries.BinaryInfo
    default: bool


@dataclass(frozen=True)
class RuntimeReadiness:
    condition: Condition
    handlers: list[HandlerStatus] = field(default_factory=list)
    conmon: binaries.BinaryInfo | None = None

    @property
    def usable_handlers(self) -> list[HandlerStatus]:
        return [h for h in self.handlers if h.binary.usable]


async def runtime_readiness(handlers: dict[str, str], default: str, conmon: str) -> RuntimeReadiness:
    """`handlers` maps handler name -> binary. Ready when the default handler and
    conmon both answer `--version`; other broken handlers are only left out."""
    names = list(handlers)
    infos = await asyncio.gather(*(binaries.probe(handlers[n]) for n in names),
                                 binaries.probe(conmon))
    statuses = [HandlerStatus(n, info, n == default) for n, info in zip(names, infos)]
    conmon_info = infos[-1]
    problems = [f"default runtime handler {s.name!r}: {s.binary.error}"
                for s in statuses if s.default and not s.binary.usable]
    if not conmon_info.usable:
        problems.append(f"conmon: {conmon_info.error}")
    if problems:
        condition = Condition(False, "RuntimeNotReady" if len(problems) > 1 else
                              ("ConmonNotFound" if not conmon_info.usable else "OCIRuntimeNotFound"),
                              "; ".join(problems))
    else:
        condition = Condition(True)
    return RuntimeReadiness(condition, statuses, conmon_info)


def network_readiness(conf_dir: str, bin_dirs: list[str]) -> Condition:
    try:
        check_network(conf_dir, bin_dirs)
    except CniConfigError as e:
        return Condition(False, "NetworkPluginNotReady", f"Network plugin returns error: {e}")
    return Condition(True)
