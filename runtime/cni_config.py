"""Reading the pod network's CNI configuration (CNI spec 1.0 network configuration).

The network is the first file in the configuration directory, in lexical order,
ending in .conflist, .conf or .json, as the kubelet's other runtimes choose it.
A single-plugin .conf is read as a list of one plugin.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTENSIONS = (".conflist", ".conf", ".json")


class CniConfigError(Exception):
    pass


@dataclass(frozen=True)
class NetworkConfig:
    file: str
    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    raw: bytes

    @property
    def plugin_types(self) -> list[str]:
        return [p["type"] for p in self.plugins]


def find_plugin(plugin_type: str, bin_dirs: list[str]) -> str | None:
    for d in bin_dirs:
        path = os.path.join(d, plugin_type)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def load_network(conf_dir: str) -> NetworkConfig:
    """The pod network configuration; CniConfigError says why there is none."""
    directory = Path(conf_dir)
    try:
        candidates = sorted(p for p in directory.iterdir()
                            if p.suffix in EXTENSIONS and p.is_file())
    except FileNotFoundError:
        raise CniConfigError(f"no CNI configuration: {conf_dir} does not exist") from None
    except OSError as e:
        raise CniConfigError(f"cannot read {conf_dir}: {e.strerror}") from None
    if not candidates:
        raise CniConfigError(f"no CNI configuration (*.conflist, *.conf, *.json) in {conf_dir}")
    return parse_network(candidates[0])


def parse_network(path: Path) -> NetworkConfig:
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise CniConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise CniConfigError(f"{path}: must hold a JSON object")
    plugins = doc.get("plugins") if path.suffix == ".conflist" or "plugins" in doc else [doc]
    if not isinstance(plugins, list) or not plugins:
        raise CniConfigError(f"{path}: 'plugins' must be a non-empty list")
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str) or not plugin["type"]:
            raise CniConfigError(f"{path}: plugins[{i}] has no 'type'")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise CniConfigError(f"{path}: the network has no 'name'")
    return NetworkConfig(str(path), name, str(doc.get("cniVersion", "")), plugins, raw)


def check_network(conf_dir: str, bin_dirs: list[str]) -> NetworkConfig:
    """The network config, after checking that every plugin it names is installed."""
    network = load_network(conf_dir)
    missing = [t for t in network.plugin_types if find_plugin(t, bin_dirs) is None]
    if missing:
        raise CniConfigError(
            f"{network.file}: CNI plugin(s) {', '.join(missing)} not found in {':'.join(bin_dirs)}")
    return network
