"""The `criservice` command: serve, config default, doctor, version."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from criservice import __version__, config as config_mod, daemon_log
from criservice.config_template import DEFAULT_CONFIG


def _load(path: str | None) -> config_mod.Config:
    try:
        return config_mod.load(Path(path) if path else None)
    except config_mod.ConfigError as e:
        print(f"criservice: bad configuration: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="criservice", description="A Kubernetes CRI runtime on runc.")
    parser.add_argument("--config", metavar="FILE",
                        help=f"configuration file (default {config_mod.DEFAULT_CONFIG_PATH}); "
                             "drop-ins are read from FILE.d/*.toml")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CRI daemon")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help="override [log] level")
    cfg = sub.add_parser("config", help="configuration helpers")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_sub.add_parser("default", help="print the default configuration with comments")
    cfg_sub.add_parser("check", help="load the configuration and report the first error")
    sub.add_parser("doctor", help="check that this host can run criservice")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)

    if args.command == "version":
        print(f"criservice {__version__} (CRI runtime.v1)")
        return 0
    if args.command == "config":
        if args.config_command == "default":
            sys.stdout.write(DEFAULT_CONFIG)
            return 0
        _load(args.config)
        print("configuration ok")
        return 0
    config = _load(args.config)
    if args.command == "doctor":
        from criservice.doctor import doctor
        return doctor(config)
    # serve
    level = args.log_level or config.log.level
    daemon_log.configure(level, config.log.format)
    # Nothing may land in whatever directory the daemon was started from (every
    # configured path is absolute, and so must be every path a request names).
    os.chdir("/")
    from runtime.crashpoints import ENV, unknown_armed
    if unknown_armed():
        print(f"criservice: {ENV} names no crash point: {', '.join(unknown_armed())}", file=sys.stderr)
        return 2
    from criservice.server import serve as serve_daemon
    from runtime.locks import LockHeld
    try:
        asyncio.run(serve_daemon(config))
    except LockHeld as e:
        print(f"criservice: cannot start: {e}", file=sys.stderr)
        return 1
    except config_mod.ConfigError as e:  # a file the configuration names is unusable
        print(f"criservice: bad configuration: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
