#!/usr/bin/env bash
# Build the rest of Kubernetes from the Go module proxy into .tools/bin, for
# hack/local-cluster.sh and hack/node-e2e.sh (the kubelet is hack/install-kubelet.sh):
#   kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl
#   e2e_node.test (its manifests are embedded: the binary stands alone) and the ginkgo
#   CLI it pins, as ginkgo-k8s (.tools/bin/ginkgo is the one cri-tools pins, for critest)
#   etcd and etcdctl
# Cached by version: nothing is built when the stamps name the versions asked for.
#
#   hack/install-k8s.sh                 # KUBE_VERSION and ETCD_VERSION (defaults below)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
BIN=$ROOT/.tools/bin
export PATH=/usr/local/go/bin:$PATH
# shellcheck source=hack/lib/kube-module.sh
source "$ROOT/hack/lib/kube-module.sh"
command -v jq >/dev/null || { echo "install-k8s: needs jq (hack/install-deps.sh)" >&2; exit 1; }
mkdir -p "$BIN"

KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl e2e_node.test ginkgo-k8s)
have() {   # have STAMP VERSION BIN...: all built, at that version
    local stamp=$1 version=$2; shift 2
    [[ "$(cat "$BIN/$stamp" 2>/dev/null)" == "$version" ]] || return 1
    for b in "$@"; do [[ -x $BIN/$b ]] || return 1; done
}

work=$(mktemp -d /tmp/k8s-build.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! have .k8s-version "$KUBE_VERSION" "${KUBE_BINS[@]}"; then
    echo "install-k8s: building Kubernetes $KUBE_VERSION (${KUBE_BINS[*]}) from the Go module proxy"
    mkdir "$work/kube" && cd "$work/kube"
    kube_module "$work/kube" "$KUBE_VERSION"
    cmds=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
          k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl)
    # -t: e2e_node's test-only imports are part of what it builds.
    if ! go get -t "${cmds[@]/%/@$KUBE_VERSION}" "k8s.io/kubernetes/test/e2e_node@$KUBE_VERSION" \
            2>"$work/go-get.log"; then
        cat "$work/go-get.log" >&2
        exit 1
    fi
    ldflags=$(kube_ldflags "$KUBE_VERSION")
    mkdir "$work/out"
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$work/out/" "${cmds[@]}"
    CGO_ENABLED=0 go test -c -trimpath -ldflags "$ldflags" -o "$work/out/e2e_node.test" \
        k8s.io/kubernetes/test/e2e_node
    # The ginkgo CLI that runs e2e_node.test in parallel: the version Kubernetes pins.
    ginkgo=$(go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
    GOBIN=$work/ginkgo go install "github.com/onsi/ginkgo/v2/ginkgo@$ginkgo"
    mv "$work/ginkgo/ginkgo" "$work/out/ginkgo-k8s"
    mv "$work"/out/* "$BIN"/
    echo "$KUBE_VERSION" > "$BIN/.k8s-version"
fi

if ! have .etcd-version "$ETCD_VERSION" etcd etcdctl; then
    echo "install-k8s: building etcd $ETCD_VERSION from the Go module proxy"
    # go.etcd.io/etcd/server/v3 and etcdctl/v3 point their sibling modules at ../ with
    # replace directives; from a module of our own the versions they require apply.
    mkdir "$work/etcd" && cd "$work/etcd"
    printf 'module criservice.local/etcd-build\n\ngo 1.24\n' > go.mod
    if ! go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION" \
            2>"$work/go-get.log"; then
        echo "install-k8s: etcd $ETCD_VERSION cannot be had from the Go module proxy:" >&2
        cat "$work/go-get.log" >&2
        exit 1
    fi
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/etcd/etcd" go.etcd.io/etcd/server/v3
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/etcd/etcdctl" go.etcd.io/etcd/etcdctl/v3
    mv "$work/etcd/etcd" "$work/etcd/etcdctl" "$BIN"/
    echo "$ETCD_VERSION" > "$BIN/.etcd-version"
fi
echo "install-k8s: $("$BIN/kube-apiserver" --version), etcd $("$BIN/etcd" --version | awk 'NR==1 {print $3}') in $BIN"
