#!/usr/bin/env bash
# A one-node Kubernetes cluster on criservice, with a real control plane:
#   hack/local-cluster.sh up     etcd, kube-apiserver, kube-controller-manager and
#                                kube-scheduler on 127.0.0.1 (TLS throughout, the
#                                certificates and kubeconfigs kubeadm would make), then
#                                kube-proxy (iptables) and the kubelet on criservice with
#                                deploy/kubelet/10-criservice.conf; waits for the node to
#                                be Ready and prints KUBECONFIG=...
#   hack/local-cluster.sh down   stops it all and removes every pod, iptables rule,
#                                cgroup, mount and file it made
#   hack/local-cluster.sh env    prints the variables again
# The runtime is the one CONTAINER_RUNTIME_ENDPOINT names (hack/e2e-env.sh's, whose
# mirrors serve the test images); without it `up` brings one up and `down` takes it
# down. The kubelet must be the only client making pods there: it removes the others.
# Binaries come from hack/install-kubelet.sh and hack/install-k8s.sh (cached by version).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${LOCAL_CLUSTER_DIR:-/var/tmp/criservice-cluster}
BIN=$ROOT/.tools/bin
NODE=${LOCAL_CLUSTER_NODE:-criservice-node}
# The kubelet refuses a loopback node IP, and this machine's own interfaces are not
# ours to use: the node's address lives on a bridge of its own with no ports.
NODE_BRIDGE=${LOCAL_CLUSTER_BRIDGE:-crs-node0}
NODE_IP=${LOCAL_CLUSTER_NODE_IP:-10.77.0.1}
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1
POD_CIDR=${E2E_SUBNET:-10.88.0.0/16}
APISERVER=https://127.0.0.1:6443
CGROUP_ROOT=/criservice-cluster
KUBECONFIG_FILE=$DIR/admin.conf
PKI=$DIR/pki
# shellcheck source=hack/lib/kube-chains.sh
source "$ROOT/hack/lib/kube-chains.sh"

print_env() {
    echo "KUBECONFIG=$KUBECONFIG_FILE"
    echo "LOCAL_CLUSTER_DIR=$DIR"
    echo "LOCAL_CLUSTER_NODE=$NODE"
}

log() { echo "local-cluster: $*" >&2; }

start() {   # start NAME ARGV...: a detached process with its log and pid file in $DIR
    local name=$1; shift
    setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
    echo $! > "$DIR/pids/$name.pid"
}

wait_for() {   # wait_for SECONDS WHAT COMMAND...: poll until the command succeeds
    local seconds=$1 what=$2; shift 2
    local end=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > end)); then
            log "$what did not come up within ${seconds}s; the logs in $DIR/logs end with:"
            tail -n 15 "$DIR"/logs/*.log >&2 || true
            exit 1
        fi
        sleep 0.5
    done
}

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

cgroup_dirs() {   # the cgroup root in every mounted hierarchy (v1 controllers, named, unified)
    local h
    for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        [[ -d $h ]] && echo "${h%/}$CGROUP_ROOT"
    done | sort -u
}

make_cgroup_root() {
    # The kubelet refuses a cgroup root that does not exist; cpuset needs its CPUs and
    # memory nodes before anything can join a child.
    local d
    for d in $(cgroup_dirs); do
        [[ $d == /sys/fs/cgroup/unified/* ]] && continue
        mkdir -p "$d"
        if [[ $d == /sys/fs/cgroup/cpuset/* ]]; then
            cat /sys/fs/cgroup/cpuset/cpuset.cpus > "$d/cpuset.cpus"
            cat /sys/fs/cgroup/cpuset/cpuset.mems > "$d/cpuset.mems"
        fi
    done
}

write_configs() {
    mkdir -p "$DIR/kubelet.conf.d" "$DIR/pod-logs" "$DIR/kubelet"
    # JSON is YAML. What an operator sets for criservice comes from deploy/ (a
    # --config-dir drop-in); this file holds what makes it a node of this cluster.
    cat > "$DIR/kubelet.yaml" <<JSON
{
  "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
  "address": "$NODE_IP", "healthzBindAddress": "127.0.0.1", "readOnlyPort": 0,
  "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": true},
                     "x509": {"clientCAFile": "$PKI/ca.crt"}},
  "authorization": {"mode": "Webhook"},
  "cgroupRoot": "$CGROUP_ROOT", "failSwapOn": false, "makeIPTablesUtilChains": false,
  "podLogsDir": "$DIR/pod-logs", "volumePluginDir": "$DIR/volume-plugins",
  "resolvConf": "/etc/resolv.conf", "rotateCertificates": false, "serverTLSBootstrap": false,
  "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
}
JSON
    cp "$ROOT/deploy/kubelet/10-criservice.conf" "$DIR/kubelet.conf.d/"
    cat > "$DIR/kubelet.conf.d/90-local-cluster.conf" <<JSON
{
  "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
  "containerRuntimeEndpoint": "$CONTAINER_RUNTIME_ENDPOINT", "imageServiceEndpoint": "$CONTAINER_RUNTIME_ENDPOINT"
}
JSON
    cat > "$DIR/kube-proxy.yaml" <<JSON
{
  "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
  "mode": "iptables", "clusterCIDR": "$POD_CIDR", "hostnameOverride": "$NODE",
  "clientConnection": {"kubeconfig": "$DIR/kube-proxy.conf"},
  "bindAddress": "127.0.0.1", "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
  "conntrack": {"maxPerCore": 0},
  "nodePortAddresses": ["$NODE_IP/32"]
}
JSON
}

up() {
    # stdout is for the variables only (callers source it).
    "$ROOT/hack/install-kubelet.sh" >&2
    "$ROOT/hack/install-k8s.sh" >&2
    if [[ -z ${CONTAINER_RUNTIME_ENDPOINT:-} ]]; then
        set -a
        # shellcheck disable=SC1090
        source <("$ROOT/hack/e2e-env.sh" up)
        set +a
        mkdir -p "$DIR" && touch "$DIR/owns-e2e-env"
    fi
    if [[ -s $DIR/pids/kube-apiserver.pid ]] && kill -0 "$(cat "$DIR/pids/kube-apiserver.pid")" 2>/dev/null; then
        log "already up"; print_env; return
    fi
    mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/etcd"
    # The kubelet puts its device-plugin socket in /var/lib/kubelet whatever its root dir.
    [[ -e /var/lib/kubelet || -e $DIR/made-var-lib-kubelet ]] || touch "$DIR/made-var-lib-kubelet"
    if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
        ip link add "$NODE_BRIDGE" type bridge
        ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
    fi
    ip link set "$NODE_BRIDGE" up
    # ClusterIPs are reached through kube-proxy's DNAT; until a rule exists, a packet to
    # one must die here, not follow the default route off the machine.
    ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
    "$ROOT/.venv/bin/python" "$ROOT/hack/cluster_pki.py" "$DIR" "$NODE" "$NODE_IP" "$SERVICE_IP" "$APISERVER"
    write_configs
    make_cgroup_root

    start etcd "$BIN/etcd" --name "$NODE" --data-dir "$DIR/etcd" \
        --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
        --listen-peer-urls https://127.0.0.1:2380 --initial-advertise-peer-urls https://127.0.0.1:2380 \
        --initial-cluster "$NODE=https://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381 \
        --cert-file "$PKI/etcd/server.crt" --key-file "$PKI/etcd/server.key" \
        --trusted-ca-file "$PKI/etcd/ca.crt" --client-cert-auth \
        --peer-cert-file "$PKI/etcd/peer.crt" --peer-key-file "$PKI/etcd/peer.key" \
        --peer-trusted-ca-file "$PKI/etcd/ca.crt" --peer-client-cert-auth
    wait_for 60 etcd curl -sf http://127.0.0.1:2381/health

    start kube-apiserver "$BIN/kube-apiserver" --bind-address 127.0.0.1 --secure-port 6443 \
        --advertise-address "$NODE_IP" --allow-privileged=true \
        --etcd-servers https://127.0.0.1:2379 --etcd-cafile "$PKI/etcd/ca.crt" \
        --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" --authorization-mode Node,RBAC \
        --enable-admission-plugins NodeRestriction \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP \
        --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
        --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
        --requestheader-extra-headers-prefix X-Remote-Extra- --requestheader-group-headers X-Remote-Group \
        --requestheader-username-headers X-Remote-User \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
        --service-cluster-ip-range "$SERVICE_CIDR"
    wait_for 120 kube-apiserver "$BIN/kubectl" --kubeconfig "$DIR/super-admin.conf" get --raw /readyz
    # kubeadm's admin.conf is in kubeadm:cluster-admins, bound to cluster-admin here, as
    # kubeadm binds it; the apiserver's kubelet client certificate is in that group too.
    "$BIN/kubectl" --kubeconfig "$DIR/super-admin.conf" create clusterrolebinding kubeadm:cluster-admins \
        --clusterrole cluster-admin --group kubeadm:cluster-admins --dry-run=client -o json \
        | "$BIN/kubectl" --kubeconfig "$DIR/super-admin.conf" apply -f - >/dev/null

    start kube-controller-manager "$BIN/kube-controller-manager" --bind-address 127.0.0.1 \
        --kubeconfig "$DIR/controller-manager.conf" --authentication-kubeconfig "$DIR/controller-manager.conf" \
        --authorization-kubeconfig "$DIR/controller-manager.conf" --leader-elect=false \
        --client-ca-file "$PKI/ca.crt" --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
        --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --use-service-account-credentials=true --controllers '*,bootstrapsigner,tokencleaner' \
        --service-cluster-ip-range "$SERVICE_CIDR" --allocate-node-cidrs=false
    start kube-scheduler "$BIN/kube-scheduler" --bind-address 127.0.0.1 --leader-elect=false \
        --kubeconfig "$DIR/scheduler.conf" --authentication-kubeconfig "$DIR/scheduler.conf" \
        --authorization-kubeconfig "$DIR/scheduler.conf"
    start kube-proxy "$BIN/kube-proxy" --config "$DIR/kube-proxy.yaml"
    start kubelet "$BIN/kubelet" --config "$DIR/kubelet.yaml" --config-dir "$DIR/kubelet.conf.d" \
        --kubeconfig "$DIR/kubelet.conf" --root-dir "$DIR/kubelet" --cert-dir "$DIR/kubelet/pki" \
        --hostname-override "$NODE" --node-ip "$NODE_IP" --v=2
    wait_for 120 "the node" kubectl wait --for=condition=Ready "node/$NODE" --timeout=2s
    # Pods get a service account token: the controller must have made the default one.
    wait_for 60 "the default service account" kubectl get serviceaccount default
    log "node $NODE is Ready on $CONTAINER_RUNTIME_ENDPOINT ($(kubectl get node "$NODE" \
        -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}'))"
    print_env
}

stop_process() {
    local pidfile=$DIR/pids/$1.pid pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

down() {
    [[ -d $DIR ]] || { log "nothing to take down"; return; }
    local endpoint=${CONTAINER_RUNTIME_ENDPOINT:-}
    if [[ -z $endpoint && -e $DIR/owns-e2e-env ]]; then
        endpoint=$("$ROOT/hack/e2e-env.sh" env | sed -n 's/^CONTAINER_RUNTIME_ENDPOINT=//p')
    fi
    stop_process kubelet
    # Every pod the kubelet made goes through the runtime (it labels them with the pod UID).
    if [[ -n $endpoint ]]; then
        local crictl=("$BIN/crictl" --runtime-endpoint "$endpoint" --timeout 60s)
        for id in $("${crictl[@]}" pods -o json 2>/dev/null \
                    | jq -r '.items[] | select(.labels["io.kubernetes.pod.uid"]) | .id'); do
            "${crictl[@]}" rmp -f "$id" >/dev/null || log "could not remove pod sandbox $id"
        done
    fi
    local name
    for name in kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd; do
        stop_process "$name"
    done
    # kube-proxy's own clean-up removes every chain and rule it wrote; the kubelet's
    # KUBE-FIREWALL (and anything else named KUBE-) goes after it.
    if [[ -x $BIN/kube-proxy ]]; then
        "$BIN/kube-proxy" --cleanup --config "$DIR/kube-proxy.yaml" >>"$DIR/logs/kube-proxy.log" 2>&1 || true
    fi
    remove_kube_chains
    local target d
    while read -r target; do umount -l "$target" 2>/dev/null || true
    done < <(awk -v dir="$DIR" '$5 == dir || index($5, dir "/") == 1 {print $5}' /proc/self/mountinfo | tac)
    for d in $(cgroup_dirs); do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    if [[ -d /var/log/containers ]]; then
        find /var/log/containers -maxdepth 1 -type l -lname "$DIR/pod-logs/*" -delete
    fi
    ip link delete "$NODE_BRIDGE" 2>/dev/null || true
    if [[ -e $DIR/made-var-lib-kubelet ]]; then
        rm -rf --one-file-system /var/lib/kubelet
    fi
    if [[ -e $DIR/owns-e2e-env ]]; then
        "$ROOT/hack/e2e-env.sh" down >/dev/null
    fi
    rm -rf --one-file-system "$DIR"
    log "down"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    env) print_env ;;
    *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
