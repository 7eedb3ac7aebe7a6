"""cgroupsPath for both drivers, and the cgroup helpers against a made-up mount table."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import cgroups
from runtime.cgroups import cgroup_dir, cgroups_path, slice_dir

CID = "4f1c9e0d" * 8
POD_SLICE_PATH = ("/kubepods.slice/kubepods-burstable.slice/"
                  "kubepods-burstable-pod0d3c_77e1.slice")


# ---- cgroupfs ------------------------------------------------------------------------------

def test_cgroupfs_joins_parent_and_id() -> None:
    assert cgroups_path("cgroupfs", "/kubepods/burstable/pod0d3c", CID) == \
        f"/kubepods/burstable/pod0d3c/{CID}"


def test_cgroupfs_default_parent_and_root_parent() -> None:
    assert cgroups_path("cgroupfs", "", CID) == f"/criservice/{CID}"
    assert cgroups_path("cgroupfs", "/", CID) == f"/{CID}"


def test_cgroupfs_normalises_slashes() -> None:
    assert cgroups_path("cgroupfs", "/kubepods//besteffort/", CID) == f"/kubepods/besteffort/{CID}"


def test_cgroupfs_conmon_gets_its_own_leaf() -> None:
    assert cgroups_path("cgroupfs", "/kubepods/pod1", CID, kind="conmon") == f"/kubepods/pod1/conmon-{CID}"


@pytest.mark.parametrize("parent, words", [
    ("kubepods.slice", "systemd cgroup driver"),
    ("kubepods/pod1", "not an absolute cgroupfs path"),
    ("/kubepods/../etc", "'..'"),
])
def test_cgroupfs_rejects_bad_parents(parent: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        cgroups_path("cgroupfs", parent, CID)


# ---- systemd -------------------------------------------------------------------------------

def test_systemd_takes_the_innermost_slice_of_the_kubelets_path() -> None:
    assert cgroups_path("systemd", POD_SLICE_PATH, CID) == \
        f"kubepods-burstable-pod0d3c_77e1.slice:cri-criservice:{CID}"


def test_systemd_accepts_a_bare_slice_name() -> None:
    assert cgroups_path("systemd", "kubepods-besteffort.slice", CID) == \
        f"kubepods-besteffort.slice:cri-criservice:{CID}"


def test_systemd_default_parent_and_conmon() -> None:
    assert cgroups_path("systemd", "", CID) == f"system.slice:cri-criservice:{CID}"
    assert cgroups_path("systemd", "system.slice", CID, kind="conmon") == \
        f"system.slice:cri-criservice-conmon:{CID}"


def test_systemd_rejects_a_cgroupfs_parent_clearly() -> None:
    with pytest.raises(ValueError, match="cgroupfs form.*same cgroup driver"):
        cgroups_path("systemd", "/kubepods/burstable/pod0d3c", CID)


def test_systemd_rejects_a_path_that_does_not_nest_like_slices() -> None:
    with pytest.raises(ValueError, match="not the path of slice"):
        cgroups_path("systemd", "/other.slice/kubepods-burstable.slice", CID)


@pytest.mark.parametrize("driver, cid, kind, words", [
    ("cgroupfs", "../x", "container", "invalid container id"),
    ("systemd", "a:b", "container", "invalid container id"),
    ("cgroupfs", "", "container", "invalid container id"),
    ("cgroupfs", CID, "pod", "invalid cgroup kind"),
    ("cgroupv3", CID, "container", "unknown cgroup driver"),
])
def test_rejects_bad_arguments(driver: str, cid: str, kind: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        cgroups_path(driver, "", cid, kind=kind)


# ---- from cgroupsPath to directories ---------------------------------------------------------

def test_slice_dir_expands_the_nesting() -> None:
    assert slice_dir("kubepods-burstable-pod0d3c_77e1.slice") == POD_SLICE_PATH
    assert slice_dir("system.slice") == "/system.slice"
    assert slice_dir("-.slice") == "/"
    with pytest.raises(ValueError):
        slice_dir("a--b.slice")


def test_cgroup_dir_of_both_drivers() -> None:
    assert cgroup_dir(f"/kubepods/pod1/{CID}") == f"/kubepods/pod1/{CID}"
    assert cgroup_dir(cgroups_path("systemd", POD_SLICE_PATH, CID)) == \
        f"{POD_SLICE_PATH}/cri-criservice-{CID}.scope"
    for bad in ("relative/path", "/a/../b", "a:b"):
        with pytest.raises(ValueError):
            cgroup_dir(bad)


# ---- hierarchies, removal and OOM against a fake mount table ----------------------------------

def _fake_v1(tmp_path: Path) -> Path:
    """A mountinfo naming v1 hierarchies (memory, cpu,cpuacct, name=systemd) plus a hybrid unified
    one, each a plain directory under tmp_path, one of them mounted twice."""
    lines = []
    for i, (name, fstype, opts) in enumerate([
            ("memory", "cgroup", "rw,memory"), ("cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
            ("systemd", "cgroup", "rw,xattr,name=systemd"), ("unified", "cgroup2", "rw,nsdelegate")]):
        (tmp_path / name).mkdir()
        lines.append(f"{30 + i} 20 0:{40 + i} / {tmp_path / name} rw,relatime - {fstype} cgroup {opts}")
    lines.append(f"50 20 0:40 / {tmp_path / 'again'} rw,relatime - cgroup cgroup rw,memory")
    lines.append(f"51 20 8:1 / {tmp_path} rw,relatime - ext4 /dev/sda1 rw")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("\n".join(lines) + "\n")
    return mountinfo


def test_hierarchies_from_mountinfo(tmp_path: Path) -> None:
    found = cgroups.hierarchies(str(_fake_v1(tmp_path)))
    assert [(Path(h.mountpoint).name, h.version, h.controllers) for h in found] == [
        ("memory", 1, ("memory",)), ("cpu,cpuacct", 1, ("cpu", "cpuacct")),
        ("systemd", 1, ("name=systemd",)), ("unified", 2, ())]


def test_remove_cgroup_in_every_hierarchy_deepest_first(tmp_path: Path) -> None:
    mountinfo = str(_fake_v1(tmp_path))
    path = f"/kubepods/pod1/{CID}"
    for h in ("memory", "cpu,cpuacct", "systemd"):
        (tmp_path / h / path.lstrip("/") / "nested").mkdir(parents=True)
    assert len(cgroups.pod_cgroup_dirs("/kubepods/pod1", mountinfo=mountinfo)) == 6
    cgroups.remove_cgroup(path, mountinfo=mountinfo)
    cgroups.remove_cgroup(path, mountinfo=mountinfo)  # idempotent
    assert cgroups.pod_cgroup_dirs("/kubepods/pod1", mountinfo=mountinfo) == []
    assert (tmp_path / "memory" / "kubepods" / "pod1").is_dir()  # the pod's own cgroup stays


def test_remove_cgroup_never_removes_files(tmp_path: Path) -> None:
    """rmdir only: a directory holding a file (not a cgroup) makes it fail rather than delete."""
    mountinfo = str(_fake_v1(tmp_path))
    leaf = tmp_path / "memory" / "kubepods" / CID
    leaf.mkdir(parents=True)
    (leaf / "data").write_text("x")
    with pytest.raises(OSError):
        cgroups.remove_cgroup(f"/kubepods/{CID}", mountinfo=mountinfo)
    assert (leaf / "data").exists()


def test_remove_cgroup_refuses_the_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        cgroups.remove_cgroup("/", mountinfo=str(_fake_v1(tmp_path)))


def test_oom_killed_reads_v1_oom_control(tmp_path: Path) -> None:
    mountinfo = str(_fake_v1(tmp_path))
    d = tmp_path / "memory" / "kubepods" / CID
    d.mkdir(parents=True)
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert cgroups.oom_killed(f"/kubepods/{CID}", mountinfo=mountinfo) is False
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cgroups.oom_killed(f"/kubepods/{CID}", mountinfo=mountinfo) is True
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")  # Linux < 4.13
    assert cgroups.oom_killed(f"/kubepods/{CID}", mountinfo=mountinfo) is False
    with pytest.raises(FileNotFoundError):
        cgroups.oom_killed(f"/kubepods/{'0' * 64}", mountinfo=mountinfo)


def test_oom_killed_reads_v2_memory_events(tmp_path: Path) -> None:
    (tmp_path / "cg").mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 20 0:40 / {tmp_path / 'cg'} rw - cgroup2 cgroup2 rw,nsdelegate\n")
    d = tmp_path / "cg" / "system.slice" / f"cri-criservice-{CID}.scope"
    d.mkdir(parents=True)
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert cgroups.oom_killed(cgroups_path("systemd", "", CID), mountinfo=str(mountinfo)) is True


def test_place_process_writes_the_pid_in_every_hierarchy_but_cpuset(tmp_path: Path) -> None:
    mountinfo = _fake_v1(tmp_path)
    (tmp_path / "cpuset").mkdir()
    with mountinfo.open("a") as f:
        f.write(f"60 20 0:60 / {tmp_path / 'cpuset'} rw,relatime - cgroup cgroup rw,cpuset\n")
    path = cgroups.cgroups_path("cgroupfs", "/kubepods/pod1", CID, kind="conmon")
    cgroups.place_process(4242, path, mountinfo=str(mountinfo))
    for name in ("memory", "cpu,cpuacct", "systemd", "unified"):
        assert (tmp_path / name / "kubepods/pod1" / f"conmon-{CID}" / "cgroup.procs").read_text() == "4242"
    # A new cpuset cgroup has no CPUs until they are copied in: it is left alone.
    assert not (tmp_path / "cpuset" / "kubepods").exists()
    with pytest.raises(ValueError, match="systemd unit"):
        cgroups.place_process(1, cgroups.cgroups_path("systemd", "kubepods.slice", CID, kind="conmon"))


def test_the_monitors_scope_is_asked_of_systemd_in_the_pods_slice() -> None:
    path = cgroups.cgroups_path("systemd", "/kubepods.slice/kubepods-besteffort.slice", CID, kind="conmon")
    argv = cgroups.scope_call(4242, path)
    assert argv[:8] == ["busctl", "call", "--quiet", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                        "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))"]
    assert argv[8:11] == [f"cri-criservice-conmon-{CID}.scope", "fail", "4"]
    props = argv[11:-1]
    assert props[props.index("PIDs"):][:4] == ["PIDs", "au", "1", "4242"]
    assert props[props.index("Slice"):][:3] == ["Slice", "s", "kubepods-besteffort.slice"]
    assert argv[-1] == "0"   # no auxiliary units
    assert cgroups.cgroup_dir(path).endswith(f"/kubepods-besteffort.slice/cri-criservice-conmon-{CID}.scope")
    with pytest.raises(ValueError, match="not a systemd"):
        cgroups.scope_call(1, "/kubepods/x")
