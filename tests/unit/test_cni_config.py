import json
import re
import os
from pathlib import Path

import pytest

from runtime.cni_config import CniConfigError, check_network, load_network


def _plugin(bin_dir: Path, name: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    p = bin_dir / name
    p.write_text("#!/bin/sh\nexit 0\n")
    p.chmod(0o755)


def test_first_file_in_lexical_order_wins(tmp_path: Path) -> None:
    (tmp_path / "20-b.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]}))
    (tmp_path / "10-a.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "ptp"}, {"type": "portmap"}]}))
    (tmp_path / "00-readme.txt").write_text("not a config")
    net = load_network(str(tmp_path))
    assert (net.name, net.plugin_types) == ("a", ["ptp", "portmap"])


def test_single_plugin_conf(tmp_path: Path) -> None:
    (tmp_path / "10.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "n", "type": "bridge"}))
    assert load_network(str(tmp_path)).plugin_types == ["bridge"]


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"name": "n", "plugins": []}', "non-empty list"),
    ('{"name": "n", "plugins": [{"nottype": 1}]}', "plugins[0] has no 'type'"),
    ('{"plugins": [{"type": "bridge"}]}', "has no 'name'"),
])
def test_broken_configs_say_why(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "10.conflist").write_text(content)
    with pytest.raises(CniConfigError, match=re.escape(message)):
        load_network(str(tmp_path))


def test_missing_dir_and_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(CniConfigError, match="does not exist"):
        load_network(str(tmp_path / "nope"))
    with pytest.raises(CniConfigError, match="no CNI configuration"):
        load_network(str(tmp_path))


def test_missing_plugin_binary_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "10.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}, {"type": "portmap"}]}))
    bins = tmp_path / "bin"
    _plugin(bins, "bridge")
    with pytest.raises(CniConfigError, match=re.escape(f"portmap not found in {bins}")):
        check_network(str(conf), [str(bins)])
    _plugin(bins, "portmap")
    assert check_network(str(conf), [str(tmp_path / "other"), str(bins)]).name == "n"
    assert os.access(bins / "portmap", os.X_OK)
