#!/usr/bin/env bash
# A one-node cluster on criservice (hack/local-cluster.sh) driven through kubectl:
# tests/e2e/test_cluster.py. Brings the cluster up, runs the tests, takes it down and
# fails if anything of it is left on the host (pods, mounts, cgroups, iptables chains,
# the node's bridge, processes).
#   hack/cluster-e2e.sh [pytest args...]
# Uses the runtime of CONTAINER_RUNTIME_ENDPOINT when set (hack/e2e-env.sh's), else
# brings one up. The kubelet must be the only client making pods on it meanwhile.
# The log and the components' logs go to $CLUSTER_E2E_REPORT_DIR (_out/cluster-e2e).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPORT=${CLUSTER_E2E_REPORT_DIR:-$ROOT/_out/cluster-e2e}
export LOCAL_CLUSTER_DIR=${LOCAL_CLUSTER_DIR:-/var/tmp/criservice-cluster}
mkdir -p "$REPORT"

if [[ -z ${CONTAINER_RUNTIME_ENDPOINT:-} ]]; then
    trap '"$ROOT/hack/e2e-env.sh" down >/dev/null 2>&1' EXIT
    set -a
    # shellcheck disable=SC1090
    source <("$ROOT/hack/e2e-env.sh" up)
    set +a
fi

start=$(date +%s)
status=0
had_kubelet_root=$([[ -e /var/lib/kubelet ]] && echo 1 || true)
set -a
# shellcheck disable=SC1090
source <("$ROOT/hack/local-cluster.sh" up)
set +a
"$ROOT/.venv/bin/python" -m pytest -ra -p no:cacheprovider tests/e2e/test_cluster.py "$@" \
    2>&1 | tee "$REPORT/cluster-e2e.log" || status=$?
cp -r "$LOCAL_CLUSTER_DIR/logs" "$REPORT/" 2>/dev/null || true
"$ROOT/hack/local-cluster.sh" down

left=()
while read -r target; do left+=("mount $target"); done < <(
    awk -v dir="$LOCAL_CLUSTER_DIR" '$5 == dir || index($5, dir "/") == 1 {print $5}' /proc/self/mountinfo)
for d in /sys/fs/cgroup/*/criservice-cluster /sys/fs/cgroup/criservice-cluster; do
    [[ -d $d ]] && left+=("cgroup $d")
done
for cmd in iptables ip6tables; do
    for table in filter nat mangle; do
        while read -r chain; do left+=("$cmd -t $table $chain"); done < <(
            "$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}')
    done
done
ip route show 10.0.0.0/24 | grep -q . && left+=("the route to the service CIDR")
ip link show crs-node0 >/dev/null 2>&1 && left+=("bridge crs-node0")
[[ -z $had_kubelet_root && -e /var/lib/kubelet ]] && left+=("/var/lib/kubelet")
pods=$("$ROOT/.tools/bin/crictl" --runtime-endpoint "$CONTAINER_RUNTIME_ENDPOINT" pods -o json \
       | jq -r '.items[] | select(.labels["io.kubernetes.pod.uid"]) | .id')
[[ -n $pods ]] && left+=("pod sandboxes: $pods")
for p in etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet; do
    pgrep -f "$ROOT/.tools/bin/$p " >/dev/null && left+=("process $p")
done
if ((${#left[@]})); then
    printf 'cluster-e2e: left on the host: %s\n' "${left[@]}" >&2
    status=1
fi
echo "cluster-e2e: $(( $(date +%s) - start )) s; logs in $REPORT"
exit "$status"
