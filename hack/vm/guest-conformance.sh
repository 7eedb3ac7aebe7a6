#!/usr/bin/env bash
# The long runs on cgroup v2 under systemd, with the systemd cgroup driver, as real
# nodes run them (too slow under emulation for CI; their results go into the README):
#   hack/vm.sh conformance [critest|kubelet|node]...   (default: all)
# (hack/vm.sh pushes the test images into the host registry's storage first, which the
# guest copies.)
#   critest  the whole critest suite (hack/critest.sh), reports in _out/critest-guest
#   kubelet  the kubelet end-to-end run (hack/kubelet-e2e.sh) with cgroupDriver systemd,
#            which the kubelet takes from criservice, and upstream's failCgroupV1: true
#   node     the node conformance specs that need systemd as PID 1 (hack/node-e2e.sh
#            --focus, its own criservice with the systemd driver), reports in
#            _out/node-e2e-guest
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
runs=("$@")
((${#runs[@]})) || runs=(critest kubelet node)
start=$SECONDS
step() { echo "=== guest: $* ($((SECONDS - start)) s)"; }

step "systemd $(systemctl --version | awk 'NR == 1 {print $2}'), $(stat -fc %T /sys/fs/cgroup), the systemd cgroup driver"
trap '"$ROOT/hack/e2e-env.sh" down >/dev/null 2>&1 || true' EXIT
E2E_CGROUP_DRIVER=systemd E2E_IMAGES_PUSHED=1 "$ROOT/hack/e2e-env.sh" up > /tmp/e2e-env.sh || exit 1
set -a
# shellcheck disable=SC1091
source /tmp/e2e-env.sh
set +a
status=0
for run in "${runs[@]}"; do
    case $run in
        critest)
            step "critest, the whole suite"
            CRITEST_REPORT_DIR=$ROOT/_out/critest-guest "$ROOT/hack/critest.sh" || status=1 ;;
        kubelet)
            step "the kubelet end-to-end run"
            KUBELET_E2E_REPORT_DIR=$ROOT/_out/kubelet-e2e-guest "$ROOT/hack/kubelet-e2e.sh" || status=1 ;;
        node)
            step "node conformance: the specs that need systemd"
            if [[ -z $(ip route show default) ]]; then
                # The suite's API server picks its address from the default route, and the
                # guest has no NIC: a dummy link stands in, so nothing can leave the guest.
                ip link add crs-nodefault type dummy && ip addr add 10.253.0.1/24 dev crs-nodefault \
                    && ip link set crs-nodefault up && ip route add default dev crs-nodefault
            fi
            E2E_CGROUP_DRIVER=systemd E2E_IMAGES_PUSHED=1 NODE_E2E_REPORT_DIR=$ROOT/_out/node-e2e-guest \
                NODE_E2E_PARALLEL=1 \
                "$ROOT/hack/node-e2e.sh" --focus "${NODE_E2E_GUEST_FOCUS:-PrivilegedPod|Summary API}" || status=1 ;;
        *) echo "unknown run $run (critest, kubelet or node)"; status=2 ;;
    esac
done
step "done, status $status"
exit $status
