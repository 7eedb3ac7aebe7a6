# shellcheck shell=bash
# The images of the Kubernetes node e2e suite (e2e_node.test v1.37.2): sourced by
# hack/build-test-images.sh, whose helpers, layout, caching and pinned times it uses; not
# run on its own. The list is test/utils/image/manifest.go and test/e2e_node/image_list.go
# of k8s.io/kubernetes at KUBE_VERSION; each image follows test/images/<name> there.
#
#   registry.k8s.io/e2e-test-images/busybox:1.37.0-2      busybox (see "busybox-1.37" below)
#   registry.k8s.io/e2e-test-images/nginx:1.27.0-2, :1.28.0-2   the critest nginx
#   registry.k8s.io/e2e-test-images/nonewprivs:1.4        the critest nonewprivs
#   registry.k8s.io/pause:3.10.2                          a pause of its own (see below)
#   registry.k8s.io/e2e-test-images/nonroot:1.5           busybox-1.37, USER 1234
#   registry.k8s.io/e2e-test-images/agnhost:2.66.1, :2.55 agnhost built from the module
#   registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1, perl:5.26, ipc-utils:1.4
#
# Not built: what no [NodeConformance] spec of KUBE_VERSION runs, though the suite's
# prepull list names some (hack/node-e2e.sh passes --prepull-images=false): the node-perf
# workloads, etcd, volume/nfs, kitten and nautilus (image volumes), sample-device-plugin,
# node-problem-detector; and busybox by the digest image_list.go pins, which a rebuilt
# image cannot have.
#
# Binaries that are compiled here are cached in $CACHE_DIR/built/<name>-<key>, the key
# being a hash of everything that goes into them (sources, versions, the recipe itself),
# so a warm run compiles nothing; the copies in the images are tracked like host files.
[[ ${BASH_SOURCE[0]} != "$0" ]] || { echo "$0: sourced by hack/build-test-images.sh; run that" >&2; exit 2; }

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
AGNHOST_VERSION=2.66.1        # test/images/agnhost/VERSION at KUBE_VERSION
COREDNS_VERSION=v1.6.2        # what agnhost's Dockerfile ADDs
BUILT=$CACHE_DIR/built
NODE_DEBROOT=$WORK/node-debs  # the .debs below, unpacked together
# Tools the host does not have: taken from their .debs with the libraries they need
# that the host lacks too (ldd resolves the rest on the host, as for nginx).
NODE_DEBS=(netcat-openbsd socat iperf bind9-dnsutils bind9-host bind9-libs
    libwrap0 libjemalloc2 libmaxminddb0 libfstrm0 liblmdb0)
# Perl as a tree of its own (perl-base alone lacks most of the standard library).
PERL_DEBS=(perl-base perl-modules-5.36 libperl5.36)

export PATH=/usr/local/go/bin:$PATH
for tool in go make patch bzip2 xz sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found; run hack/install-deps.sh"
done
for f in /usr/bin/bash /usr/bin/curl /usr/bin/ip /usr/bin/ss /usr/bin/ipcmk /usr/bin/ipcrm \
    /usr/bin/lsipc /usr/bin/hostname /etc/services /etc/protocols; do
    [[ -e $f ]] || die "$f missing (bash curl iproute2 util-linux hostname netbase)"
done

# key_of WORDS...: a short hash naming one cached build.
key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------------------------------
# busybox that keeps every environment variable
#
# Debian's busybox ash drops variables whose names are not shell identifiers (data-1,
# a.b) from the environment it starts with: Debian reverts upstream's 9c143ce5 ("ash:
# retain envvars with bad names in initial environment") and keeps the behaviour only
# behind CONFIG_FEATURE_DI_ENV_HACK, on in its installer build and off in the .deb (and in
# busybox-static, trixie's 1.37 as well). Upstream's busybox image keeps them, and the
# suite's "ConfigMap/Secrets should be consumable via the environment" run `sh -c env`.
# dash, mksh and posh drop them too; bash keeps them but cannot be the image's sh: the
# suite checks ash's own words ("/bin/sh: can't create /file: Read-only file system").
# So: the same Debian source and patches, with that one option on, configured as
# upstream's image is (busybox's defconfig): Debian's .deb configuration leaves out
# applets the suite runs, such as nmeter, whose '%3t' gives the lifecycle specs their
# milliseconds.

# fetch_source PKG VERSION: set FETCHED_DSC to the path of PKG's .dsc at VERSION (no epoch
# in the name), downloading it and its files once into $DEBS/src with apt-get, from the
# deb-src twins of the apt sources that serve PKG's binary package.
fetch_source() {
    local pkg=$1 version=$2 dsc apt_dir
    dsc=$DEBS/src/${pkg}_${version#*:}.dsc
    if [[ ! -e $dsc ]]; then
        apt_dir=$CACHE_DIR/apt-src
        mkdir -p "$DEBS/src" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
        apt-cache policy "$pkg" | awk '$1 ~ /^[0-9]+$/ && $NF == "Packages" {
            split($3, sc, "/"); print "deb-src", $2, sc[1], sc[2] }' | sort -u >"$apt_dir/sources.list"
        [[ -s $apt_dir/sources.list ]] || die "no apt source serves $pkg"
        local apt_opts=(-q -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
        log "apt-get source $pkg=$version"
        apt-get "${apt_opts[@]}" update >&2
        (cd "$DEBS/src" && apt-get "${apt_opts[@]}" source --download-only "$pkg=$version" >&2)
        [[ -e $dsc ]] || die "apt-get source $pkg=$version gave no $dsc"
    fi
    FETCHED_DSC=$dsc
}

# dsc_files DSC: the file names its Checksums-Sha256 field lists.
dsc_files() { awk '/^Checksums-Sha256:/ {f = 1; next} /^[^ ]/ {f = 0} f {print $3}' "$1"; }

# build_busybox_envkeep OUT: from BB_DSC (source version BB_SRC_VERSION).
build_busybox_envkeep() {
    local out=$1 dsc=$BB_DSC version=$BB_SRC_VERSION src=$WORK/busybox-build f p
    rm -rf "$src" && mkdir -p "$src"
    for f in $(dsc_files "$dsc"); do
        case $f in
        *.orig.tar.*) tar -xf "$DEBS/src/$f" -C "$src" --strip-components=1 ;;
        *.debian.tar.*) tar -xf "$DEBS/src/$f" -C "$src" ;;
        esac
    done
    [[ -e $src/debian/patches/series ]] || die "$dsc: no debian/patches/series"
    while read -r p; do
        [[ -z $p || $p == \#* ]] && continue
        patch -s -p1 -d "$src" <"$src/debian/patches/$p"
    done <"$src/debian/patches/series"
    # As upstream's image: defconfig, plus the one option.
    (cd "$src" && make -s defconfig) >"$WORK/busybox-build.log" 2>&1 ||
        { cat "$WORK/busybox-build.log" >&2; die "busybox defconfig failed"; }
    sed -i 's/^# CONFIG_FEATURE_DI_ENV_HACK is not set$/CONFIG_FEATURE_DI_ENV_HACK=y/' "$src/.config"
    grep -qx 'CONFIG_FEATURE_DI_ENV_HACK=y' "$src/.config" || die "busybox: no FEATURE_DI_ENV_HACK"
    # KCONFIG_NOTIMESTAMP and a fixed build tag: no build time in the binary.
    (cd "$src" && export KCONFIG_NOTIMESTAMP=1 &&
        { yes '' || true; } | make -s oldconfig &&
        make -s -j"$(nproc)" busybox BB_EXTRA_VERSION="Debian $version, environment kept") \
        >"$WORK/busybox-build.log" 2>&1 || { cat "$WORK/busybox-build.log" >&2; die "busybox build failed"; }
    env 'data-1=kept' "$src/busybox" sh -c 'env; :' | grep -qx 'data-1=kept' ||
        die "the rebuilt busybox sh still drops data-1"
    local t   # nmeter runs until head has its line and goes (SIGPIPE)
    t=$("$src/busybox" nmeter -d0 '%3t' | head -n1 || true)
    [[ $t =~ ^[0-9:]+\.[0-9]{3}$ ]] || die "the rebuilt busybox has no nmeter (it printed: ${t:0:80})"
    mkdir -p "$(dirname "$out")"
    install -m 0755 "$src/busybox" "$out"
    rm -rf "$src"
}

# ---------------------------------------------------------------------------------------
# Go binaries: agnhost from k8s.io/kubernetes (a package of the main module, so built from
# a wrapper module as hack/install-k8s.sh builds the rest), and CoreDNS for agnhost's
# /coredns (its module replaces a dependency, and one of its requirements is a
# pseudo-version the proxy no longer serves: a wrapper with both replacements).

# go_get_build DIR OUT PKG VERSION LDFLAGS: in the wrapper module DIR (its go.mod written),
# require PKG at VERSION and build it, static, to OUT; DIR goes.
go_get_build() {
    local dir=$1 out=$2 pkg=$3 version=$4 ldflags=$5
    (cd "$dir" && go get "$pkg@$version" 2>"$dir/go-get.log") ||
        { cat "$dir/go-get.log" >&2; die "go get $pkg@$version failed"; }
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/out" "$pkg") ||
        die "go build $pkg@$version failed"
    mkdir -p "$(dirname "$out")"
    install -m 0755 "$dir/out" "$out"
    rm -rf "$dir"
}

build_agnhost() {
    local out=$1 dir=$WORK/go-agnhost
    rm -rf "$dir" && mkdir -p "$dir"
    # shellcheck source=hack/lib/kube-module.sh
    source "$HACK_DIR/lib/kube-module.sh"
    kube_module "$dir" "$KUBE_VERSION"
    # As test/images/image-util.sh builds it: static, with the image's version.
    go_get_build "$dir" "$out" k8s.io/kubernetes/test/images/agnhost "$KUBE_VERSION" \
        "-s -w -X main.Version=$AGNHOST_VERSION"
}

build_coredns() {
    local out=$1 dir=$WORK/go-coredns
    rm -rf "$dir" && mkdir -p "$dir"
    cat >"$dir/go.mod" <<EOF
module criservice.local/coredns-build

go 1.12

require github.com/coredns/coredns $COREDNS_VERSION

replace (
	github.com/miekg/dns v1.1.3 => github.com/miekg/dns v1.1.15
	github.com/census-instrumentation/opencensus-proto v0.1.0-0.20181214143942-ba49f56771b8 => github.com/census-instrumentation/opencensus-proto v0.2.0
)
EOF
    go_get_build "$dir" "$out" github.com/coredns/coredns "$COREDNS_VERSION" "-s -w"
}

# cached NAME BUILDER INPUTS...: set CACHED to the path of NAME built by `BUILDER OUT`,
# building it when no build from the same inputs (and the same BUILDER text) is cached.
# Not for $(...): the builder must run under set -e.
cached() {
    local name=$1 builder=$2 key out
    shift 2
    key=$(key_of "$@" "$(declare -f "$builder")")
    out=$BUILT/$name-$key/$name
    if [[ ! -x $out ]]; then
        log "$name: building (cached as $out)"
        "$builder" "$out" >&2
    fi
    CACHED=$out
    # Builds from other inputs are stale: the layout is rebuilt when an input changes.
    local d
    for d in "$BUILT/$name"-*; do [[ $d == "${out%/*}" ]] || rm -rf "$d"; done
}

# Everything the node e2e images are made of that must exist before the layout's inputs
# are compared: the .debs, the busybox source and the compiled binaries.
node_e2e_prepare() {
    local pkg bb_source
    NODE_DEB_FILES=() PERL_DEB_FILES=()
    for pkg in "${NODE_DEBS[@]}"; do NODE_DEB_FILES+=("$(fetch_deb "$pkg")"); done
    for pkg in "${PERL_DEBS[@]}"; do PERL_DEB_FILES+=("$(fetch_deb "$pkg")"); done
    # The busybox .deb's source version ("busybox (1:1.35.0-4+deb12u1)" after a binNMU).
    bb_source=$(dpkg-deb -f "$BUSYBOX_DEB" Source)
    if [[ $bb_source == *\(*\) ]]; then
        BB_SRC_VERSION=${bb_source#*(}; BB_SRC_VERSION=${BB_SRC_VERSION%)}
    else
        BB_SRC_VERSION=$(dpkg-deb -f "$BUSYBOX_DEB" Version)
    fi
    fetch_source busybox "$BB_SRC_VERSION"
    BB_DSC=$FETCHED_DSC
    cached busybox build_busybox_envkeep "$(sha256sum "$BB_DSC" | cut -d' ' -f1)" "$(gcc -dumpfullversion)"
    BUSYBOX_ENVKEEP=$CACHED
    GO_VERSION=$(go env GOVERSION)
    cached agnhost build_agnhost "$KUBE_VERSION" "$AGNHOST_VERSION" "$GO_VERSION" \
        "$(cat "$HACK_DIR/lib/kube-module.sh")" "$(declare -f go_get_build)"
    AGNHOST_BIN=$CACHED
    cached coredns build_coredns "$COREDNS_VERSION" "$GO_VERSION" "$(declare -f go_get_build)"
    COREDNS_BIN=$CACHED
    # The module's own tree (in the module cache), for the files agnhost's Dockerfile adds.
    KUBE_SRC=$(cd "$WORK" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | jq -r '.Dir // empty')
    [[ -d $KUBE_SRC/test/images/agnhost ]] || die "k8s.io/kubernetes@$KUBE_VERSION: no test/images/agnhost"
}

# Lines for build-test-images.sh's inputs stamp.
node_e2e_stamp() {
    sha256sum "$HACK_DIR/build-node-e2e-images.sh" | cut -d' ' -f1
    local f
    for f in "${NODE_DEB_FILES[@]}" "${PERL_DEB_FILES[@]}"; do basename "$f"; done
    basename "$BB_DSC"
}

# Scratch inputs, when some image is to be built.
node_e2e_sources() {
    local deb
    rm -rf "$NODE_DEBROOT" && mkdir -p "$NODE_DEBROOT"
    for deb in "${NODE_DEB_FILES[@]}"; do dpkg -x "$deb" "$NODE_DEBROOT"; done
    compile_static "$SRC/pause.c" "$SRC/pause-3.10.2" -DVERSION='"3.10.2"'
    chmod 0755 "$SRC/pause-3.10.2"
}

# ---------------------------------------------------------------------------------------
# What goes into each image

# install_deb_bin ROOTFS SRC [DEST]: SRC from the unpacked .debs, with the libraries ldd
# finds for it among them (at their own paths) or else on the host.
install_deb_bin() {
    local r=$1 src=$2 dest=${3:-$2} libs lib
    install_file "$r" "$NODE_DEBROOT$src" "$dest"
    libs=$(LD_LIBRARY_PATH=$NODE_DEBROOT/usr/lib/x86_64-linux-gnu:$NODE_DEBROOT/lib/x86_64-linux-gnu \
        libs_of "$NODE_DEBROOT$src")
    for lib in $libs; do
        if [[ $lib == "$NODE_DEBROOT"/* ]]; then
            [[ -e $r${lib#"$NODE_DEBROOT"} ]] || install_file "$r" "$lib" "${lib#"$NODE_DEBROOT"}"
        else
            [[ -e $r$lib ]] || install_file "$r" "$lib"
        fi
    done
}

# bind9's dig, nslookup and host (Alpine's bind-tools, Debian's dnsutils). nslookup also
# replaces busybox's, which /bin holds.
install_dns_tools() {
    local r=$1 b
    for b in dig nslookup host; do install_deb_bin "$r" "/usr/bin/$b"; done
    ln -f "$r/usr/bin/nslookup" "$r/bin/nslookup"
}

populate_busybox_envkeep() {
    local BUSYBOX_BIN=$BUSYBOX_ENVKEEP
    populate_busybox "$1"
}

# The fake registry agnhost's fake-registry-server serves from /var/registry, which
# upstream fills with registry.k8s.io/pause:3.10.2 as pause:testing (the layout of its
# prepare_registry.sh): here the pause-3.10.2 image, behind a one-entry index.
populate_fake_registry() {
    local r=$1 reg=$1/var/registry/pause mdigest manifest config layer idx
    mdigest=$(manifest_digest pause-3.10.2)
    [[ -n $mdigest ]] || die "fake registry: no pause-3.10.2 in the layout"
    # The server sends a manifest's own mediaType as its Content-Type: give it one.
    manifest=$WORK/fake-manifest.json
    jq -cj '{schemaVersion, mediaType: "application/vnd.oci.image.manifest.v1+json", config, layers}' \
        "$LAYOUT/blobs/sha256/${mdigest#sha256:}" >"$manifest"
    idx=$WORK/fake-index.json
    jq -ncj --arg d "sha256:$(sha256sum "$manifest" | cut -d' ' -f1)" --argjson s "$(stat -c %s "$manifest")" \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
          manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
                       platform: {architecture: "amd64", os: "linux"}}]}' >"$idx"
    fake_registry_put "$reg/manifests" "$idx"
    fake_registry_put "$reg/manifests" "$manifest"
    config=$(jq -r .config.digest "$manifest")
    fake_registry_put "$reg/blobs" "$LAYOUT/blobs/sha256/${config#sha256:}"
    for layer in $(jq -r '.layers[].digest' "$manifest"); do
        fake_registry_put "$reg/blobs" "$LAYOUT/blobs/sha256/${layer#sha256:}"
    done
    echo "sha256:$(sha256sum "$idx" | cut -d' ' -f1)" >"$reg/manifests/testing"
    chmod 0644 "$reg/manifests/testing"
    rm -f "$manifest" "$idx"
}

# fake_registry_put DIR FILE: FILE where registryserver.go's digestToPath looks for it,
# DIR/sha256/<first 2 hex>/<hex>/data.
fake_registry_put() {
    local d
    d=$(sha256sum "$2" | cut -d' ' -f1)
    install -D -m 0644 "$2" "$1/sha256/${d:0:2}/$d/data"
}

# test/images/agnhost/Dockerfile on this busybox instead of Alpine (whose sh is busybox too).
populate_agnhost() {
    local r=$1 f
    install_file "$r" "$AGNHOST_BIN" /agnhost
    ln -s agnhost "$r/agnhost-2" # entrypoint-tester specs run it under this name
    install_file "$r" "$COREDNS_BIN" /coredns
    chmod 0755 "$r/agnhost" "$r/coredns"
    # From porter: the certificate netexec and porter serve TLS with (upstream's files).
    for f in localhost.crt localhost.key; do
        install_file "$r" "$KUBE_SRC/test/images/agnhost/porter/$f" "/$f"
        chmod 0644 "$r/$f"
    done
    install -d -m 0755 "$r/uploads" # netexec's upload directory
    # apk add bind-tools curl netcat-openbsd iproute2 iperf bash util-linux-misc socat
    install_dns_tools "$r"
    install_with_libs "$r" /usr/bin/curl
    install_with_libs "$r" /usr/bin/bash /bin/bash
    install_deb_bin "$r" /bin/nc.openbsd /usr/bin/nc # -u, -z, -w ... (busybox's nc is smaller)
    ln -f "$r/usr/bin/nc" "$r/bin/nc"
    install_with_libs "$r" /usr/bin/ip /bin/ip # replaces busybox's ip
    ln -f "$r/bin/ip" "$r/sbin/ip"
    install_with_libs "$r" /usr/bin/ss
    install_deb_bin "$r" /usr/bin/iperf
    ln -s /usr/bin/iperf "$r/usr/local/bin/iperf"
    install_deb_bin "$r" /usr/bin/socat
    for f in ipcmk ipcrm lsipc; do install_with_libs "$r" "/usr/bin/$f"; done # ipcs is there
    # Alpine's base has them; nc, socat and curl look service names up there.
    install_file "$r" /etc/services
    install_file "$r" /etc/protocols
    add_predefined_user "$r" user-defined-in-image
    populate_fake_registry "$r"
}

# test/images/glibc-dns-testing: Debian with dnsutils and CoreDNS; its point is glibc's
# resolver and Debian's `hostname -f`, so hostname is Debian's, not busybox's.
populate_glibc_dns_testing() {
    local r=$1
    install_with_libs "$r" /usr/bin/hostname /bin/hostname
    install_dns_tools "$r"
    install_file "$r" "$COREDNS_BIN" /coredns
    chmod 0755 "$r/coredns"
}

# test/images/perl mirrors the perl image: Debian's perl, its standard library with it.
populate_perl() {
    local r=$1 deb tree=$WORK/perl-tree libs lib
    rm -rf "$tree"
    for deb in "${PERL_DEB_FILES[@]}"; do dpkg -x "$deb" "$tree"; done
    rm -rf "$tree/usr/share/doc" "$tree/usr/share/man" "$tree/usr/share/lintian"
    cp -a --remove-destination "$tree/." "$r/"
    rm -rf "$tree"
    libs=$(libs_of "$r/usr/bin/perl")
    for lib in $libs; do [[ -e $r$lib ]] || install_file "$r" "$lib"; done
}

# test/images/ipc-utils: Alpine plus util-linux, for ipcs -m and friends.
populate_ipc_utils() {
    local r=$1 f
    for f in ipcmk ipcrm lsipc; do install_with_libs "$r" "/usr/bin/$f"; done
}

# ---------------------------------------------------------------------------------------
# The images

PUSH_REFS[nginx]+=" e2e-test-images/nginx:1.27.0-2 e2e-test-images/nginx:1.28.0-2"
PUSH_REFS[nonewprivs]+=" e2e-test-images/nonewprivs:1.4"
PUSH_REFS+=(
    [busybox-1.37]="e2e-test-images/busybox:1.37.0-2"
    # Its own build, as pause:3.10 is: the suite may remove it, the runtime's must stay.
    [pause-3.10.2]="pause:3.10.2"
    [nonroot]="e2e-test-images/nonroot:1.5"
    [agnhost]="e2e-test-images/agnhost:2.66.1 e2e-test-images/agnhost:2.55"
    [glibc-dns-testing]="e2e-test-images/glibc-dns-testing:2.1.1"
    [perl]="e2e-test-images/perl:5.26"
    [ipc-utils]="e2e-test-images/ipc-utils:1.4"
)
# Build order: parents first; agnhost holds pause-3.10.2's blobs.
TAGS+=(busybox-1.37 pause-3.10.2 nonroot agnhost glibc-dns-testing perl ipc-utils)

node_e2e_build() {
    build busybox-1.37 "" populate_busybox_envkeep "${BB_CONFIG[@]}"
    build_file pause-3.10.2 "" "$SRC/pause-3.10.2" /pause "${PAUSE_CONFIG[@]}"
    # Upstream: FROM debian-base; USER 1234 (the spec runs `id -u`).
    build nonroot busybox-1.37 "" --config.user 1234
    build agnhost busybox-1.37 populate_agnhost --clear config.cmd --config.entrypoint /agnhost \
        --config.cmd pause --config.exposedports 80/tcp --config.exposedports 8080/tcp \
        --config.exposedports 8081/tcp --config.exposedports 9376/tcp --config.exposedports 5000/tcp
    build glibc-dns-testing busybox-1.37 populate_glibc_dns_testing
    build perl busybox-1.37 populate_perl --clear config.cmd --config.cmd perl --config.cmd -de0
    build ipc-utils busybox-1.37 populate_ipc_utils
}
