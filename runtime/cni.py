"""Running the CNI plugins of one network configuration (CNI spec 1.0; STATUS from 1.1).

How this executor reads the spec, where the spec leaves a choice:
- Each plugin gets its configuration with `name`, `cniVersion`, `prevResult` and a
  `runtimeConfig` holding only the capability arguments it declares in its own
  `capabilities`; `capabilities` itself and `cni.dev/` keys are not passed on.
- CNI_ARGS always start with IgnoreUnknown=1, since plugins that parse CNI_ARGS into
  a fixed set of keys otherwise refuse the kubelet's K8S_POD_* keys.
- The final ADD result is cached as cache_dir/<container_id>-<ifname>.json together
  with the configuration, args and capability arguments ADD used. DEL and CHECK run
  that cached configuration, so they undo or check what ADD did even if the file in
  the configuration directory changed since. The cache is written atomically
  (rename) but not fsynced: after a crash the namespaces are gone anyway, and a DEL
  without prevResult still releases what the standard plugins hold (the IPAM
  reservation and the port-mapping chains are found by container id).
- DEL with no namespace left passes an empty CNI_NETNS, which the spec allows and
  bridge, host-local and portmap accept (tests/integration/test_pod_network.py).
- A failed ADD is not undone here: the caller runs delete(), as the spec asks of
  every runtime after an ADD, successful or not.
- The `loopback` plugin is unnecessary: runtime.namespaces.create_netns brings lo up.
- Plugins run with the daemon's environment (PATH finds iptables, for example) and
  the CNI_* variables, in their own process group, so a timeout also kills what a
  plugin started (an IPAM plugin, iptables). Their stdout is bounded; only the end
  of their stderr is kept, for error messages. Never through a shell.
- Parallel operations on different containers are fine (plugins lock their own
  stores); the caller must not run two operations on the same attachment at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from runtime.cni_config import NetworkConfig, find_plugin

log = logging.getLogger("criservice.cni")

DEFAULT_TIMEOUT = 60.0
MAX_STDOUT = 1 << 20          # a result is a few KiB; anything near this is a broken plugin
MAX_STDERR_KEPT = 16 << 10    # the end of stderr, for error messages
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CACHE_KIND = "criservice/cni-cache/v1"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_IFNAME = re.compile(r"[^/:\s]{1,15}")       # Linux interface names: < IFNAMSIZ, no '/' ':' or space
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class CniError(Exception):
    """A plugin failed (or could not be run); `code`/`msg`/`details` are its CNI error object."""

    def __init__(self, plugin: str, command: str, msg: str, *, code: int | None = None,
                 details: str = "", stderr: str = "") -> None:
        self.plugin, self.command, self.msg = plugin, command, msg
        self.code, self.details, self.stderr = code, details, stderr
        text = f"CNI plugin {plugin} {command} failed: {msg}"
        if details and details != msg:
            text += f": {details}"
        if code is not None:
            text += f" (CNI error code {code})"
        elif stderr:
            text += f" (stderr: {stderr.splitlines()[-1][:500]})"
        super().__init__(text)


class IPConfig(NamedTuple):
    address: str     # CIDR as the plugin gave it, e.g. "10.77.0.5/24"
    gateway: str     # "" when the plugin named none
    version: int     # 4 or 6


class Interface(NamedTuple):
    name: str
    mac: str
    sandbox: str     # the netns path for interfaces inside the pod, "" on the host


@dataclass(frozen=True)
class CniResult:
    cni_version: str
    ips: list[IPConfig]
    interfaces: list[Interface]
    routes: list[dict[str, Any]]
    dns: dict[str, Any]
    raw: dict[str, Any]


class _Conf(NamedTuple):
    name: str
    version: str
    plugins: list[dict[str, Any]]


@dataclass(frozen=True)
class _Attachment:
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    capabilities: dict[str, Any]


class CniNetwork:
    def __init__(self, network: NetworkConfig, bin_dirs: list[str], cache_dir: str, *,
                 timeout: float = DEFAULT_TIMEOUT, max_output: int = MAX_STDOUT) -> None:
        self.network = network
        self.name = network.name
        self.bin_dirs = list(bin_dirs)
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.max_output = max_output
        doc = json.loads(network.raw) if network.raw else {}
        self.cni_version = _select_version(network.cni_version, doc.get("cniVersions"))
        self.disable_check = doc.get("disableCheck") is True

    # ---- attachment operations --------------------------------------------------------

    async def add(self, container_id: str, netns: str, ifname: str = "eth0", *,
                  args: Mapping[str, str] | None = None,
                  capabilities: Mapping[str, Any] | None = None) -> CniResult:
        """ADD through every plugin in order; the final result is cached for DEL and CHECK."""
        if not netns:
            raise ValueError("CNI ADD needs the path of the network namespace")
        att = _attachment(container_id, netns, ifname, args or {}, capabilities or {})
        conf = self._current()
        result: dict[str, Any] | None = None
        last = ""
        for plugin in conf.plugins:
            last = plugin["type"]
            out = await self._invoke("ADD", conf, plugin, att, result)
            result = _decode_result(out, last, "ADD")
        if result is None:
            raise CniError(self.name, "ADD", "the network configuration has no plugins")
        try:
            parsed = parse_result(result, conf.version)
        except (KeyError, TypeError, ValueError) as e:
            raise CniError(last, "ADD", f"unusable result {json.dumps(result)[:500]}: {e}") from None
        await asyncio.to_thread(self._store, att, conf, result)
        return parsed

    async def delete(self, container_id: str, netns: str | None, ifname: str = "eth0", *,
                     args: Mapping[str, str] | None = None,
                     capabilities: Mapping[str, Any] | None = None) -> None:
        """DEL through every plugin in reverse order, then forget the cached result.

        Idempotent; `netns` None (the namespace is gone) passes an empty CNI_NETNS.
        `args`/`capabilities` None means those ADD used, from the cache.
        """
        _check_ids(container_id, ifname)  # before they name a cache file
        entry = await asyncio.to_thread(self._load, container_id, ifname)
        conf = _cached_conf(entry) or self._current()
        att = _attachment(container_id, netns or "", ifname,
                          args if args is not None else _cached(entry, "args"),
                          capabilities if capabilities is not None else _cached(entry, "capabilities"))
        # prevResult on DEL arrived with spec 0.4.0; older plugins do not expect it.
        prev = entry["result"] if entry is not None and _at_least(conf.version, "0.4.0") else None
        for plugin in reversed(conf.plugins):
            await self._invoke("DEL", conf, plugin, att, prev)
        await asyncio.to_thread(self._forget, container_id, ifname)

    async def check(self, container_id: str, netns: str, ifname: str = "eth0", *,
                    args: Mapping[str, str] | None = None,
                    capabilities: Mapping[str, Any] | None = None) -> None:
        """CHECK through every plugin with the cached ADD result; CniError if one objects.

        Nothing is run when the network sets disableCheck or predates CHECK (spec < 0.4.0).
        """
        _check_ids(container_id, ifname)
        entry = await asyncio.to_thread(self._load, container_id, ifname)
        if entry is None:
            raise CniError(self.name, "CHECK", f"no cached ADD result for {container_id}/{ifname}")
        conf = _cached_conf(entry) or self._current()
        if self.disable_check or not _at_least(conf.version, "0.4.0"):
            return
        att = _attachment(container_id, netns, ifname,
                          args if args is not None else _cached(entry, "args"),
                          capabilities if capabilities is not None else _cached(entry, "capabilities"))
        for plugin in conf.plugins:
            await self._invoke("CHECK", conf, plugin, att, entry["result"])

    async def cached_result(self, container_id: str, ifname: str = "eth0") -> CniResult | None:
        """The result ADD cached for this attachment (for a restarted daemon), if any."""
        _check_ids(container_id, ifname)
        entry = await asyncio.to_thread(self._load, container_id, ifname)
        if entry is None:
            return None
        conf = _cached_conf(entry) or self._current()
        return parse_result(entry["result"], conf.version)

    # ---- network operations ----------------------------------------------------------

    async def status(self) -> bool:
        """STATUS (CNI 1.1) on every plugin that supports it.

        CniError if a plugin is missing or reports it cannot serve ADD. Returns True
        when every plugin answered STATUS, False when some could not be asked
        (the network or the plugin predates 1.1): then only their presence was checked.
        """
        conf = self._current()
        paths = [(plugin, self._find(plugin["type"], "STATUS")) for plugin in conf.plugins]
        if not _at_least(conf.version, "1.1.0"):
            return False
        answered = True
        for plugin, path in paths:
            if conf.version not in await self._versions(plugin["type"], path, conf.version):
                answered = False
                continue
            await self._exec(plugin["type"], "STATUS", path, self._env("STATUS", None),
                             _request(conf, plugin, {}, None))
        return answered

    async def _versions(self, plugin_type: str, path: str, version: str) -> list[str]:
        """The spec versions a plugin supports (VERSION, which every plugin since 0.2.0 has)."""
        out = await self._exec(plugin_type, "VERSION", path, self._env("VERSION", None),
                               json.dumps({"cniVersion": version}).encode())
        doc = _decode_result(out, plugin_type, "VERSION")
        versions = doc.get("supportedVersions")
        return [v for v in versions if isinstance(v, str)] if isinstance(versions, list) else []

    # ---- running one plugin -----------------------------------------------------------

    def _current(self) -> _Conf:
        return _Conf(self.name, self.cni_version, self.network.plugins)

    async def _invoke(self, command: str, conf: _Conf, plugin: dict[str, Any], att: _Attachment,
                      prev: dict[str, Any] | None) -> bytes:
        path = self._find(plugin["type"], command)
        return await self._exec(plugin["type"], command, path, self._env(command, att),
                                _request(conf, plugin, att.capabilities, prev))

    def _find(self, plugin_type: Any, command: str) -> str:
        if (not isinstance(plugin_type, str) or not plugin_type or "/" in plugin_type
                or plugin_type in (".", "..")):
            raise CniError(str(plugin_type), command, "invalid plugin type")
        path = find_plugin(plugin_type, self.bin_dirs)
        if path is None:
            raise CniError(plugin_type, command, f"plugin not found in {':'.join(self.bin_dirs)}")
        return path

    def _env(self, command: str, att: _Attachment | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.setdefault("PATH", DEFAULT_PATH)
        env["CNI_COMMAND"] = command
        env["CNI_PATH"] = os.pathsep.join(self.bin_dirs)
        if att is not None:
            env.update(CNI_CONTAINERID=att.container_id, CNI_NETNS=att.netns,
                       CNI_IFNAME=att.ifname, CNI_ARGS=_cni_args(att.args))
        return env

    async def _exec(self, plugin_type: str, command: str, path: str, env: dict[str, str],
                    stdin: bytes) -> bytes:
        """Run one plugin; its stdout on success, CniError otherwise."""
        started = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                path, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, process_group=0)
        except OSError as e:
            raise CniError(plugin_type, command, f"cannot run {path}: {e.strerror}") from None
        try:
            async with asyncio.timeout(self.timeout):
                out, err, returncode = await _communicate(proc, stdin, self.max_output)
        except BaseException as e:
            # Timed out or cancelled: nothing of it may linger, including what it started
            # (the plugin itself may have exited while its IPAM child holds the pipes).
            _kill_group(proc.pid)
            await asyncio.shield(proc.wait())
            if isinstance(e, TimeoutError):
                raise CniError(plugin_type, command,
                               f"no answer within {self.timeout:g} s; killed") from None
            raise
        log.debug("cni plugin ran", extra={"fields": {
            "plugin": plugin_type, "command": command, "rc": returncode,
            "ms": round((time.perf_counter() - started) * 1000, 3)}})
        stderr = err.decode(errors="replace").strip()
        if out is None:
            raise CniError(plugin_type, command, f"wrote more than {self.max_output} bytes; killed",
                           stderr=stderr)
        if returncode != 0:
            raise _failure(plugin_type, command, returncode, out, stderr)
        return out

    # ---- the result cache -----------------------------------------------------------------

    def _cache_path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.cache_dir, f"{container_id}-{ifname}.json")

    def _store(self, att: _Attachment, conf: _Conf, result: dict[str, Any]) -> None:
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        entry = {"kind": CACHE_KIND, "containerId": att.container_id, "ifName": att.ifname,
                 "netns": att.netns, "args": att.args, "capabilities": att.capabilities,
                 "config": {"name": conf.name, "cniVersion": conf.version, "plugins": conf.plugins},
                 "result": result}
        path = self._cache_path(att.container_id, att.ifname)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)

    def _load(self, container_id: str, ifname: str) -> dict[str, Any] | None:
        path = self._cache_path(container_id, ifname)
        try:
            with open(path) as f:
                entry = json.load(f)
        except FileNotFoundError:
            return None
        except ValueError as e:
            # DEL must still run; it does so without prevResult, with today's configuration.
            log.warning("ignoring an unreadable CNI cache entry", extra={"fields": {
                "path": path, "error": str(e)}})
            return None
        if not isinstance(entry, dict) or entry.get("kind") != CACHE_KIND \
                or not isinstance(entry.get("result"), dict):
            log.warning("ignoring a CNI cache entry of unknown form", extra={"fields": {"path": path}})
            return None
        return entry

    def _forget(self, container_id: str, ifname: str) -> None:
        try:
            os.unlink(self._cache_path(container_id, ifname))
        except FileNotFoundError:
            pass  # DEL twice, or DEL after a failed ADD: nothing was cached


# ---- helpers -----------------------------------------------------------------------------


def parse_result(raw: dict[str, Any], version: str) -> CniResult:
    """The typed view of a result: spec 0.3.0+ (`ips`), or 0.1/0.2 (`ip4`/`ip6`)."""
    routes: list[dict[str, Any]] = list(raw.get("routes") or [])
    if "ip4" in raw or "ip6" in raw:
        ips = []
        for key, ver in (("ip4", 4), ("ip6", 6)):
            block = raw.get(key)
            if block:
                ips.append(IPConfig(str(block["ip"]), str(block.get("gateway") or ""), ver))
                routes += block.get("routes") or []
    else:
        ips = [_ip_config(entry) for entry in raw.get("ips") or []]
    interfaces = [Interface(str(i.get("name", "")), str(i.get("mac", "")), str(i.get("sandbox", "")))
                  for i in raw.get("interfaces") or []]
    return CniResult(str(raw.get("cniVersion") or version), ips, interfaces, routes,
                     dict(raw.get("dns") or {}), raw)


def _ip_config(entry: dict[str, Any]) -> IPConfig:
    address = str(entry["address"])
    return IPConfig(address, str(entry.get("gateway") or ""), ipaddress.ip_interface(address).version)


def _attachment(container_id: str, netns: str, ifname: str, args: Mapping[str, str],
                capabilities: Mapping[str, Any]) -> _Attachment:
    _check_ids(container_id, ifname)
    _cni_args(args)  # fail here, before any plugin ran, if the args cannot be passed
    return _Attachment(container_id, netns, ifname, dict(args), dict(capabilities))


def _check_ids(container_id: str, ifname: str) -> None:
    if not _CONTAINER_ID.fullmatch(container_id):
        raise ValueError(f"invalid CNI container id {container_id!r}")
    if not _IFNAME.fullmatch(ifname) or ifname in (".", ".."):
        raise ValueError(f"invalid interface name {ifname!r}")


def can_carry(text: str) -> bool:
    """Whether a key or value fits in CNI_ARGS ("K=V;K=V"): '=' and ';' are its separators."""
    return not any(c in text for c in "=;")


def _cni_args(args: Mapping[str, str]) -> str:
    pairs = {"IgnoreUnknown": "1", **args}
    for key, value in pairs.items():
        if not key or not can_carry(key) or not can_carry(value):
            raise ValueError(f"CNI_ARGS cannot carry {key!r}={value!r}: '=' and ';' are separators")
    return ";".join(f"{k}={v}" for k, v in pairs.items())


def _request(conf: _Conf, plugin: dict[str, Any], capabilities: Mapping[str, Any],
             prev: dict[str, Any] | None) -> bytes:
    req = {k: v for k, v in plugin.items() if k != "capabilities" and not k.startswith("cni.dev/")}
    req["cniVersion"] = conf.version
    req["name"] = conf.name
    declared = plugin.get("capabilities")
    if isinstance(declared, dict):
        runtime_config = {k: v for k, v in capabilities.items() if declared.get(k) is True}
        if runtime_config:
            req["runtimeConfig"] = runtime_config
    if prev is not None:
        req["prevResult"] = prev
    return json.dumps(req).encode()


def _decode_result(out: bytes, plugin_type: str, command: str) -> dict[str, Any]:
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        text = out[:500].decode(errors="replace")
        raise CniError(plugin_type, command, f"output is not a JSON result object: {text!r}")
    return doc


def _failure(plugin_type: str, command: str, returncode: int, out: bytes, stderr: str) -> CniError:
    """The plugin's own CNI error object (stdout, else stderr's last line) or its exit status."""
    for text in (out.decode(errors="replace").strip(), stderr, stderr.splitlines()[-1] if stderr else ""):
        error = _error_object(text)
        if error is not None:
            code = error.get("code")
            return CniError(plugin_type, command, str(error.get("msg") or "error"),
                            code=code if isinstance(code, int) else None,
                            details=str(error.get("details") or ""), stderr=stderr)
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return CniError(plugin_type, command, how, stderr=stderr)


def _error_object(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and ("code" in doc or "msg" in doc) else None


async def _communicate(proc: asyncio.subprocess.Process, data: bytes,
                       limit: int) -> tuple[bytes | None, bytes, int]:
    """Feed stdin, read stdout (None past `limit`, the plugin then killed) and stderr's end;
    the exit status."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_feed(proc.stdin, data))
        out = tg.create_task(_read_bounded(proc.stdout, limit, lambda: _kill_group(proc.pid)))
        err = tg.create_task(_read_tail(proc.stderr, MAX_STDERR_KEPT))
    returncode = await proc.wait()
    return out.result(), err.result(), returncode


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it exited without reading all its input; the exit status says why
    finally:
        stdin.close()


async def _read_bounded(stream: asyncio.StreamReader, limit: int,
                        on_overflow: Callable[[], None]) -> bytes | None:
    buf = bytearray()
    while chunk := await stream.read(65536):
        if len(buf) + len(chunk) > limit:
            on_overflow()
            return None
        buf += chunk
    return bytes(buf)


async def _read_tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    buf = bytearray()
    while chunk := await stream.read(65536):
        buf += chunk
        del buf[:-keep]
    return bytes(buf)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every process of the group has exited already


def _cached(entry: dict[str, Any] | None, key: str) -> dict[str, Any]:
    value = entry.get(key) if entry is not None else None
    return value if isinstance(value, dict) else {}


def _cached_conf(entry: dict[str, Any] | None) -> _Conf | None:
    config = entry.get("config") if entry is not None else None
    if not isinstance(config, dict) or not isinstance(config.get("plugins"), list):
        return None
    return _Conf(str(config.get("name", "")), str(config.get("cniVersion", "")), config["plugins"])


def _version_key(version: str) -> tuple[int, ...]:
    m = _VERSION.fullmatch(version)
    return tuple(int(g) for g in m.groups()) if m else (0, 1, 0)  # no version means 0.1.0


def _at_least(version: str, minimum: str) -> bool:
    return _version_key(version) >= _version_key(minimum)


def _select_version(declared: str, listed: Any) -> str:
    """The highest version we speak among cniVersion and cniVersions (spec 1.1)."""
    candidates = [declared] + ([v for v in listed if isinstance(v, str)] if isinstance(listed, list) else [])
    usable = [v for v in candidates if v in SUPPORTED_VERSIONS]
    return max(usable, key=_version_key) if usable else declared
