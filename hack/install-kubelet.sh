#!/usr/bin/env bash
# Build the kubelet from the Go module proxy into .tools/bin/kubelet. Cached:
# nothing happens when .tools/bin/.kubelet-version already names $KUBE_VERSION.
#
#   hack/install-kubelet.sh            # KUBE_VERSION (default below)
#   KUBE_VERSION=v1.37.2 hack/install-kubelet.sh
#
# `go install k8s.io/kubernetes/cmd/kubelet@TAG` cannot work: k8s.io/kubernetes
# points its staging modules (k8s.io/api, client-go, kubelet, cri-api, ...) at
# ./staging/src with replace directives, which only apply in its own tree, and
# requires them at v0.0.0. So this builds from a throwaway wrapper module that
# requires k8s.io/kubernetes at the tag and replaces every staging module it
# requires with the published v0.MINOR.PATCH of the same release.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
BIN=$ROOT/.tools/bin
STAMP=$BIN/.kubelet-version
export PATH=/usr/local/go/bin:$PATH

if [[ -x $BIN/kubelet && "$(cat "$STAMP" 2>/dev/null)" == "$KUBE_VERSION" ]]; then
    exit 0
fi
command -v jq >/dev/null || { echo "install-kubelet: needs jq (hack/install-deps.sh)" >&2; exit 1; }

staging_version=v0.${KUBE_VERSION#v1.}
work=$(mktemp -d /tmp/kubelet-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "install-kubelet: building kubelet $KUBE_VERSION (staging modules $staging_version) from the Go module proxy"
info=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" || true)   # the JSON names the error
if [[ $(jq -r '.Error // empty' <<<"$info") ]]; then
    echo "install-kubelet: the Go module proxy does not serve k8s.io/kubernetes@$KUBE_VERSION:" >&2
    jq -r .Error <<<"$info" >&2
    exit 1
fi
kube_mod=$(jq -r .GoMod <<<"$info")

# The staging modules k8s.io/kubernetes requires: those it replaces with ./staging/src/...
mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// {print $1}' "$kube_mod")
mapfile -t required < <(awk '/^require[ (]/,/^\)/ {print $1}' "$kube_mod" | sort -u)
go_line=$(awk '$1 == "go" {print; exit}' "$kube_mod")
{
    echo "module criservice.local/kubelet-build"
    echo
    echo "$go_line"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do
        if printf '%s\n' "${required[@]}" | grep -qxF "$m"; then
            echo "	$m => $m $staging_version"
        fi
    done
    echo ")"
} > go.mod

# Resolve the kubelet's imports (and write go.sum) through the proxy, then build.
# The version variables are what `kubelet --version` prints and what the kubelet
# reports as its own version.
if ! go get "k8s.io/kubernetes/cmd/kubelet@$KUBE_VERSION" 2>"$work/go-get.log"; then
    cat "$work/go-get.log" >&2
    exit 1
fi
# The proxy's .info file has the tag's time (and, from newer proxies, its commit).
tag_info=$(jq -r .Info <<<"$info")
commit=$(jq -r '.Origin.Hash // empty' "$tag_info")
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(jq -r .Time "$tag_info")"
if [[ -n $commit ]]; then ldflags+=" -X $pkg.gitCommit=$commit"; fi
mkdir -p "$BIN"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BIN/kubelet.new" k8s.io/kubernetes/cmd/kubelet
mv "$BIN/kubelet.new" "$BIN/kubelet"
echo "$KUBE_VERSION" > "$STAMP"
echo "install-kubelet: $("$BIN/kubelet" --version) in $BIN/kubelet"
