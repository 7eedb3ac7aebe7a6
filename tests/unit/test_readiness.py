"""Readiness probes run real executables: small scripts standing in for runc and conmon."""

from pathlib import Path

from runtime.readiness import runtime_readiness


def _tool(d: Path, name: str, body: str = 'echo "$0 version 1.2.3"') -> str:
    p = d / name
    p.write_text(f"#!/bin/sh\n{body}\n")
    p.chmod(0o755)
    return str(p)


async def test_ready_when_default_handler_and_conmon_work(tmp_path: Path) -> None:
    runc, conmon = _tool(tmp_path, "runc"), _tool(tmp_path, "conmon")
    r = await runtime_readiness({"runc": runc, "crun": str(tmp_path / "crun")}, "runc", conmon)
    assert r.condition.ready
    assert [h.name for h in r.usable_handlers] == ["runc"]  # crun is missing: left out
    assert r.handlers[0].binary.version.endswith("version 1.2.3")


async def test_missing_conmon_is_not_ready_with_reason(tmp_path: Path) -> None:
    runc = _tool(tmp_path, "runc")
    r = await runtime_readiness({"runc": runc}, "runc", str(tmp_path / "conmon"))
    assert not r.condition.ready
    assert r.condition.reason == "ConmonNotFound"
    assert "conmon" in r.condition.message and "not found" in r.condition.message


async def test_broken_default_runtime_is_not_ready(tmp_path: Path) -> None:
    runc = _tool(tmp_path, "runc", 'echo "libseccomp missing" >&2; exit 127')
    conmon = _tool(tmp_path, "conmon")
    r = await runtime_readiness({"runc": runc}, "runc", conmon)
    assert not r.condition.ready
    assert r.condition.reason == "OCIRuntimeNotFound"
    assert "exited 127" in r.condition.message and "libseccomp missing" in r.condition.message
