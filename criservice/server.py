"""Daemon start-up and shutdown: locks, directories, the gRPC server on its socket."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import stat

import grpc

from criservice import __version__, convert, services
from criservice.config import Config, ConfigError
from criservice.deps import Deps
from criservice.interceptors import ErrorMappingInterceptor
from criservice.prometheus import Metrics
from criservice.sdnotify import Notifier
from runtime.cni import CniNetwork
from runtime.cni_config import CniConfigError, load_network
from runtime.containers import ContainerManager
from runtime.events import EventHub
from runtime.images.puller import Puller, PullStats
from runtime.images.registry import RegistryClient
from runtime import binaries
from runtime.images.store import ImageStore
from runtime.images.unpack import UnpackLimits
from runtime.locks import PidLock
from runtime.oci.runc import RuncConmon
from runtime.oci.runtime import OCIRuntime
from runtime.pods import PodManager
from runtime.records import ContainerStore, SandboxStore
from runtime.snapshots import Snapshots
from runtime.stats import Stats
from runtime.state import StateDB
from runtime.streaming import StreamingServer

log = logging.getLogger("criservice.server")

# The kubelet sends and accepts up to 16 MiB (large ListContainers answers).
MAX_MESSAGE = 16 * 1024 * 1024
SHUTDOWN_GRACE = 10.0


def socket_lock_path(config: Config) -> str:
    return config.api.socket + ".lock"


def state_lock_path(config: Config) -> str:
    return os.path.join(config.paths.state_dir, "criservice.lock")


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.locks = [PidLock(socket_lock_path(config)), PidLock(state_lock_path(config))]
        self.server: grpc.aio.Server | None = None
        self.deps: Deps | None = None
        self._stop = asyncio.Event()
        self._locked = False  # only the lock holder may touch the socket

    def _prepare_dirs(self) -> None:
        for d in (self.config.paths.state_dir, self.config.paths.run_dir,
                  os.path.dirname(self.config.api.socket)):
            os.makedirs(d, mode=0o700, exist_ok=True)
        # The socket's directory is the access gate: only root may enter it.
        os.chmod(os.path.dirname(self.config.api.socket), 0o700)

    def _clear_stale_socket(self) -> None:
        path = self.config.api.socket
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise SystemExit(f"criservice: {path} exists and is not a socket; refusing to replace it")
        os.unlink(path)  # we hold the lock, so no live criservice serves it

    async def start(self) -> None:
        for lock in self.locks:
            lock.acquire()
        self._locked = True
        self._prepare_dirs()
        self._clear_stale_socket()
        metrics = Metrics()
        db = StateDB(os.path.join(self.config.paths.state_dir, "state.db"))
        self.deps = self._machinery(db, metrics)
        # Containers first: a pod's stop or removal that a crash interrupted needs them known.
        await self.deps.containers.recover()
        await self.deps.pods.recover(self.deps.containers.stop_all, self.deps.containers.remove_all)
        streaming = self.config.streaming
        self.deps.streaming = StreamingServer(streaming.address, streaming.port, idle_timeout=streaming.idle_timeout,
                                              tls=_tls_context(streaming.tls_cert_file, streaming.tls_key_file))
        await self.deps.streaming.start()
        self.server = grpc.aio.server(
            interceptors=[ErrorMappingInterceptor(metrics)],
            options=[("grpc.max_send_message_length", MAX_MESSAGE),
                     ("grpc.max_receive_message_length", MAX_MESSAGE)])
        services.register(self.server, self.deps)
        old_umask = os.umask(0o177)  # never a moment with a world-usable socket
        try:
            self.server.add_insecure_port("unix:" + self.config.api.socket)
            await self.server.start()
        finally:
            os.umask(old_umask)
        os.chmod(self.config.api.socket, 0o660)
        if self.config.metrics.address:
            metrics.serve(self.config.metrics.address)
        log.info("serving", extra={"fields": {
            "socket": self.config.api.socket, "version": __version__, "pid": os.getpid(),
            "metrics": self.config.metrics.address or "off"}})

    def _machinery(self, db: StateDB, metrics: Metrics) -> Deps:
        cfg = self.config
        images = ImageStore(cfg.image_root, db)
        images.recover()
        snapshots = Snapshots(images, os.path.join(cfg.paths.state_dir, "containers"))
        client = RegistryClient(cfg.image.registries, progress_timeout=cfg.image.pull_progress_timeout,
                                user_agent=f"criservice/{__version__}")

        def pulled(stats: PullStats, failure: BaseException | None) -> None:
            metrics.observe_pull(stats.seconds, stats.bytes, stats.layers_fetched, stats.layers_reused,
                                 failure is None)

        puller = Puller(images, client, max_concurrent_downloads=cfg.image.max_concurrent_downloads,
                        limits=UnpackLimits(max_bytes=cfg.image.max_layer_bytes,
                                            allow_devices=os.geteuid() == 0),
                        on_done=pulled)
        sandboxes, containers = SandboxStore(db, convert.LegacyRecords()), ContainerStore(db, convert.LegacyRecords())
        runtimes: dict[str, OCIRuntime] = {}
        conmon = binaries.resolve(cfg.runtime.conmon) or cfg.runtime.conmon
        for name, handler in cfg.runtime.handlers.items():
            path = binaries.resolve(handler.path)
            if path is None:
                log.warning("runtime handler not found; left out", extra={"fields": {
                    "handler": name, "path": handler.path}})
                continue
            runtimes[name] = RuncConmon(name, path, cfg.handler_root(name), conmon,
                                        os.path.join(cfg.paths.run_dir, "conmon", name))
        from criservice.observe import lifecycle_listener, state_metrics
        hub, stats = EventHub(), Stats(snapshots.root)
        on_event = lifecycle_listener(hub, stats, sandboxes, containers)
        workloads = ContainerManager(containers, sandboxes, images, snapshots, puller, runtimes,
                                     cgroup_driver=cfg.runtime.cgroup_driver, pause_image=cfg.image.pause_image,
                                     on_oom=metrics.observe_oom, on_event=on_event)
        pods = PodManager(sandboxes, run_dir=cfg.paths.run_dir, netns_dir=cfg.paths.netns_dir,
                          network=self._network, infra=workloads, cgroup_driver=cfg.runtime.cgroup_driver,
                          on_phases=metrics.observe_pod_phases,
                          on_event=on_event)
        metrics.watch(state_metrics(sandboxes, containers, hub))
        return Deps(cfg, db, metrics, images, puller, snapshots, pod_records=sandboxes, container_records=containers,
                    pods=pods, containers=workloads, stats=stats, events=hub)

    def _network(self) -> CniNetwork:
        """The pod network as configured now: a changed conflist applies to the next pod."""
        cfg = self.config
        try:
            network = load_network(cfg.cni.conf_dir)
        except CniConfigError as e:
            from runtime import errors
            raise errors.FailedPrecondition(f"the pod network is not ready: {e}") from None
        return CniNetwork(network, cfg.cni.bin_dirs, os.path.join(cfg.paths.state_dir, "cni-cache"))

    def request_stop(self, signum: int | None = None) -> None:
        if signum is not None:
            log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(SHUTDOWN_GRACE)
        if self._locked:
            try:
                os.unlink(self.config.api.socket)
            except FileNotFoundError:
                pass
        if self.deps is not None:
            if self.deps.streaming is not None:
                await self.deps.streaming.close()
            await self.deps.containers.close()
            self.deps.stats.close()
            await self.deps.puller.close()
            await self.deps.puller.client.aclose()
            self.deps.db.close()
        for lock in reversed(self.locks):
            lock.release()
        if self._locked:
            log.info("stopped")


async def serve(config: Config) -> None:
    systemd = Notifier.from_environment()
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop, sig)
    try:
        await daemon.start()
        # Ready once the socket serves (recovery is done by then): the kubelet's unit
        # orders itself after this one.
        systemd.send("READY=1", f"STATUS=serving on {config.api.socket}", f"MAINPID={os.getpid()}")
        await daemon.wait()
    finally:
        systemd.send("STOPPING=1", "STATUS=stopping")
        await daemon.stop()


def _tls_context(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    if not cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError("<config>", "streaming.tls_cert_file", f"cannot load {cert_file} / {key_file}: {e}") \
            from None
    return context
