#!/usr/bin/env bash
# The node conformance suite of hack/node-e2e.sh, the same e2e_node.test, kubelet,
# flags, images and focus, on containerd 2.x instead of criservice: the anchor the
# README compares with.
#   hack/node-e2e-containerd.sh [--full | --focus REGEX]   (as hack/node-e2e.sh)
# containerd $CTRD2_VERSION (v2.2.9) and its runc shim are built from the Go module
# proxy into .tools/ (hack/lib/containerd.sh); it runs with its own root, state,
# socket and CNI configuration under $WORK, on bridge ctrd-node0 and 10.90.0.0/16,
# pulling through the local registry as criservice does. The local registry and the
# CNI configuration come from an e2e environment of its own (hack/e2e-env.sh), whose
# criservice stays idle. Reports go to _out/node-e2e-containerd.
# It uses /var/lib/kubelet as hack/node-e2e.sh does: never run the two at once.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${NODE_E2E_CTRD_DIR:-/var/tmp/criservice-node-e2e-containerd}
BRIDGE=ctrd-node0
SUBNET=10.90.0.0/16
# shellcheck source=hack/lib/containerd.sh
source "$ROOT/hack/lib/containerd.sh"
[[ $(id -u) == 0 ]] || { echo "node-e2e-containerd: run as root" >&2; exit 1; }
containerd2_install

export E2E_DIR=$WORK/env E2E_BRIDGE=cri-nodec0 E2E_SUBNET=10.91.0.0/16 CRISERVICE_METRICS_PORT=9765
cleanup() {
    containerd_stop "$WORK/containerd"
    ip link delete "$BRIDGE" 2>/dev/null || true
    "$ROOT/hack/e2e-env.sh" down >/dev/null 2>&1 || true
    # The kubelet's pod cgroups (its cgroup root is /), empty once containerd removed the pods.
    find /sys/fs/cgroup -depth -type d -path '*/kubepods*' -exec rmdir {} + 2>/dev/null || true
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK"
"$ROOT/hack/e2e-env.sh" up >/dev/null
# criservice's bridge configuration, on a bridge and subnet of containerd's own.
jq --arg bridge "$BRIDGE" --arg subnet "$SUBNET" --arg ipam "$WORK/containerd-ipam" '
    .name = $bridge | (.plugins[] | select(.type == "bridge")) |= (.bridge = $bridge
        | .ipam.dataDir = $ipam | .ipam.ranges = [[{subnet: $subnet}]])' \
    "$E2E_DIR"/cni/*.conflist > "$WORK/containerd.conflist"
containerd2_start "$WORK/containerd" "$WORK/containerd.conflist"
echo "node-e2e-containerd: $("$CTRD2_BIN/containerd" --version)"

status=0
NODE_E2E_RUNTIME_ENDPOINT=$CTRD_ENDPOINT NODE_E2E_RUNTIME_PROCESS=containerd \
    NODE_E2E_REPORT_DIR=${NODE_E2E_REPORT_DIR:-$ROOT/_out/node-e2e-containerd} \
    NODE_E2E_DIR=$WORK/node-e2e "$ROOT/hack/node-e2e.sh" "$@" || status=$?
exit "$status"
