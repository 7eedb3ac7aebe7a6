#!/usr/bin/env bash
# Build the kubelet from the Go module proxy into .tools/bin/kubelet. Cached:
# nothing happens when .tools/bin/.kubelet-version already names $KUBE_VERSION.
#
#   hack/install-kubelet.sh            # KUBE_VERSION (default below)
#   KUBE_VERSION=v1.37.2 hack/install-kubelet.sh
#
# The rest of Kubernetes (control plane, kubectl, e2e_node.test, etcd) is
# hack/install-k8s.sh; both build through hack/lib/kube-module.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
BIN=$ROOT/.tools/bin
STAMP=$BIN/.kubelet-version
export PATH=/usr/local/go/bin:$PATH
# shellcheck source=hack/lib/kube-module.sh
source "$ROOT/hack/lib/kube-module.sh"

if [[ -x $BIN/kubelet && "$(cat "$STAMP" 2>/dev/null)" == "$KUBE_VERSION" ]]; then
    exit 0
fi
command -v jq >/dev/null || { echo "install-kubelet: needs jq (hack/install-deps.sh)" >&2; exit 1; }

work=$(mktemp -d /tmp/kubelet-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "install-kubelet: building kubelet $KUBE_VERSION from the Go module proxy"
kube_module "$work" "$KUBE_VERSION"
# Resolve the kubelet's imports (and write go.sum) through the proxy, then build.
if ! go get "k8s.io/kubernetes/cmd/kubelet@$KUBE_VERSION" 2>"$work/go-get.log"; then
    cat "$work/go-get.log" >&2
    exit 1
fi
mkdir -p "$BIN"
CGO_ENABLED=0 go build -trimpath -ldflags "$(kube_ldflags "$KUBE_VERSION")" -o "$BIN/kubelet.new" \
    k8s.io/kubernetes/cmd/kubelet
mv "$BIN/kubelet.new" "$BIN/kubelet"
echo "$KUBE_VERSION" > "$STAMP"
echo "install-kubelet: $("$BIN/kubelet" --version) in $BIN/kubelet"
