#!/usr/bin/env bash
# Kubernetes' node conformance suite (test/e2e_node, [NodeConformance]) on criservice.
#   hack/node-e2e.sh                the CI focus (every area of the suite, bounded)
#   hack/node-e2e.sh --full         all [NodeConformance] specs but [Flaky], [Slow], [Serial]
#   hack/node-e2e.sh --focus REGEX  a focus of your own (still within [NodeConformance])
# e2e_node.test v1.37.2 (hack/install-k8s.sh) starts etcd and kube-apiserver in its
# own process and the kubelet next to its binary (.tools/bin/kubelet), pointed at a
# criservice of its own: a second hack/e2e-env.sh environment (own state, socket,
# bridge cri-node0 and 10.89.0.0/16) brought up and taken down here, sharing the local
# registry (the images come from hack/build-test-images.sh, so nothing is prepulled
# from elsewhere). NODE_E2E_RUNTIME_ENDPOINT names another runtime instead (and
# NODE_E2E_RUNTIME_PROCESS its process name; hack/node-e2e-containerd.sh does that
# for containerd 2.x); its kubelet must then be the only client making pods there.
# Reports (JUnit, JSON, the suite's log, a table per area) go to $NODE_E2E_REPORT_DIR
# (default _out/node-e2e).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/.tools/bin
# shellcheck source=hack/lib/kube-chains.sh
source "$ROOT/hack/lib/kube-chains.sh"
REPORT=${NODE_E2E_REPORT_DIR:-$ROOT/_out/node-e2e}
WORK=${NODE_E2E_DIR:-/var/tmp/criservice-node-e2e}
NODES=${NODE_E2E_PARALLEL:-2}
SKIP='\[Flaky\]|\[Slow\]|\[Serial\]'
# Specs that cannot pass on a host like this one (no systemd as PID 1, a kernel
# without the dummy netdev), each with the reason; the README lists them. They
# run wherever systemd is PID 1.
NOT_HERE=(
    # It makes a dummy link inside a privileged container; this kernel has no dummy
    # netdev (`ip link add d0 type dummy` fails on the host itself).
    'PrivilegedPod should enable privileged commands'
    # It expects the kubelet, runtime and misc system containers, cgroups that exist
    # only under systemd (elsewhere the suite would move every process of the machine).
    'Summary API when querying /stats/summary should report resource usage through the stats api'
)
if [[ ! -d /run/systemd/system ]]; then
    SKIP+=$(printf '|%s' "${NOT_HERE[@]}")
fi
# The CI focus: every area of the suite, about 12 minutes here with 2 ginkgo nodes.
# Of the probe specs (40 minutes of waiting for restarts that must not come) it
# takes the short ones.
CI_AREAS='Container Runtime|Pods should|Container Lifecycle Hook|Variable Expansion|Downward API|Secrets|ConfigMap|EmptyDir|Security Context|Kubelet when scheduling|Sysctls|PrivilegedPod|ImageID|Mirror|Lease|ContainerLogPath|Summary API|Networking|Pod conditions|Terminate Pods|Restartable Init'
CI_AREAS+='|Probing container (should be restarted with a /healthz|with readiness probe should not be ready before initial delay|should override timeoutGracePeriodSeconds)'
conformance() {   # the specs of $1 among [NodeConformance] (Go's regexp has no lookahead)
    echo "(($1).*\[NodeConformance\]|\[NodeConformance\].*($1))"
}
FOCUS=$(conformance "$CI_AREAS")
case ${1:-} in
    --full) FOCUS='\[NodeConformance\]' ;;
    --focus) FOCUS=$(conformance "$2") ;;
    "") ;;
    *) echo "usage: $0 [--full | --focus REGEX]" >&2; exit 2 ;;
esac

"$ROOT/hack/install-kubelet.sh"
"$ROOT/hack/install-k8s.sh"
# The kubelet's root directory is /var/lib/kubelet whatever the flags say, and it
# bind-mounts it onto itself: what was not there before goes afterwards.
KUBELET_ROOT=/var/lib/kubelet
had_kubelet_root=$([[ -e $KUBELET_ROOT ]] && echo 1 || true)
# The suite's kubelet makes its QoS and pod cgroups; the suite may end before its
# housekeeping removed the last pod's: what was not there before goes afterwards.
had_kubepods=$(compgen -G '/sys/fs/cgroup/*/kubepods' >/dev/null || [[ -e /sys/fs/cgroup/kubepods \
    || -e /sys/fs/cgroup/kubepods.slice ]] && echo 1 || true)
cleanup() {
    while read -r target; do umount -l "$target" 2>/dev/null || true
    done < <(awk -v dir="$KUBELET_ROOT" '$5 == dir || index($5, dir "/") == 1 {print $5}' /proc/self/mountinfo | tac)
    [[ -n $had_kubelet_root ]] || rm -rf --one-file-system "$KUBELET_ROOT"
    remove_kube_chains   # the suite's kubelet makes its iptables util chains
    if [[ -z $had_kubepods ]]; then
        if [[ -d /run/systemd/system ]]; then
            systemctl stop kubepods.slice 2>/dev/null || true
        fi
        find /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} + 2>/dev/null || true
    fi
    if [[ -z ${NODE_E2E_RUNTIME_ENDPOINT:-} ]]; then
        "$ROOT/hack/e2e-env.sh" down >/dev/null 2>&1 || true
    fi
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
rm -rf "$REPORT" "$WORK" && mkdir -p "$REPORT" "$WORK/bin"
if [[ -n ${NODE_E2E_RUNTIME_ENDPOINT:-} ]]; then
    CONTAINER_RUNTIME_ENDPOINT=$NODE_E2E_RUNTIME_ENDPOINT
else
    export E2E_DIR=$WORK/env E2E_BRIDGE=cri-node0 E2E_SUBNET=10.89.0.0/16 CRISERVICE_METRICS_PORT=9764
    # The RuntimeClass handler the suite's RuntimeClass and PodOverhead specs name, as
    # upstream's node e2e jobs configure containerd and CRI-O with it.
    mkdir -p "$E2E_DIR/criservice.toml.d"
    printf '[runtime.handlers.test-handler]\npath = "runc"\n' > "$E2E_DIR/criservice.toml.d/50-node-e2e.toml"
    CONTAINER_RUNTIME_ENDPOINT=$("$ROOT/hack/e2e-env.sh" up | sed -n 's/^CONTAINER_RUNTIME_ENDPOINT=//p')
fi
# The suite finds the kubelet next to its own binary and writes its kubeconfig, kubelet
# config and static pod directories there: copies of both in a directory of this run.
cp "$BIN/e2e_node.test" "$BIN/kubelet" "$WORK/bin/"
# When systemd-run is on PATH the suite starts the kubelet through it, even where
# systemd is not PID 1: a PATH without it, for this run only.
PATH_DIR=$WORK/path
mkdir -p "$PATH_DIR"
if [[ -d /run/systemd/system ]]; then
    run_path=$PATH
else
    for f in /usr/bin/*; do
        [[ ${f##*/} == systemd-run ]] || ln -s "$f" "$PATH_DIR/${f##*/}"
    done
    run_path=$PATH_DIR:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/local/go/bin
fi
kubelet_flags=()
if [[ ! -d /run/systemd/system ]]; then
    # The suite's default SystemCgroups=/system would move every process of the machine;
    # under systemd (the guest, upstream's VMs) the suite's system containers stay.
    kubelet_flags+=(--system-cgroups= --runtime-cgroups=)
fi
if [[ -d /run/systemd/system && -e $WORK/env/criservice.pid ]]; then
    # Under systemd the suite expects the runtime's system container, as upstream's jobs
    # name containerd's unit: the cgroup criservice runs in.
    kubelet_flags+=(--runtime-cgroups="$(awk -F: '$1 == "0" {print $3}' "/proc/$(cat "$WORK/env/criservice.pid")/cgroup")")
fi
if [[ ! -e /sys/fs/cgroup/cgroup.controllers ]]; then
    kubelet_flags+=(--fail-cgroupv1=false)   # hosts like this one still mount cgroup v1 (hybrid)
fi
# As deploy/kubelet/10-criservice.conf sets it: pod stats, network included, from
# criservice's ListPodSandboxStats (its pods have no sandbox process for cAdvisor). Given
# to the suite, which passes it on to the kubelet and skips what does not apply with it
# (the /metrics/cadvisor spec: those metrics then come from the CRI).
suite_flags=(--feature-gates=PodAndContainerStatsFromCRI=true)

echo "node-e2e: e2e_node.test $(cat "$BIN/.k8s-version") on $CONTAINER_RUNTIME_ENDPOINT; focus $FOCUS"
start=$(date +%s)
status=0
(
    cd "$WORK"
    PATH=$run_path "$BIN/ginkgo-k8s" --nodes="$NODES" --focus="$FOCUS" --skip="$SKIP" \
        --timeout=2h --output-dir="$REPORT" --junit-report=junit.xml --json-report=report.json \
        --no-color "$WORK/bin/e2e_node.test" -- \
        --container-runtime-endpoint="$CONTAINER_RUNTIME_ENDPOINT" \
        --image-service-endpoint="$CONTAINER_RUNTIME_ENDPOINT" \
        --container-runtime-process-name="${NODE_E2E_RUNTIME_PROCESS:-criservice}" --container-runtime-pid-file= \
        --prepull-images=false --report-dir="$REPORT" --node-name=criservice-node-e2e "${suite_flags[@]}" \
        --kubelet-flags="${kubelet_flags[*]}"
) 2>&1 | tee "$REPORT/node-e2e.log" || status=$?
"$ROOT/.venv/bin/python" "$ROOT/hack/critest_tally.py" "$REPORT/report.json" "node e2e area" --ran-only | tee "$REPORT/table.md" || status=1
echo "node-e2e: $(( $(date +%s) - start )) s; reports in $REPORT"
exit "$status"
