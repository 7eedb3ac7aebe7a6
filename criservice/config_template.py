"""The text `criservice config default` prints: every key, its default, and why.

A unit test checks that loading this text gives exactly `Config()`, so the two
cannot drift apart.
"""

DEFAULT_CONFIG = '''\
# criservice configuration. The daemon reads /etc/criservice/criservice.toml
# (or --config FILE), then every *.toml in criservice.toml.d/ next to it, in
# lexical order. Every key below shows its default; a missing file means all
# defaults. Unknown keys and bad values stop the daemon at start.

[api]
# The CRI gRPC socket. Its directory is made 0700 and the socket 0660, owned by root.
socket = "/run/criservice/criservice.sock"

[paths]
# Persistent state: the SQLite state database, container bundles.
state_dir = "/var/lib/criservice"
# Volatile state: locks, runtime roots, conmon sockets. Lost on reboot by design.
run_dir = "/run/criservice"
# Where pod network namespaces are pinned (as `ip netns` does, so `ip netns list` shows them).
netns_dir = "/var/run/netns"

[runtime]
# The handler used when a pod names no RuntimeClass handler.
default_handler = "runc"
# conmon holds each container's stdio, log file and exit code. A name is
# looked up on PATH.
conmon = "conmon"
# "cgroupfs" or "systemd"; the kubelet reads it through RuntimeConfig and must match.
cgroup_driver = "cgroupfs"

# OCI runtime handlers (Kubernetes RuntimeClass handler names). `path` is the
# binary (a name is looked up on PATH); `root` is its state directory, by
# default <run_dir>/<handler name>. A handler whose binary is missing is left
# out of Status, except the default handler, whose absence makes the runtime
# not ready.
[runtime.handlers.runc]
path = "runc"
root = ""

[runtime.handlers.crun]
path = "crun"
root = ""

[cni]
# The first *.conflist / *.conf / *.json here (in lexical order) is the pod network.
conf_dir = "/etc/cni/net.d"
# Where CNI plugin binaries are searched, in order.
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]

[image]
# Content store and unpacked layers; empty means <state_dir>/images.
root = ""
# The infra image, run only for pods whose containers share one PID namespace.
pause_image = "registry.k8s.io/pause:3.10"
# Layers fetched at once per pull.
max_concurrent_downloads = 3
# Seconds a pull may go without receiving a byte before it is cancelled.
pull_progress_timeout = 60.0
# The most bytes one layer may unpack to; a layer beyond it is refused (a
# decompression bomb cannot fill the disk). Default 64 GiB.
max_layer_bytes = 68719476736

# Registry mirrors and insecure registries, per registry host. Mirrors are
# tried in order, then the registry itself. An http:// mirror is plain HTTP.
# `insecure = true` allows plain HTTP and unverified TLS for the registry itself.
# Example:
#   [image.registries."docker.io"]
#   mirrors = ["http://127.0.0.1:5000"]
#   insecure = false

[streaming]
# Address of the exec/attach/port-forward server; port 0 picks a free port.
address = "127.0.0.1"
port = 0
# Seconds a streaming session may stay idle before it is closed (4 h, as the
# kubelet's streamingConnectionIdleTimeout and containerd's stream_idle_timeout).
idle_timeout = 14400.0
# Serve the streaming URLs over TLS with this certificate and key (PEM files);
# both empty: plain HTTP, which is what the kubelet uses on one node.
tls_cert_file = ""
tls_key_file = ""

[metrics]
# Prometheus endpoint as HOST:PORT, for example "127.0.0.1:9090"; empty is off.
address = ""

[log]
# debug, info, warning or error.
level = "info"
# "text" (one line per event, key=value pairs) or "json" (one object per line).
format = "text"
'''
