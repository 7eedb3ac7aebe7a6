"""Version, Status, RuntimeConfig and UpdateRuntimeConfig."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging

import grpc

from api import api_pb2 as pb
from criservice import __version__
from criservice.deps import Area
from runtime import cgroups, errors
from runtime.oci.features import handler_features
from runtime.oci.spec import detect_host
from runtime.readiness import network_readiness, runtime_readiness

log = logging.getLogger("criservice.runtime_info")

# The kubelet refuses a runtime whose Version.version is anything but this.
KUBELET_API_VERSION = "0.1.0"
RUNTIME_NAME = "criservice"
RUNTIME_API_VERSION = "v1"


class RuntimeInfo(Area):
    async def Version(self, request: pb.VersionRequest, context: grpc.aio.ServicerContext) -> pb.VersionResponse:
        return pb.VersionResponse(version=KUBELET_API_VERSION, runtime_name=RUNTIME_NAME,
                                  runtime_version=__version__, runtime_api_version=RUNTIME_API_VERSION)

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        cfg = self.deps.config
        runtime = await runtime_readiness(
            {name: h.path for name, h in cfg.runtime.handlers.items()},
            cfg.runtime.default_handler, cfg.runtime.conmon)
        network = network_readiness(cfg.cni.conf_dir, cfg.cni.bin_dirs)
        conditions = [
            pb.RuntimeCondition(type="RuntimeReady", status=runtime.condition.ready,
                                reason=runtime.condition.reason, message=runtime.condition.message),
            pb.RuntimeCondition(type="NetworkReady", status=network.ready,
                                reason=network.reason, message=network.message),
        ]
        # "" is the default handler; named handlers are listed only when usable.
        kernel = detect_host().kernel
        usable = runtime.usable_handlers
        found = await asyncio.gather(*(handler_features(h.binary.path, kernel) for h in usable))
        features = {h.name: pb.RuntimeHandlerFeatures(
            recursive_read_only_mounts=f.recursive_read_only_mounts, user_namespaces=f.user_namespaces)
            for h, f in zip(usable, found)}
        handlers = [pb.RuntimeHandler(name="", features=features.get(cfg.runtime.default_handler))] \
            if runtime.condition.ready else []
        handlers += [pb.RuntimeHandler(name=h.name, features=features[h.name]) for h in usable]
        # Supplemental groups: Merge and Strict both honoured, the user reported in ContainerStatus.
        # Bind mount options: nosuid, nodev, noexec and the like pass to the runtime.
        response = pb.StatusResponse(status=pb.RuntimeStatus(conditions=conditions), runtime_handlers=handlers,
                                     features=pb.RuntimeFeatures(supplemental_groups_policy=True,
                                                                 mount_options=True))
        if request.verbose:
            layout = cgroups.detect()
            response.info["config"] = json.dumps(cfg.to_dict())
            # An object, not a list: crictl only decodes info values that are JSON objects.
            response.info["ociRuntimes"] = json.dumps({
                h.name: {"default": h.default, "path": h.binary.path,
                         "version": h.binary.version, "error": h.binary.error} for h in runtime.handlers})
            if runtime.conmon is not None:
                response.info["conmon"] = json.dumps(
                    {"path": runtime.conmon.path, "version": runtime.conmon.version,
                     "error": runtime.conmon.error})
            response.info["cgroups"] = json.dumps(
                {"mode": layout.mode, "controllers": list(layout.controllers),
                 "driver": cfg.runtime.cgroup_driver})
            response.info["podCIDR"] = json.dumps(self.deps.settings.pod_cidr)
        return response

    async def RuntimeConfig(self, request: pb.RuntimeConfigRequest,
                            context: grpc.aio.ServicerContext) -> pb.RuntimeConfigResponse:
        driver = (pb.CgroupDriver.SYSTEMD if self.deps.config.runtime.cgroup_driver == "systemd"
                  else pb.CgroupDriver.CGROUPFS)
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    async def UpdateRuntimeConfig(self, request: pb.UpdateRuntimeConfigRequest,
                                  context: grpc.aio.ServicerContext) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        # The kubelet may send several CIDRs (dual stack) separated by commas.
        for part in filter(None, (c.strip() for c in cidr.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise errors.InvalidArgument(
                    f"runtime_config.network_config.pod_cidr: {part!r} is not a CIDR") from None
        if cidr != self.deps.settings.pod_cidr:
            self.deps.settings.pod_cidr = cidr
            log.info("pod CIDR updated", extra={"fields": {"pod_cidr": cidr}})
        return pb.UpdateRuntimeConfigResponse()
