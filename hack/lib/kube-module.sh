# Sourced by hack/install-kubelet.sh and hack/install-k8s.sh: a throwaway Go module
# from which binaries of k8s.io/kubernetes build with the Go module proxy alone.
#
# `go install k8s.io/kubernetes/cmd/X@TAG` cannot work: k8s.io/kubernetes points its
# staging modules (k8s.io/api, client-go, kubelet, cri-api, ...) at ./staging/src with
# replace directives, which only apply in its own tree, and requires them at v0.0.0.
# The wrapper requires k8s.io/kubernetes at the tag and replaces every staging module
# it requires with the published v0.MINOR.PATCH of the same release.

# kube_module DIR VERSION: write DIR/go.mod; sets KUBE_INFO (the proxy's .info file).
# Exits with the proxy's own words when it does not serve that version.
kube_module() {
    local dir=$1 version=$2 info kube_mod go_line staging_version m
    staging_version=v0.${version#v1.}
    info=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$version" || true)   # the JSON names the error
    if [[ $(jq -r '.Error // empty' <<<"$info") ]]; then
        echo "the Go module proxy does not serve k8s.io/kubernetes@$version:" >&2
        jq -r .Error <<<"$info" >&2
        exit 1
    fi
    kube_mod=$(jq -r .GoMod <<<"$info")
    KUBE_INFO=$(jq -r .Info <<<"$info")
    local -a staging required
    mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// {print $1}' "$kube_mod")
    mapfile -t required < <(awk '/^require[ (]/,/^\)/ {print $1}' "$kube_mod" | sort -u)
    go_line=$(awk '$1 == "go" {print; exit}' "$kube_mod")
    {
        echo "module criservice.local/kube-build"
        echo
        echo "$go_line"
        echo
        echo "require k8s.io/kubernetes $version"
        echo
        echo "replace ("
        for m in "${staging[@]}"; do
            if printf '%s\n' "${required[@]}" | grep -qxF "$m"; then
                echo "	$m => $m $staging_version"
            fi
        done
        echo ")"
    } > "$dir/go.mod"
}

# kube_ldflags VERSION: what `X --version` prints and what components report as their
# version (the proxy's .info has the tag's time and, from newer proxies, its commit).
kube_ldflags() {
    local version=$1 commit minor pkg=k8s.io/component-base/version flags
    commit=$(jq -r '.Origin.Hash // empty' "$KUBE_INFO")
    minor=${version#v1.}; minor=${minor%%.*}
    flags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(jq -r .Time "$KUBE_INFO")"
    if [[ -n $commit ]]; then flags+=" -X $pkg.gitCommit=$commit"; fi
    echo "$flags"
}
