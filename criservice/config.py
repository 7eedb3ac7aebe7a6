"""The daemon's configuration: one TOML file plus drop-ins.

Load order: the built-in defaults, then the main file (default
/etc/criservice/criservice.toml), then every `*.toml` in `<main file>.d/` in
lexical order. Tables merge key by key; any other value replaces the one before.
Every key is checked against the schema below; an unknown key or a bad value
fails with the file, the dotted key and the reason.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

DEFAULT_CONFIG_PATH = Path("/etc/criservice/criservice.toml")

Check = Callable[[Any], str | None]


class ConfigError(Exception):
    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")
        self.file, self.key, self.reason = file, key, reason


def _absolute(value: str) -> str | None:
    return None if os.path.isabs(value) else f"must be an absolute path, got {value!r}"


def _absolute_or_empty(value: str) -> str | None:
    return _absolute(value) if value else None


def _one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"
    return check


def _at_least(minimum: float) -> Check:
    def check(value: float) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}, got {value}"
    return check


def _nonempty(value: str) -> str | None:
    return None if value else "must not be empty"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else f"must be a port number 0-65535, got {value}"


def _ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"must be an IP address, got {value!r}"
    return None


def _host_port_or_empty(value: str) -> str | None:
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return f"must be HOST:PORT or empty (off), got {value!r}"
    return _ip(host.strip("[]")) if host else None


def _each(check: Check) -> Check:
    def run(values: list[Any]) -> str | None:
        for i, value in enumerate(values):
            if (err := check(value)) is not None:
                return f"[{i}] {err}"
        return None
    return run


def _endpoint_url(value: str) -> str | None:
    url = urllib.parse.urlsplit(value)
    if url.scheme not in ("http", "https") or not url.netloc:
        return f"must be an http:// or https:// URL, got {value!r}"
    return None


def _opt(default: Any, check: Check | None = None) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"check": check})
    return field(default=default, metadata={"check": check})


def _section(cls: type) -> Any:
    return field(default_factory=cls)


@dataclass(frozen=True)
class ApiConfig:
    socket: str = _opt("/run/criservice/criservice.sock", _absolute)


@dataclass(frozen=True)
class PathsConfig:
    state_dir: str = _opt("/var/lib/criservice", _absolute)
    run_dir: str = _opt("/run/criservice", _absolute)
    netns_dir: str = _opt("/var/run/netns", _absolute)


@dataclass(frozen=True)
class HandlerConfig:
    path: str = _opt("", _nonempty)
    root: str = _opt("", lambda v: None if not v else _absolute(v))


@dataclass(frozen=True)
class RuntimeConfig:
    default_handler: str = _opt("runc", _nonempty)
    conmon: str = _opt("conmon", _nonempty)
    cgroup_driver: str = _opt("cgroupfs", _one_of("cgroupfs", "systemd"))
    handlers: dict[str, HandlerConfig] = field(default_factory=lambda: {
        "runc": HandlerConfig(path="runc"),
        "crun": HandlerConfig(path="crun"),
    })


@dataclass(frozen=True)
class CniConfig:
    conf_dir: str = _opt("/etc/cni/net.d", _absolute)
    bin_dirs: list[str] = _opt(["/usr/lib/cni", "/opt/cni/bin"], _each(_absolute))


@dataclass(frozen=True)
class RegistryConfig:
    mirrors: list[str] = _opt([], _each(_endpoint_url))
    insecure: bool = False


@dataclass(frozen=True)
class ImageConfig:
    root: str = _opt("", lambda v: None if not v else _absolute(v))
    pause_image: str = _opt("registry.k8s.io/pause:3.10", _nonempty)
    max_concurrent_downloads: int = _opt(3, _at_least(1))
    pull_progress_timeout: float = _opt(60.0, _at_least(1))
    max_layer_bytes: int = _opt(64 * 2**30, _at_least(1))
    registries: dict[str, RegistryConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamingConfig:
    address: str = _opt("127.0.0.1", _ip)
    port: int = _opt(0, _port)
    idle_timeout: float = _opt(14400.0, _at_least(1))
    # TLS for the streaming server: both files, or neither (plain HTTP on loopback).
    tls_cert_file: str = _opt("", _absolute_or_empty)
    tls_key_file: str = _opt("", _absolute_or_empty)


@dataclass(frozen=True)
class MetricsConfig:
    address: str = _opt("", _host_port_or_empty)


@dataclass(frozen=True)
class LogConfig:
    level: str = _opt("info", _one_of("debug", "info", "warning", "error"))
    format: str = _opt("text", _one_of("text", "json"))


@dataclass(frozen=True)
class Config:
    api: ApiConfig = _section(ApiConfig)
    paths: PathsConfig = _section(PathsConfig)
    runtime: RuntimeConfig = _section(RuntimeConfig)
    cni: CniConfig = _section(CniConfig)
    image: ImageConfig = _section(ImageConfig)
    streaming: StreamingConfig = _section(StreamingConfig)
    metrics: MetricsConfig = _section(MetricsConfig)
    log: LogConfig = _section(LogConfig)

    @property
    def image_root(self) -> str:
        return self.image.root or os.path.join(self.paths.state_dir, "images")

    def handler_root(self, name: str) -> str:
        return self.runtime.handlers[name].root or os.path.join(self.paths.run_dir, name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Loader:
    """Builds a Config from merged TOML data, remembering which file set each key."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.origins: dict[tuple[str, ...], str] = {}

    def merge(self, data: dict[str, Any], file: str, prefix: tuple[str, ...] = (),
              into: dict[str, Any] | None = None) -> None:
        target = self.data if into is None else into
        for key, value in data.items():
            path = prefix + (key,)
            self.origins[path] = file
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                self.merge(value, file, path, target[key])
            else:
                target[key] = value

    def origin(self, path: tuple[str, ...]) -> str:
        while path:
            if path in self.origins:
                return self.origins[path]
            path = path[:-1]
        return "<defaults>"

    def fail(self, path: tuple[str, ...], reason: str) -> typing.NoReturn:
        raise ConfigError(self.origin(path), ".".join(path), reason)

    def build(self, cls: type, data: Any, path: tuple[str, ...]) -> Any:
        if not isinstance(data, dict):
            self.fail(path, f"must be a table, got {_kind(data)}")
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                self.fail(path + (key,), f"unknown key (known keys: {', '.join(known)})")
        values = {name: self.convert(hints[name], data[name], path + (name,))
                  for name in known if name in data}
        instance = cls(**values)
        # Check defaults too: a new [runtime.handlers.X] table must still name its path.
        for name, f in known.items():
            check = f.metadata.get("check")
            if check is not None and (err := check(getattr(instance, name))) is not None:
                self.fail(path + (name,), err)
        return instance

    def convert(self, hint: Any, value: Any, path: tuple[str, ...]) -> Any:
        origin = typing.get_origin(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.build(hint, value, path)
        if origin is dict:
            _, item = typing.get_args(hint)
            if not isinstance(value, dict):
                self.fail(path, f"must be a table, got {_kind(value)}")
            return {k: self.convert(item, v, path + (k,)) for k, v in value.items()}
        if origin is list:
            (item,) = typing.get_args(hint)
            if not isinstance(value, list):
                self.fail(path, f"must be an array, got {_kind(value)}")
            return [self.convert(item, v, path + (f"[{i}]",)) for i, v in enumerate(value)]
        if hint is bool:
            if not isinstance(value, bool):
                self.fail(path, f"must be true or false, got {_kind(value)}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(path, f"must be an integer, got {_kind(value)}")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(path, f"must be a number of seconds, got {_kind(value)}")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                self.fail(path, f"must be a string, got {_kind(value)}")
            return value
        raise TypeError(f"config schema: unsupported type {hint!r}")  # a bug in this module


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "", f"invalid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot read: {e.strerror}") from None


def config_files(path: Path) -> list[Path]:
    """The main file (when present) and its drop-ins, in load order."""
    files = [path] if path.exists() else []
    dropins = Path(f"{path}.d")
    if dropins.is_dir():
        files += sorted(p for p in dropins.glob("*.toml") if p.is_file())
    return files


def load(path: Path | None = None) -> Config:
    """Load and check the configuration; `path=None` means the default location,
    which may be absent (then the defaults apply). An explicit path must exist."""
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    if explicit and not path.exists():
        raise ConfigError(str(path), "", "no such file")
    return _build([(str(f), _read_toml(f)) for f in config_files(path)])


def loads(text: str, name: str = "<string>") -> Config:
    """Load a configuration from TOML text over the defaults."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(name, "", f"invalid TOML: {e}") from None
    return _build([(name, data)])


def _build(layers: list[tuple[str, dict[str, Any]]]) -> Config:
    loader = _Loader()
    loader.data = Config().to_dict()
    for name, data in layers:
        loader.merge(data, name)
    config: Config = loader.build(Config, loader.data, ())
    if config.runtime.default_handler not in config.runtime.handlers:
        loader.fail(("runtime", "default_handler"),
                    f"names no handler in [runtime.handlers] "
                    f"(have: {', '.join(sorted(config.runtime.handlers))})")
    if bool(config.streaming.tls_cert_file) != bool(config.streaming.tls_key_file):
        loader.fail(("streaming", "tls_key_file" if config.streaming.tls_cert_file else "tls_cert_file"),
                    "TLS needs both tls_cert_file and tls_key_file")
    for host in config.image.registries:
        if not host or "/" in host:
            loader.fail(("image", "registries", host),
                        "must be a registry host such as docker.io or 127.0.0.1:5000")
    return config
