import json

from runtime.oci.features import HandlerFeatures, parse_features

RUNC_1_1 = {"ociVersionMax": "1.0.2-dev", "mountOptions": ["bind", "ro", "rro", "rbind"],
            "linux": {"namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]}}
RUNC_1_2 = {**RUNC_1_1, "linux": {**RUNC_1_1["linux"], "mountExtensions": {"idmap": {"enabled": True}}}}


def test_runc_1_1_has_rro_on_a_new_kernel_and_no_user_namespaces() -> None:
    assert parse_features(json.dumps(RUNC_1_1), (6, 1)) == HandlerFeatures(True, False)


def test_rro_needs_mount_setattr_from_the_kernel() -> None:
    assert not parse_features(json.dumps(RUNC_1_1), (5, 10)).recursive_read_only_mounts


def test_idmapped_mounts_announce_user_namespaces() -> None:
    assert parse_features(json.dumps(RUNC_1_2), (6, 1)).user_namespaces


def test_idmap_without_the_user_namespace_announces_nothing() -> None:
    doc = {**RUNC_1_2, "linux": {**RUNC_1_2["linux"], "namespaces": ["pid", "mount"]}}
    assert not parse_features(json.dumps(doc), (6, 1)).user_namespaces


def test_unreadable_output_announces_nothing() -> None:
    assert parse_features("Incorrect Usage: no such command", (6, 1)) == HandlerFeatures()
    assert parse_features("[1, 2]", (6, 1)) == HandlerFeatures()
