# shellcheck shell=bash
# Sourced by the benchmarks (hack/bench-pull, hack/bench-pods): a containerd 1.6
# (Debian's package) beside criservice, with its own root, state, socket and CNI
# configuration directory, all under one directory, so that it never meets a
# system containerd. Needs ROOT (the checkout) to be set by the caller.
#
#   containerd_install             apt-get install containerd when it is missing
#   containerd_start DIR [CONFLIST]  a fresh DIR; CONFLIST is copied into DIR/cni;
#                                  sets CTRD_ENDPOINT=unix://DIR/containerd.sock
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
    setsid containerd --config "$c/config.toml" </dev/null >"$c/log" 2>&1 &
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
