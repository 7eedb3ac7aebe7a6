"""What a pod asked for at RunPodSandbox, in runtime types.

The gRPC face converts the CRI PodSandboxConfig into a PodSpec once, when the pod
is made; the sandbox record keeps it, so nothing later decodes the CRI config
again and runtime/ never needs the face to read a pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from runtime.oci.specinput import NamespacesInput, PodSecurityInput


@dataclass(frozen=True)
class PortMapping:
    protocol: str          # "tcp", "udp" or "sctp"
    container_port: int
    host_port: int         # 0: not published on the host
    host_ip: str = ""


@dataclass(frozen=True)
class PodSpec:
    hostname: str = ""                  # as asked; the record keeps the one the pod got
    log_directory: str = ""             # absolute; every container log goes under it
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    port_mappings: tuple[PortMapping, ...] = ()
    host_network: bool = False
    host_ipc: bool = False
    host_pid: bool = False
    shared_pid: bool = False            # containers share one PID namespace: needs an infra process
    cgroup_parent: str = ""             # the kubelet's pod cgroup (a slice with the systemd driver)
    sysctls: Mapping[str, str] = field(default_factory=dict)
    security: PodSecurityInput = PodSecurityInput()
    # The pod's namespace options, which stand in for a container's own when it has
    # none; None when the config had none.
    namespaces: NamespacesInput | None = None
