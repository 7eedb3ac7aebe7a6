import json

from tests.e2e.conftest import crictl


def test_crictl_version(endpoint: str) -> None:
    res = crictl(endpoint, "version")
    assert res.returncode == 0, res.stderr
    fields = dict(line.split(":", 1) for line in res.stdout.splitlines() if ":" in line)
    assert fields["RuntimeName"].strip() == "criservice"
    assert fields["RuntimeApiVersion"].strip() == "v1"
    assert fields["Version"].strip() == "0.1.0"


def test_crictl_info_shows_both_conditions_and_config(endpoint: str) -> None:
    res = crictl(endpoint, "info")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    conditions = {c["type"]: c for c in info["status"]["conditions"]}
    assert conditions["RuntimeReady"]["status"] is True
    assert conditions["NetworkReady"]["status"] is True, conditions["NetworkReady"]
    assert info["config"]["api"]["socket"] == endpoint.removeprefix("unix://")
    assert info["ociRuntimes"]["runc"]["version"].startswith("runc version")
    assert [h.get("name", "") for h in info["runtimeHandlers"]][:2] == ["", "runc"]  # "" is the default


def test_crictl_imagefsinfo(endpoint: str) -> None:
    res = crictl(endpoint, "imagefsinfo")
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)["status"]
    assert status["imageFilesystems"][0]["fsId"]["mountpoint"].endswith("/images")
