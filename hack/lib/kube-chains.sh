# Sourced by hack/local-cluster.sh and hack/node-e2e.sh: the iptables chains a kubelet
# and kube-proxy leave (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...) go when their node does.

remove_kube_chains() {
    local cmd table rule chain
    for cmd in iptables ip6tables; do
        command -v "$cmd" >/dev/null || continue
        for table in filter nat mangle; do
            # Jumps into KUBE- chains from the others first, then the chains themselves.
            while read -r rule; do
                eval "$cmd -t $table -D ${rule#-A }" || true
            done < <("$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-A" && $2 !~ /^KUBE-/ && / -j KUBE-/')
            for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
                "$cmd" -t "$table" -F "$chain"
            done
            for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
                "$cmd" -t "$table" -X "$chain"
            done
        done
    done
}
