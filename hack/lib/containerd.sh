# shellcheck shell=bash
# Sourced by the benchmarks (hack/bench-pull, hack/bench-pods, hack/bench-stats) and by
# hack/node-e2e-containerd.sh: a containerd beside criservice, with its own root,
# state, socket and CNI configuration directory, all under one directory, so that it
# never meets a system containerd. Two of them: Debian's containerd 1.6, and
# containerd 2.x built from the Go module proxy. Needs ROOT (the checkout) to be set.
#
#   containerd_install             apt-get install containerd when it is missing
#   containerd_start DIR [CONFLIST]  a fresh DIR; CONFLIST is copied into DIR/cni;
#                                  sets CTRD_ENDPOINT=unix://DIR/containerd.sock
#   containerd2_install            containerd and containerd-shim-runc-v2 $CTRD2_VERSION
#                                  into .tools/containerd-$CTRD2_VERSION (cached by version)
#   containerd2_start DIR [CONFLIST] the same for containerd 2.x (config version 3)
#   containerd_stop DIR            its pods removed, it and its shims stopped, DIR gone

# The local registry serves registry.k8s.io/* (path and tag kept), as it does for criservice.
CTRD_REGISTRY=${CTRD_REGISTRY:-127.0.0.1:5000}
CTRD_PAUSE_IMAGE=${CTRD_PAUSE_IMAGE:-registry.k8s.io/pause:3.10}

_ctrd_crictl() { "$ROOT/.tools/bin/crictl" --runtime-endpoint "unix://$1/containerd.sock" "${@:2}"; }

containerd_install() {
    # containerd is only needed by the benchmarks, not by the tests.
    command -v containerd >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends containerd >&2
}

# true when this process lacks CAP_SYS_RESOURCE (bit 24), so negative OOM scores would fail.
_ctrd_restrict_oom() {
    local eff
    eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
    if (( (16#$eff >> 24) & 1 )); then echo false; else echo true; fi
}

# shellcheck disable=SC2034  # CTRD_ENDPOINT is for the caller
containerd_start() {
    local c=$1 conflist=${2:-}
    rm -rf "$c" && mkdir -p "$c/cni"
    [[ -z $conflist ]] || cp "$conflist" "$c/cni/"
    cat > "$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$CTRD_PAUSE_IMAGE"
  # Without CAP_SYS_RESOURCE (some of these machines) runc cannot set the pause
  # container's -998; restricted, the score is clamped to containerd's own, as
  # criservice clamps it.
  restrict_oom_score_adj = $(_ctrd_restrict_oom)
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$c/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry.k8s.io"]
    endpoint = ["http://$CTRD_REGISTRY"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$CTRD_REGISTRY"]
    endpoint = ["http://$CTRD_REGISTRY"]
TOML
    _ctrd_run "$c" containerd
}

# containerd (binary $2) on the config in $1, until its CRI answers.
_ctrd_run() {
    local c=$1
    setsid "$2" --config "$c/config.toml" </dev/null >"$c/log" 2>&1 &
    echo $! > "$c/pid"
    CTRD_ENDPOINT=unix://$c/containerd.sock
    for _ in $(seq 100); do
        _ctrd_crictl "$c" --timeout 2s version >/dev/null 2>&1 && return
        kill -0 "$(cat "$c/pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "containerd did not start; its log:" >&2
    tail -n 20 "$c/log" >&2
    return 1
}

CTRD2_VERSION=${CTRD2_VERSION:-v2.2.9}
CTRD2_BIN=$ROOT/.tools/containerd-$CTRD2_VERSION

containerd2_install() {
    [[ -x $CTRD2_BIN/containerd && -x $CTRD2_BIN/containerd-shim-runc-v2 ]] && return 0
    echo "containerd: building $CTRD2_VERSION and its runc shim from the Go module proxy" >&2
    rm -rf "$CTRD2_BIN.tmp"
    if ! (cd /tmp && CGO_ENABLED=0 GOBIN=$CTRD2_BIN.tmp PATH=/usr/local/go/bin:$PATH go install \
            -tags "no_btrfs no_devmapper no_zfs" \
            "github.com/containerd/containerd/v2/cmd/containerd@$CTRD2_VERSION" \
            "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CTRD2_VERSION") >&2; then
        echo "containerd: github.com/containerd/containerd/v2@$CTRD2_VERSION did not build (is that version served by the Go proxy?)" >&2
        rm -rf "$CTRD2_BIN.tmp"
        return 1
    fi
    rm -rf "$CTRD2_BIN" && mv "$CTRD2_BIN.tmp" "$CTRD2_BIN"
}

# A registry's hosts.toml (containerd 2's registry config_path): pull and resolve
# through the local registry, over plain HTTP.
_ctrd2_mirror() {
    mkdir -p "$1/certs.d/$2"
    cat > "$1/certs.d/$2/hosts.toml" <<TOML
server = "http://$CTRD_REGISTRY"
[host."http://$CTRD_REGISTRY"]
  capabilities = ["pull", "resolve"]
TOML
}

containerd2_start() {
    local c=$1 conflist=${2:-} r
    rm -rf "$c" && mkdir -p "$c/cni"
    [[ -z $conflist ]] || cp "$conflist" "$c/cni/"
    for r in registry.k8s.io k8s.gcr.io gcr.io docker.io "$CTRD_REGISTRY"; do _ctrd2_mirror "$c" "$r"; done
    # runtime_path: the shim built beside it; containerd 2 would otherwise take the
    # first containerd-shim-runc-v2 on PATH, which may be Debian's 1.6 one.
    cat > "$c/config.toml" <<TOML
version = 3
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "$c/opt"
[plugins.'io.containerd.nri.v1.nri']
  socket_path = "$c/nri.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$CTRD_PAUSE_IMAGE"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$c/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = $(_ctrd_restrict_oom)
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "$CTRD2_BIN/containerd-shim-runc-v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$c/cni"
TOML
    _ctrd_run "$c" "$CTRD2_BIN/containerd"
}

# The pids of the shims serving the containerd whose socket is $1 (their -address argument).
_ctrd_shims() {
    local f
    for f in /proc/[0-9]*/cmdline; do
        { tr '\0' ' ' < "$f"; } 2>/dev/null | grep -q "^[^ ]*containerd-shim[^ ]* .*-address $1 " &&
            { f=${f#/proc/}; echo "${f%/cmdline}"; }
    done
    return 0
}

containerd_stop() {
    local c=$1 pid shim
    [[ -d $c ]] || return 0
    if [[ -S $c/containerd.sock ]] && _ctrd_crictl "$c" --timeout 2s version >/dev/null 2>&1; then
        # Through the CRI, so that CNI releases the addresses and network namespaces.
        _ctrd_crictl "$c" --timeout 120s rmp -af >/dev/null 2>&1 || true
    fi
    if [[ -s $c/pid ]] && pid=$(cat "$c/pid") && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Shims outlive containerd; any left (a failed removal) are ours: they name our socket.
    for shim in $(_ctrd_shims "$c/containerd.sock"); do kill -KILL "$shim" 2>/dev/null || true; done
    findmnt -rn -o TARGET | { grep -F "$c/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf "$c"
}
