"""RunPodSandbox's checks before anything is made: each refusal names its field."""

from __future__ import annotations

import dataclasses

import pytest

from runtime import errors
from runtime.podspec import PodSpec, PortMapping
from runtime.pods import PodRequest, validate

GOOD = PodRequest(name="web-0", namespace="default", uid="1f3c-77", attempt=0, handler="runc", config=b"",
                  pod=PodSpec(hostname="web-0", log_directory="/var/log/pods/default_web-0_1f3c-77"))
_POD_FIELDS = {f.name for f in dataclasses.fields(PodSpec)}


def changed(**changes: object) -> PodRequest:
    """GOOD with some fields changed, of the request or of its pod spec."""
    pod = {k: v for k, v in changes.items() if k in _POD_FIELDS}
    own = {k: v for k, v in changes.items() if k not in _POD_FIELDS}
    return dataclasses.replace(GOOD, pod=dataclasses.replace(GOOD.pod, **pod), **own)  # type: ignore[arg-type]


def refused(**changes: object) -> str:
    with pytest.raises(errors.InvalidArgument) as e:
        validate(changed(**changes), "cgroupfs")
    return str(e.value)


def test_a_kubelet_pod_passes() -> None:
    validate(GOOD, "cgroupfs")
    validate(changed(cgroup_parent="kubepods-besteffort.slice"), "systemd")
    validate(changed(host_network=True, hostname="node_1"), "cgroupfs")


@pytest.mark.parametrize("field", ["name", "namespace", "uid"])
@pytest.mark.parametrize("value", ["a=b", "a;b", "a\0b", "a\nb", "a/b", "x" * 254])
def test_metadata_that_cni_args_or_paths_cannot_carry(field: str, value: str) -> None:
    message = refused(**{field: value})
    assert message.startswith(f"config.metadata.{field} ")
    assert len(message) < 200   # never the value at full length


@pytest.mark.parametrize("field", ["name", "namespace", "uid"])
def test_empty_metadata(field: str) -> None:
    assert refused(**{field: ""}) == f"config.metadata.{field} is empty"


@pytest.mark.parametrize("hostname", ["a\0b", "a b", "-x", "x" * 65, "a\tb"])
def test_hostnames_the_uts_namespace_cannot_take(hostname: str) -> None:
    assert refused(hostname=hostname).startswith("config.hostname ")


def test_log_directory_must_be_absolute() -> None:
    assert "config.log_directory" in refused(log_directory="var/log/pods/x")


def test_dns_entries_cannot_add_lines_to_resolv_conf() -> None:
    assert "config.dns_config.servers[1]" in refused(dns_servers=("10.0.0.10", "example.com"))
    assert "config.dns_config.searches[0]" in refused(dns_searches=("svc\nnameserver 6.6.6.6",))
    assert "config.dns_config.options[0]" in refused(dns_options=("ndots:5 x",))


def test_port_mappings() -> None:
    assert "config.port_mappings[0]" in refused(port_mappings=(PortMapping("tcp", 80, 70000),))
    assert "config.port_mappings[0].host_ip" in refused(port_mappings=(PortMapping("tcp", 80, 8080, "localhost"),))


def test_cgroup_parent_is_checked_for_the_driver_in_use() -> None:
    assert "config.linux.cgroup_parent" in refused(cgroup_parent="kubepods.slice")
    assert "config.linux.cgroup_parent" in refused(cgroup_parent="/kubepods/../..")


def test_labels_and_annotations_are_bounded() -> None:
    assert "config.annotations" in refused(annotations={"a": "x" * (300 * 1024)})


def test_negative_attempt() -> None:
    assert "config.metadata.attempt" in refused(attempt=-1)


def test_log_directory_paths_the_kernel_would_refuse() -> None:
    assert "config.log_directory" in refused(log_directory="/var/log/pods/" + "x" * 256)
    assert "config.log_directory" in refused(log_directory="/var" + "/x" * 2100)
