"""criservice: a CRI runtime.v1 server (the gRPC face; the machinery is in runtime/)."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("criservice")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"
