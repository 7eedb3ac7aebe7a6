"""The gRPC face, served in-process on a unix socket (no root needed)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpc
import pytest

from api import api_pb2 as pb, api_pb2_grpc
from criservice import services
from criservice.server import Daemon


async def test_version(channel: grpc.aio.Channel) -> None:
    v = await api_pb2_grpc.RuntimeServiceStub(channel).Version(pb.VersionRequest(version="v1"))
    assert (v.version, v.runtime_name, v.runtime_api_version) == ("0.1.0", "criservice", "v1")
    assert v.runtime_version


async def test_status_conditions_and_handlers(channel: grpc.aio.Channel, daemon: Daemon) -> None:
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    s = await rt.Status(pb.StatusRequest())
    cond = {c.type: c for c in s.status.conditions}
    assert cond["RuntimeReady"].status is True
    assert cond["NetworkReady"].status is False
    assert cond["NetworkReady"].reason == "NetworkPluginNotReady"
    assert "does not exist" in cond["NetworkReady"].message
    assert [h.name for h in s.runtime_handlers] == ["", "runc"]  # crun's binary is missing
    assert not s.info  # only with verbose

    verbose = await rt.Status(pb.StatusRequest(verbose=True))
    assert json.loads(verbose.info["config"])["api"]["socket"] == daemon.config.api.socket
    handlers = json.loads(verbose.info["ociRuntimes"])
    assert "not found" in handlers["crun"]["error"]


async def test_network_ready_with_a_config_and_plugins(channel: grpc.aio.Channel, daemon: Daemon,
                                                      short_tmp: Path) -> None:
    conf = Path(daemon.config.cni.conf_dir)
    conf.mkdir()
    (conf / "10-n.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "true"}]}))
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    s = await rt.Status(pb.StatusRequest())
    net = [c for c in s.status.conditions if c.type == "NetworkReady"][0]
    # "true" is in no configured bin dir: still not ready, and the plugin is named.
    assert not net.status and "true not found" in net.message


async def test_runtime_config_and_pod_cidr(channel: grpc.aio.Channel, daemon: Daemon) -> None:
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    r = await rt.RuntimeConfig(pb.RuntimeConfigRequest())
    assert r.linux.cgroup_driver == pb.CgroupDriver.CGROUPFS
    await rt.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(
        network_config=pb.NetworkConfig(pod_cidr="10.244.1.0/24,fd00::/64"))))
    s = await rt.Status(pb.StatusRequest(verbose=True))
    assert json.loads(s.info["podCIDR"]) == "10.244.1.0/24,fd00::/64"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await rt.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(
            network_config=pb.NetworkConfig(pod_cidr="10.244.1.0/33"))))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pod_cidr" in e.value.details() and "10.244.1.0/33" in e.value.details()


async def test_every_rpc_is_registered_and_unimplemented_ones_name_themselves(
        channel: grpc.aio.Channel) -> None:
    implemented = {"Version", "Status", "RuntimeConfig", "UpdateRuntimeConfig",
                   "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus",
                   "ListPodSandbox", "StreamPodSandboxes", "CreateContainer", "StartContainer",
                   "StopContainer", "RemoveContainer", "ContainerStatus", "ListContainers",
                   "StreamContainers", "ExecSync", "UpdateContainerResources",
                   "ReopenContainerLog", "ContainerStats", "ListContainerStats", "StreamContainerStats",
                   "PodSandboxStats", "ListPodSandboxStats", "StreamPodSandboxStats",
                   "GetContainerEvents", "ListMetricDescriptors", "ListPodSandboxMetrics",
                   "StreamPodSandboxMetrics", "CheckpointContainer", "UpdatePodSandboxResources",
                   "Exec", "Attach", "PortForward"} | {
        m.name for m in pb.DESCRIPTOR.services_by_name["ImageService"].methods}
    for service_name in ("RuntimeService", "ImageService"):
        service = pb.DESCRIPTOR.services_by_name[service_name]
        for m in service.methods:
            if m.name in implemented:
                continue
            request_cls = getattr(pb, m.input_type.name)
            path = f"/runtime.v1.{service_name}/{m.name}"
            response_cls = getattr(pb, m.output_type.name)
            kind = channel.unary_stream if m.server_streaming else channel.unary_unary
            call = kind(path, request_serializer=request_cls.SerializeToString,
                        response_deserializer=response_cls.FromString)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                if m.server_streaming:
                    async for _ in call(request_cls()):
                        pass
                else:
                    await call(request_cls())
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, m.name
            assert e.value.details() == f"{service_name}.{m.name} is not implemented yet"


def test_composed_services_cover_the_proto() -> None:
    for cls, name in ((services.RuntimeService, "RuntimeService"), (services.ImageService, "ImageService")):
        for m in pb.DESCRIPTOR.services_by_name[name].methods:
            assert callable(getattr(cls, m.name))


async def test_socket_and_directory_modes(daemon: Daemon) -> None:
    sock = daemon.config.api.socket
    assert os.stat(sock).st_mode & 0o777 == 0o660
    assert os.stat(os.path.dirname(sock)).st_mode & 0o777 == 0o700


async def test_metrics_count_operations(channel: grpc.aio.Channel, daemon: Daemon) -> None:
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    await rt.Version(pb.VersionRequest())
    with pytest.raises(grpc.aio.AioRpcError):
        await rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id="nope"))
    reg = daemon.deps.metrics.registry  # type: ignore[union-attr]
    assert reg.get_sample_value("criservice_grpc_operations_total",
                                {"method": "Version", "code": "OK"}) == 1
    assert reg.get_sample_value("criservice_grpc_errors_total",
                                {"method": "PodSandboxStatus", "code": "NOT_FOUND"}) == 1


async def test_image_fs_info_reports_both_filesystems(channel: grpc.aio.Channel, daemon: Daemon) -> None:
    root = Path(daemon.config.image_root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "blob").write_bytes(b"x" * 10000)
    info = await api_pb2_grpc.ImageServiceStub(channel).ImageFsInfo(pb.ImageFsInfoRequest())
    (images,), (containers,) = info.image_filesystems, info.container_filesystems
    assert images.fs_id.mountpoint == str(root)
    assert images.used_bytes.value >= 10000 and images.inodes_used.value >= 1
    assert containers.fs_id.mountpoint.endswith("/containers")
    assert images.timestamp > 0


def test_area_mixins_share_no_helper_names() -> None:
    # The areas are mixed into one class: a helper defined in two areas would
    # silently shadow the other one (this happened with `_list`).
    areas = [c for c in services.RuntimeService.__mro__[1:] if c.__module__.startswith("criservice.")]
    areas += [c for c in services.ImageService.__mro__[1:] if c.__module__.startswith("criservice.")]
    seen: dict[str, str] = {}
    for area in {a for a in areas if a.__name__ != "Area"}:
        for name in vars(area):
            if name.startswith("__"):
                continue
            assert name not in seen, f"{area.__name__}.{name} shadows {seen[name]}.{name}"
            seen[name] = area.__name__


async def test_container_events_stream_to_several_subscribers(channel: grpc.aio.Channel,
                                                              daemon: Daemon) -> None:
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    hub = daemon.deps.events  # type: ignore[union-attr]
    streams = [rt.GetContainerEvents(pb.GetEventsRequest()) for _ in range(2)]
    while hub.subscribers < 2:
        await asyncio.sleep(0.01)
    hub.publish("deleted", "c1", "gone-sandbox", 42)
    for stream in streams:
        event = await asyncio.wait_for(stream.read(), 5)
        assert event.container_id == "c1" and event.created_at == 42
        assert event.container_event_type == pb.ContainerEventType.CONTAINER_DELETED_EVENT
        assert not event.HasField("pod_sandbox_status")  # the sandbox is gone
        stream.cancel()
    reg = daemon.deps.metrics.registry  # type: ignore[union-attr]
    assert reg.get_sample_value("criservice_events_published_total") == 1
    for _ in range(100):
        if hub.subscribers == 0:
            break
        await asyncio.sleep(0.01)
    assert reg.get_sample_value("criservice_event_subscribers") == 0


def test_event_subscriptions_count_but_have_no_latency() -> None:
    from criservice.prometheus import Metrics
    m = Metrics()
    m.observe("GetContainerEvents", "CANCELLED", 3600.0)
    m.observe("Version", "OK", 0.001)
    assert m.registry.get_sample_value("criservice_grpc_operations_total",
                                       {"method": "GetContainerEvents", "code": "CANCELLED"}) == 1
    count = "criservice_grpc_operation_duration_seconds_count"
    assert m.registry.get_sample_value(count, {"method": "Version"}) == 1
    assert m.registry.get_sample_value(count, {"method": "GetContainerEvents"}) is None
