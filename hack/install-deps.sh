#!/usr/bin/env bash
# Install everything criservice and its tests need on a Debian 12 host. Idempotent.
#   - Debian packages (runtimes, conmon, CNI plugins, registry and image tools)
#   - a venv at .venv with criservice installed editable (with dev extras)
#   - crictl, critest (cri-tools) and the ginkgo CLI built from the Go module proxy into .tools/bin
#   - the kubelet (hack/install-kubelet.sh), likewise
#   - the rest of Kubernetes and etcd for hack/local-cluster.sh (hack/install-k8s.sh)
# Nothing is downloaded from anywhere but Debian's mirrors, PyPI and the Go proxy.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRI_TOOLS_VERSION=v1.37.0
export PATH=/usr/local/go/bin:$PATH

# shellcheck source=hack/lib/packages.sh
source "$ROOT/hack/lib/packages.sh"

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install-deps: apt-get install ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's nginx and prometheus packages start services; the tests only take their binaries.
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now nginx prometheus >/dev/null 2>&1 || true
fi
pkill -x nginx 2>/dev/null || true

# Python: a venv with the project editable, so the daemon runs the checkout.
PY=${PYTHON:-python3}
if [[ ! -x $ROOT/.venv/bin/python ]]; then
    "$PY" -m venv "$ROOT/.venv"
fi
stamp=$ROOT/.venv/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)
if [[ ! -e $stamp ]]; then
    "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -e "${ROOT}[dev]"
    rm -f "$ROOT"/.venv/.installed-* && touch "$stamp"
fi

# cri-tools from the Go module proxy: crictl by go install, critest as a test binary.
BIN=$ROOT/.tools/bin
mkdir -p "$BIN"
if [[ ! -x $BIN/crictl || ! -x $BIN/ginkgo || "$(cat "$BIN/.cri-tools-version" 2>/dev/null)" != "$CRI_TOOLS_VERSION" ]]; then
    echo "install-deps: building crictl and critest ${CRI_TOOLS_VERSION}"
    (cd /tmp && GOBIN=$BIN go install "sigs.k8s.io/cri-tools/cmd/crictl@${CRI_TOOLS_VERSION}")
    src=$(cd /tmp && go mod download -json "sigs.k8s.io/cri-tools@${CRI_TOOLS_VERSION}" | jq -r .Dir)
    # The module zip has no vendor/, so resolve dependencies through the proxy (-mod=mod).
    (cd "$src" && go test -mod=mod -c ./cmd/critest -o "$BIN/critest")
    # `critest -parallel N` runs the ginkgo CLI: the version cri-tools itself pins.
    ginkgo=$(awk '$1 == "github.com/onsi/ginkgo/v2" {print $2}' "$src/go.mod")
    (cd /tmp && GOBIN=$BIN go install "github.com/onsi/ginkgo/v2/ginkgo@${ginkgo}")
    echo "$CRI_TOOLS_VERSION" > "$BIN/.cri-tools-version"
fi
# The kubelet for hack/kubelet-e2e.sh, built from the Go module proxy (cached by version).
"$ROOT/hack/install-kubelet.sh"
"$ROOT/hack/install-k8s.sh"
echo "install-deps: ok (venv $ROOT/.venv, tools $BIN)"
