#!/usr/bin/env bash
# The environment that tests, benchmarks and people trying criservice run against.
#   hack/e2e-env.sh up     local registry with the test images, a CNI bridge
#                          config of its own, and a criservice on its own socket
#                          and state; prints CONTAINER_RUNTIME_ENDPOINT=...
#   hack/e2e-env.sh down   stops what `up` started and removes what it made
#   hack/e2e-env.sh env    prints the variables again (for eval)
#   hack/e2e-env.sh restart  the daemon only; pods and containers keep running
# E2E_CGROUP_DRIVER=systemd gives the daemon the systemd cgroup driver (the default is
# cgroupfs). Everything lives under $E2E_DIR (default /var/tmp/criservice-e2e). A second
# environment beside the first one needs its own E2E_DIR, E2E_BRIDGE, E2E_SUBNET
# and CRISERVICE_METRICS_PORT.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
E2E_DIR=${E2E_DIR:-/var/tmp/criservice-e2e}
REGISTRY=127.0.0.1:5000
BRIDGE=${E2E_BRIDGE:-cri-e2e0}
SUBNET=${E2E_SUBNET:-10.88.0.0/16}
SOCKET=$E2E_DIR/run/criservice.sock
PIDFILE=$E2E_DIR/criservice.pid
LOG=$E2E_DIR/criservice.log
CRICTL=$ROOT/.tools/bin/crictl

print_env() {
    echo "CONTAINER_RUNTIME_ENDPOINT=unix://$SOCKET"
    echo "IMAGE_SERVICE_ENDPOINT=unix://$SOCKET"
    echo "CRISERVICE_CONFIG=$E2E_DIR/criservice.toml"
    echo "CRISERVICE_LOG=$LOG"
    echo "CRISERVICE_REGISTRY=$REGISTRY"
}

answers() { "$CRICTL" --runtime-endpoint "unix://$SOCKET" --timeout 2s version >/dev/null 2>&1; }

write_config() {
    mkdir -p "$E2E_DIR/cni" "$E2E_DIR/run" "$E2E_DIR/state"
    # A bridge of its own inside this machine: no masquerade, nothing leaves the host.
    cat > "$E2E_DIR/cni/10-criservice-e2e.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$BRIDGE",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$E2E_DIR/cni-ipam",
        "routes": [{ "dst": "0.0.0.0/0" }],
        "ranges": [[{ "subnet": "$SUBNET" }]]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
    local mirror="mirrors = [\"http://$REGISTRY\"]"
    cat > "$E2E_DIR/criservice.toml" <<TOML
# Written by hack/e2e-env.sh: the test daemon, isolated from a system criservice.
[api]
socket = "$SOCKET"

[paths]
state_dir = "$E2E_DIR/state"
run_dir = "$E2E_DIR/run"
netns_dir = "$E2E_DIR/run/netns"

[cni]
conf_dir = "$E2E_DIR/cni"

[runtime]
cgroup_driver = "${E2E_CGROUP_DRIVER:-cgroupfs}"

[log]
level = "${CRISERVICE_LOG_LEVEL:-info}"

[metrics]
address = "127.0.0.1:${CRISERVICE_METRICS_PORT:-9763}"

# Every registry the conformance suite names is served by the local one, path and tag kept.
[image.registries."registry.k8s.io"]
$mirror
[image.registries."k8s.gcr.io"]
$mirror
[image.registries."gcr.io"]
$mirror
[image.registries."docker.io"]
$mirror
[image.registries."$REGISTRY"]
insecure = true
TOML
}

up() {
    "$ROOT/hack/install-deps.sh" >/dev/null
    mkdir -p "$E2E_DIR"
    if ! curl -sf "http://$REGISTRY/v2/" >/dev/null; then
        "$ROOT/hack/registry.sh" start >&2
        touch "$E2E_DIR/registry-started"
    fi
    # E2E_IMAGES_PUSHED: the registry's storage holds them already (hack/vm.sh's guest gets
    # a copy of the host's; it has neither network nor Go to build them).
    [[ -n ${E2E_IMAGES_PUSHED:-} ]] || "$ROOT/hack/build-test-images.sh" --push "$REGISTRY" >&2
    if [[ -s $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && answers; then
        print_env
        return
    fi
    write_config
    start_daemon
}

start_daemon() {
    setsid "$ROOT/.venv/bin/criservice" --config "$E2E_DIR/criservice.toml" serve \
        </dev/null >>"$LOG" 2>&1 &
    echo $! > "$PIDFILE"
    for _ in $(seq 150); do
        if answers; then print_env; return; fi
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
        sleep 0.2
    done
    echo "e2e-env: criservice did not come up; its log:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
}

stop_daemon() {
    if [[ -s $PIDFILE ]]; then
        pid=$(cat "$PIDFILE")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
        fi
    fi
}

# The daemon goes and comes back; pods and containers keep running.
restart() {
    stop_daemon
    start_daemon
}

down() {
    # Pods first, through the daemon, so that CNI releases their addresses.
    if answers; then
        "$CRICTL" --runtime-endpoint "unix://$SOCKET" --timeout 60s rmp -af >/dev/null 2>&1 || true
    fi
    stop_daemon
    # Whatever a crashed daemon left running (its namespaces are mounts, unmounted below).
    pkill -KILL -f "conmon .*$E2E_DIR/" 2>/dev/null || true
    if [[ -e $E2E_DIR/registry-started ]]; then
        "$ROOT/hack/registry.sh" stop --purge
    fi
    # Never let rm -rf walk into a mount a crashed daemon left (a pod's bind mounts
    # can lead to host directories): unmount everything below E2E_DIR first.
    findmnt -rn -o TARGET | { grep -F "$E2E_DIR/" || true; } | sort -r | while read -r m; do
        umount -l "$m" || true
    done
    # The bridge exists once a pod joined the network; it is ours to remove.
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE"; fi
    rm -rf "$E2E_DIR"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    restart) restart ;;
    env) print_env ;;
    *) echo "usage: $0 up|down|restart|env" >&2; exit 2 ;;
esac
