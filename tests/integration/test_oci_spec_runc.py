"""A generated config.json run by the real runc: user, groups, capabilities,
no_new_privs, seccomp, masked and read-only paths as the process sees them."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runtime import cgroups
from runtime.oci import spec as oci
from runtime.oci.specinput import (
    ContainerInput, ImageInput, NamespacesInput, PodSecurityInput, ProfileInput, SandboxInput, SecurityInput,
)
from tests.registry_helpers import TEST_REGISTRY, registry_is_up

REGISTRY = TEST_REGISTRY
IMAGE = f"{REGISTRY}/e2e-test-images/busybox:1.29-2"
CGROUP_PARENT = "criservice-test"   # test-only; removed after each run
TOOLS = ("runc", "skopeo", "umoci")

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason=f"needs {', '.join(TOOLS)}")



def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _blob(layout: Path, digest: str) -> Any:
    algo, hexdigest = digest.split(":", 1)
    return json.loads((layout / "blobs" / algo / hexdigest).read_text())


def _image_config(layout: Path) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    manifest = _blob(layout, index["manifests"][0]["digest"])
    return _blob(layout, manifest["config"]["digest"]).get("config") or {}


@pytest.fixture
def bundle(short_tmp: Path) -> tuple[Path, dict[str, Any]]:
    if not registry_is_up():
        pytest.skip(f"no registry at {REGISTRY} (hack/e2e-env.sh up starts one)")
    layout, bundle_dir = short_tmp / "layout", short_tmp / "bundle"
    copy = _run("skopeo", "copy", "--src-tls-verify=false", f"docker://{IMAGE}", f"oci:{layout}:b")
    assert copy.returncode == 0, copy.stderr
    unpack = _run("umoci", "unpack", "--image", f"{layout}:b", str(bundle_dir))
    assert unpack.returncode == 0, unpack.stderr
    return bundle_dir, _image_config(layout)


def _remove_test_cgroups() -> None:
    """runc removes the container's own cgroups; the test parent is ours to remove."""
    root = Path(cgroups.CGROUP_ROOT)
    for parent in [root / CGROUP_PARENT, *root.glob(f"*/{CGROUP_PARENT}")]:
        if parent.is_dir():
            for dirpath, _, _ in sorted(os.walk(parent), key=lambda w: len(w[0]), reverse=True):
                os.rmdir(dirpath)


def _mask(names: list[str]) -> int:
    return sum(1 << oci.CAPABILITIES.index(n) for n in names)


def _status(output: str) -> dict[str, str]:
    fields = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
            fields[key] = value.strip()
    return fields


def _runc_run(bundle_dir: Path, container: ContainerInput, sandbox: SandboxInput, image: ImageInput,
              state: Path) -> str:
    """The container's stdout, after `runc run` in the foreground; nothing left behind."""
    cid = "crs-itest-" + secrets.token_hex(4)
    spec = oci.build_spec(container, sandbox, image, container_id=cid, rootfs=str(bundle_dir / "rootfs"),
                          cgroups_path=f"/{CGROUP_PARENT}/{cid}")
    (bundle_dir / "config.json").write_text(json.dumps(spec))
    try:
        run = _run("runc", "--root", str(state), "run", "--bundle", str(bundle_dir), cid, timeout=60)
    finally:
        if _run("runc", "--root", str(state), "state", cid).returncode == 0:
            deleted = _run("runc", "--root", str(state), "delete", "--force", cid)
            assert deleted.returncode == 0, deleted.stderr
        _remove_test_cgroups()
    assert run.returncode == 0, f"runc run failed: {run.stderr}\n{run.stdout}"
    return run.stdout


def _image(bundle_dir: Path, config: dict[str, Any]) -> ImageInput:
    return ImageInput(rootfs=str(bundle_dir / "rootfs"), name=IMAGE,
                      entrypoint=tuple(config.get("Entrypoint") or ()), cmd=tuple(config.get("Cmd") or ()),
                      env=tuple(config.get("Env") or ()), working_dir=config.get("WorkingDir", ""),
                      user=config.get("User", ""))


# Host network and IPC: no pod namespaces to pin for these checks.
SANDBOX = SandboxInput(id="itest", name="itest", namespace="default", uid="u1", host_network=True, host_ipc=True)

SCRIPT = """
id
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status
echo "timer_list_bytes=$(wc -c < /proc/timer_list)"
echo "acpi_entries=$(ls -A /proc/acpi 2>/dev/null | wc -l)"
grep -E '^[^ ]+ /proc/sys ' /proc/mounts
grep -E '^[^ ]+ / ' /proc/mounts
echo "cwd=$(pwd) home=$HOME"
ls /
"""


def test_runc_runs_the_generated_spec(bundle: tuple[Path, dict[str, Any]], short_tmp: Path) -> None:
    bundle_dir, image_config = bundle
    container = ContainerInput(
        name="spec-check", command=("sh", "-c", SCRIPT),
        security=SecurityInput(run_as_user=1001, run_as_group=1002, supplemental_groups=(1234,),
                               no_new_privs=True, readonly_rootfs=True, seccomp=ProfileInput(),
                               namespaces=NamespacesInput(pid="container")))
    out = _runc_run(bundle_dir, container, SANDBOX, _image(bundle_dir, image_config), short_tmp / "runc-state")

    assert "uid=1001 gid=1002 groups=1002,1234" in out, out
    status = _status(out)
    assert int(status["CapBnd"], 16) == _mask(list(oci.DEFAULT_CAPS)), out
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, out   # non-root, no ambient
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", out
    assert "timer_list_bytes=0" in out and "acpi_entries=0" in out, out       # masked paths
    sysline = next(line for line in out.splitlines() if " /proc/sys " in line)
    rootline = next(line for line in out.splitlines() if line.split(" ")[1:2] == ["/"])
    assert "ro" in sysline.split(" ")[3].split(","), sysline                  # read-only paths
    assert "ro" in rootline.split(" ")[3].split(","), rootline                # read-only rootfs
    assert "cwd=/ home=/" in out, out
    assert "bin" in out.split() and "etc" in out.split(), out


def test_runc_runs_a_privileged_spec(bundle: tuple[Path, dict[str, Any]], short_tmp: Path) -> None:
    """Every capability the daemon holds, host devices, no seccomp, no masked paths, writable sysfs."""
    bundle_dir, image_config = bundle
    script = ("grep -E '^(CapBnd|Seccomp):' /proc/self/status; ls /dev/null /dev/full; "
              "echo timer_list_bytes=$(wc -c < /proc/timer_list); grep -E '^[^ ]+ /sys ' /proc/mounts")
    container = ContainerInput(name="privileged-check", command=("sh", "-c", script),
                               security=SecurityInput(privileged=True, seccomp=ProfileInput(),
                                                      namespaces=NamespacesInput(pid="container")))
    sandbox = dataclasses.replace(SANDBOX, security=PodSecurityInput(privileged=True))
    out = _runc_run(bundle_dir, container, sandbox, _image(bundle_dir, image_config), short_tmp / "runc-state")
    status = _status(out)
    # every capability this (root) process holds, which may be fewer than the kernel knows
    assert int(status["CapBnd"], 16) == _mask(list(oci.detect_host().all_caps)), out
    assert len(oci.detect_host().all_caps) > len(oci.DEFAULT_CAPS)
    assert status["Seccomp"] == "0", out
    assert "/dev/full" in out and "timer_list_bytes=0" not in out, out
    sysline = next(line for line in out.splitlines() if " /sys " in line)
    assert "rw" in sysline.split(" ")[3].split(","), sysline
