#!/usr/bin/env bash
# Build the images the tests pull (critest v1.37's set, the runtime's own pause image and,
# from hack/build-node-e2e-images.sh, the node e2e suite's set) from Debian packages and
# the Go module proxy, without a Docker engine, and push them to the local registry.
#
#   hack/build-test-images.sh [--push REGISTRY] [--no-push] [--rebuild]
#
#   --push REGISTRY  push to REGISTRY (host:port, plain HTTP); default 127.0.0.1:5000,
#                    the registry that hack/registry.sh runs
#   --no-push        build only
#   --rebuild        build every image again even if it is already in the layout
#
# Why it is built this way (each point cost hours; see the shared test-images notes):
#   - The tests' names (registry.k8s.io/X, gcr.io/X, ...) reach this registry through the
#     runtime's mirrors with the path and tag kept, so each image is pushed under its
#     upstream name with the registry host stripped.
#   - Busybox is Debian's dynamic `busybox` (taken out of its .deb: it conflicts with
#     busybox-static, and busybox-static's shell runs applets without looking at PATH).
#     Its applets are hard links in /bin, never symlinks: runc resolves symlinks when it
#     masks a path, so a masked symlinked /bin/ls would mask busybox, and sh with it.
#   - Debian's busybox has no pgrep and no ipcs; procps' and util-linux' are added.
#   - File times and the `created` times of config and history are pinned
#     (SOURCE_DATE_EPOCH), so a rebuild from the same inputs pushes byte-identical images:
#     tests that compare image IDs stay stable.
#
# Everything lives in CACHE_DIR (default /var/tmp/criservice-test-images): debs/ (the
# downloaded .debs and debs/src/ the Debian sources), apt-src/ (apt's deb-src lists for
# those), oci/ (one OCI layout, one tag per image, shared blobs), built/ (binaries
# compiled for the node e2e images, cached by their inputs), work/ (scratch, removed on
# exit). Nothing is downloaded except with apt-get from Debian and with go from the Go
# module proxy.
# Needs root (umoci unpack keeps ownership; the nnp binary is setuid root).
set -euo pipefail

CACHE_DIR=${CACHE_DIR:-/var/tmp/criservice-test-images}
HACK_DIR=$(cd "$(dirname "$0")" && pwd)
EPOCH=${SOURCE_DATE_EPOCH:-1704067200} # 2024-01-01T00:00:00Z, any fixed value works
REGISTRY=127.0.0.1:5000
PUSH=1
REBUILD=0

usage() {
    echo "usage: $0 [--push REGISTRY] [--no-push] [--rebuild]" >&2
    exit 2
}
while (($#)); do
    case $1 in
    --push) (($# >= 2)) || usage; REGISTRY=$2; PUSH=1; shift 2 ;;
    --push=*) REGISTRY=${1#--push=}; PUSH=1; shift ;;
    --no-push) PUSH=0; shift ;;
    --rebuild) REBUILD=1; shift ;;
    -h | --help) usage ;;
    *) usage ;;
    esac
done

log() { echo "build-test-images: $*" >&2; }
die() { log "error: $*"; exit 1; }

((EUID == 0)) || die "must run as root (umoci unpack keeps file owners; nnp is setuid root)"
for tool in umoci skopeo gcc ldd dpkg apt-get jq curl flock tar; do
    command -v "$tool" >/dev/null || die "$tool not found; run hack/install-deps.sh"
done
# Host binaries that go into the images; hack/install-deps.sh installs their packages.
for f in /usr/bin/pgrep /usr/bin/ipcs /usr/sbin/nginx /usr/sbin/apache2 /usr/lib/apache2/modules \
    /usr/lib/x86_64-linux-gnu/libc.a; do
    [[ -e $f ]] || die "$f missing; run hack/install-deps.sh (procps util-linux nginx apache2-bin libc6-dev)"
done

umask 022 # file modes in the layers must not depend on the caller's umask
export LC_ALL=C # sorting and tool output must not depend on the caller's locale

LAYOUT=$CACHE_DIR/oci
DEBS=$CACHE_DIR/debs
WORK=$CACHE_DIR/work
mkdir -p "$CACHE_DIR" "$DEBS"

# One build at a time per cache: two writers would corrupt the layout's index.json.
exec 9>"$CACHE_DIR/.lock"
flock -w 600 9 || die "another build holds $CACHE_DIR/.lock"
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# ---------------------------------------------------------------------------------------
# Helpers

# fetch_deb PKG: print the path of PKG's .deb, downloading it once into $DEBS.
fetch_deb() {
    local pkg=$1 debs
    debs=("$DEBS/${pkg}"_*.deb)
    if [[ ! -e ${debs[0]} ]]; then
        log "apt-get download $pkg"
        # As root apt wants to drop to _apt, which cannot write here; stay root instead.
        if ! (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); then
            log "apt-get download failed; refreshing the package lists once"
            apt-get update -q >&2
            (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2)
        fi
        debs=("$DEBS/${pkg}"_*.deb)
    fi
    ((${#debs[@]} == 1)) || die "more than one cached .deb for $pkg in $DEBS: ${debs[*]}"
    echo "${debs[0]}"
}

# libs_of FILE: the shared objects FILE needs, as ldd resolves them on this host,
# including the dynamic loader. Fails if any is missing.
libs_of() {
    local out
    out=$(ldd "$1" 2>&1) || {
        # ldd exits 1 for static binaries; that is not an error here.
        grep -q 'not a dynamic executable' <<<"$out" && return 0
        die "ldd $1: $out"
    }
    if grep -q 'not found' <<<"$out"; then die "ldd $1: $out"; fi
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
}

# install_file ROOTFS SRC [DEST]: copy SRC (following symlinks) to ROOTFS/DEST.
# Host files are noted in $HOST_FILES, so that a later run notices when one changed.
install_file() {
    local rootfs=$1 src=$2 dest=${3:-$2}
    [[ $src == "$WORK"/* ]] || readlink -f "$src" >>"$HOST_FILES"
    mkdir -p "$rootfs$(dirname "$dest")"
    # Plain copy of the bytes and mode: no xattrs, owner root (we run as root). A new
    # file, never written through an existing one: /bin/nc, /bin/ip, ... are hard links
    # to busybox, which writing through them would overwrite.
    rm -f "$rootfs$dest"
    cp -L --preserve=mode "$src" "$rootfs$dest"
}

# install_with_libs ROOTFS SRC [DEST]: copy a binary or module plus every library ldd
# lists for it (at the path ldd shows, which the loader searches by default).
install_with_libs() {
    local rootfs=$1 src=$2 dest=${3:-$2} libs lib
    install_file "$rootfs" "$src" "$dest"
    libs=$(libs_of "$src") # not in a process substitution: its failure must stop us
    for lib in $libs; do
        [[ -e $rootfs$lib ]] || install_file "$rootfs" "$lib"
    done
}

# write_file ROOTFS DEST MODE: stdin to ROOTFS/DEST.
write_file() {
    local rootfs=$1 dest=$2 mode=$3
    mkdir -p "$rootfs$(dirname "$dest")"
    cat >"$rootfs$dest"
    chmod "$mode" "$rootfs$dest"
}

# compile_static SRC OUT [CFLAGS...]: a small C program, static so the image needs no libc.
compile_static() {
    local src=$1 out=$2
    shift 2
    gcc -static -O2 -s "$@" -o "$out" "$src"
}

# Not `umoci ls | grep -q`: grep quitting early gives umoci SIGPIPE, and pipefail turns a
# found tag into a failure.
has_tag() {
    local tags
    tags=$(umoci ls --layout "$LAYOUT" 2>/dev/null) || return 1
    grep -qxF -- "$1" <<<"$tags"
}

manifest_digest() {
    jq -r --arg t "$1" \
        '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
        "$LAYOUT/index.json"
}

# The two ways to make an image TAG: PARENT's layers ("" = empty image) plus at most one
# new layer, then config args (passed to umoci config). Either is skipped when the layout
# already holds TAG (the whole layout is dropped when any input changed).
#
# build TAG PARENT POPULATE [config args...]
#   The new layer holds what the function POPULATE ROOTFS adds to an unpacked PARENT
#   ("" = no new layer).
# build_file TAG PARENT SRC DEST [config args...]
#   The new layer is the one file SRC at DEST, with SRC's mode (owner root). No unpack and
#   repack of the parent, which is most of the build time otherwise. The tar is made here
#   and added verbatim: umoci 0.4.7's `insert` writes layers without the tar trailer.
build() {
    local tag=$1 parent=$2 populate=$3 bundle
    shift 3
    begin_image "$tag" "$parent" || return 0
    if [[ -n $populate ]]; then
        bundle=$WORK/bundle-$tag
        umoci unpack --image "$LAYOUT:$tag" "$bundle" >/dev/null
        "$populate" "$bundle/rootfs"
        pin_times "$bundle/rootfs"
        umoci repack --image "$LAYOUT:$tag" "${HISTORY[@]}" "hack/build-test-images.sh $tag" \
            "$bundle" >/dev/null
        rm -rf "$bundle"
    fi
    end_image "$tag" "$@"
}

build_file() {
    local tag=$1 parent=$2 src=$3 dest=$4 stage
    shift 4
    begin_image "$tag" "$parent" || return 0
    stage=$WORK/stage-$tag
    mkdir -p "$stage$(dirname "$dest")"
    cp --preserve=mode "$src" "$stage$dest"
    # One entry (no parent directories: they exist below), in plain ustar, with pinned
    # time and owner, so the same file always gives the same bytes.
    tar --create --file "$stage.tar" --directory "$stage" --format=ustar --no-recursion \
        --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner "${dest#/}"
    umoci raw add-layer --image "$LAYOUT:$tag" "${HISTORY[@]}" "hack/build-test-images.sh $tag" \
        "$stage.tar"
    rm -rf "$stage" "$stage.tar"
    end_image "$tag" "$@"
}

# A history entry per layer (tools expect one), with the pinned time; the tag follows.
HISTORY=(--history.created "$CREATED" --history.created_by)

# Pin every time (files, dirs, symlinks themselves) so the layer bytes depend only on
# content: umoci writes these into the tar headers.
pin_times() { find "$1" -exec touch -h -d "@$EPOCH" {} +; }

begin_image() {
    local tag=$1 parent=$2
    has_tag "$tag" && return 1
    log "$tag: building"
    if [[ -z $parent ]]; then
        umoci new --image "$LAYOUT:$tag"
    else
        umoci tag --image "$LAYOUT:$parent" "$tag"
    fi
}

end_image() {
    local tag=$1
    shift
    umoci config --no-history --image "$LAYOUT:$tag" \
        --os linux --architecture amd64 --created "$CREATED" \
        --config.label "io.criservice.test-image=$tag" "$@"
}

# ---------------------------------------------------------------------------------------
# What goes into each image

BUSYBOX_DIR=$WORK/busybox-deb
BUSYBOX_BIN=$BUSYBOX_DIR/bin/busybox # populate_busybox's busybox (callers may rebind it)
SRC=$WORK/src

populate_busybox() {
    local r=$1 applets applet
    mkdir -p "$r"/{bin,sbin,etc,dev,proc,sys,home,usr/bin,usr/sbin,usr/local/bin,var/spool/mail,var/www}
    install -d -m 0700 "$r/root"
    install -d -m 1777 "$r/tmp"

    # Dynamic busybox with exactly the libraries ldd lists, plus the loader.
    install_with_libs "$r" "$BUSYBOX_BIN" /bin/busybox
    chmod 0755 "$r/bin/busybox"
    applets=$("$BUSYBOX_BIN" --list)
    for applet in $applets; do
        [[ $applet != busybox ]] || continue
        ln -f "$r/bin/busybox" "$r/bin/$applet"
    done

    # The suite runs pgrep and ipcs, which this busybox lacks.
    install_with_libs "$r" /usr/bin/pgrep
    install_with_libs "$r" /usr/bin/ipcs

    # Users and groups as in the upstream busybox image (root, www-data 33, nobody 65534).
    write_file "$r" /etc/passwd 0644 <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
    write_file "$r" /etc/group 0644 <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
EOF
    write_file "$r" /etc/shadow 0640 <<'EOF'
root:*::0:::::
daemon:*::0:::::
bin:*::0:::::
sys:*::0:::::
sync:*::0:::::
mail:*::0:::::
www-data:*::0:::::
operator:*::0:::::
nobody:*::0:::::
EOF
    # glibc's built-in defaults would do, but say it: users and hosts come from files.
    write_file "$r" /etc/nsswitch.conf 0644 <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
EOF
}


# add_predefined_user ROOTFS USER: what busybox `adduser -u 1000 -D USER; addgroup -g 50000
# group-defined-in-image; addgroup USER group-defined-in-image` writes in upstream images.
add_predefined_user() {
    local r=$1 u=$2
    echo "$u:x:1000:1000:Linux User,,,:/home/$u:/bin/sh" >>"$r/etc/passwd"
    printf '%s\n' "$u:x:1000:" "group-defined-in-image:x:50000:$u" >>"$r/etc/group"
    echo "$u:!::0:99999:7:::" >>"$r/etc/shadow"
    install -d -m 0755 -o 1000 -g 1000 "$r/home/$u"
}

populate_predefined_group() { add_predefined_user "$1" default-user; }


nginx_common() {
    local r=$1
    install_with_libs "$r" /usr/sbin/nginx
    # A real directory, not the usual symlink to /run: nginx writes its pid file here
    # and the tests read /var/run/nginx.pid.
    install -d -m 0755 "$r/var/run" "$r/var/lib/nginx" "$r/var/log/nginx" "$r/etc/nginx/conf.d"
    write_file "$r" /etc/nginx/nginx.conf 0644 <<'EOF'
# Foreground, so PID 1 is "nginx: master process"; workers run as www-data.
daemon off;
user www-data www-data;
worker_processes 1;
error_log stderr notice;
pid /var/run/nginx.pid;

events {
    worker_connections 1024;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
EOF
    write_file "$r" /etc/nginx/mime.types 0644 <<'EOF'
types {
    text/html html htm;
    text/css css;
    text/plain txt;
    application/javascript js;
    application/json json;
    image/png png;
}
EOF
    write_file "$r" /usr/share/nginx/html/index.html 0644 <<'EOF'
<!DOCTYPE html>
<html><head><title>Welcome to nginx!</title></head>
<body><h1>Welcome to nginx!</h1></body></html>
EOF
    write_file "$r" /usr/share/nginx/html/50x.html 0644 <<'EOF'
<!DOCTYPE html>
<html><head><title>Error</title></head><body><h1>An error occurred.</h1></body></html>
EOF
}

nginx_server() {
    local r=$1 port=$2
    write_file "$r" /etc/nginx/conf.d/default.conf 0644 <<EOF
server {
    listen $port;
    server_name localhost;
    location / {
        root /usr/share/nginx/html;
        index index.html index.htm;
    }
    error_page 500 502 503 504 /50x.html;
    location = /50x.html {
        root /usr/share/nginx/html;
    }
}
EOF
}

populate_nginx() {
    nginx_common "$1"
    nginx_server "$1" 80
}


HTTPD_MODULES=(mpm_event authz_core dir mime)
populate_httpd() {
    local r=$1 m
    local root=/usr/local/apache2
    # Debian's apache2 under the upstream image's name and layout: argv[0] "httpd"
    # puts "httpd" into the start-up log line the suite looks for.
    install_with_libs "$r" /usr/sbin/apache2 "$root/bin/httpd"
    for m in "${HTTPD_MODULES[@]}"; do
        install_with_libs "$r" "/usr/lib/apache2/modules/mod_$m.so" "$root/modules/mod_$m.so"
    done
    # glibc dlopens libgcc_s for pthread_exit (apr_thread_exit in the event MPM's
    # workers); without it a worker aborts on exit. ldd cannot see a dlopen.
    install_file "$r" /lib/x86_64-linux-gnu/libgcc_s.so.1
    install -d -m 0755 "$r$root/logs"
    write_file "$r" "$root/conf/httpd.conf" 0644 <<EOF
# Minimal configuration; logs go to the container's stdout/stderr.
ServerRoot "$root"
ServerName localhost
Listen 80
$(for m in "${HTTPD_MODULES[@]}"; do echo "LoadModule ${m}_module modules/mod_$m.so"; done)
User www-data
Group www-data
PidFile logs/httpd.pid
DefaultRuntimeDir logs
StartServers 1
ErrorLog /proc/self/fd/2
LogLevel info
LogFormat "%h %l %u %t \"%r\" %>s %b" common
CustomLog /proc/self/fd/1 common
TypesConfig conf/mime.types
DocumentRoot "$root/htdocs"
DirectoryIndex index.html
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "$root/htdocs">
    Require all granted
</Directory>
EOF
    write_file "$r" "$root/conf/mime.types" 0644 <<'EOF'
text/html html htm
text/plain txt
text/css css
EOF
    write_file "$r" "$root/htdocs/index.html" 0644 <<'EOF'
<html><body><h1>It works!</h1></body></html>
EOF
    # As upstream: drop a stale pid file left by an earlier run, then httpd in foreground.
    write_file "$r" /usr/local/bin/httpd-foreground 0755 <<EOF
#!/bin/sh
set -e
rm -f $root/logs/httpd.pid
exec httpd -d $root -f conf/httpd.conf -DFOREGROUND "\$@"
EOF
}

# ---------------------------------------------------------------------------------------
# The images. Local tag | push references (path:tag on the registry; upstream names with
# the registry host stripped: registry.k8s.io/X, k8s.gcr.io/X, gcr.io/X -> REGISTRY/X).

CRI_TOOLS=k8s-staging-cri-tools
declare -A PUSH_REFS=(
    [busybox]="e2e-test-images/busybox:1.29-2"
    [nginx]="e2e-test-images/nginx:1.14-2"
    [httpd]="e2e-test-images/httpd:2.4.39-4"
    [nonewprivs]="e2e-test-images/nonewprivs:1.3"
    [test-image-tag-test]="$CRI_TOOLS/test-image-tag:test"
    [test-image-tag-all]="$CRI_TOOLS/test-image-tag:all"
    [test-image-latest]="$CRI_TOOLS/test-image-latest:latest"
    [test-image-1]="$CRI_TOOLS/test-image-1:latest"
    [test-image-2]="$CRI_TOOLS/test-image-2:latest"
    [test-image-3]="$CRI_TOOLS/test-image-3:latest"
    [test-image-tags]="$CRI_TOOLS/test-image-tags:1 $CRI_TOOLS/test-image-tags:2 $CRI_TOOLS/test-image-tags:3"
    [test-image-user-uid]="$CRI_TOOLS/test-image-user-uid:latest"
    [test-image-user-username]="$CRI_TOOLS/test-image-user-username:latest"
    [test-image-user-uid-group]="$CRI_TOOLS/test-image-user-uid-group:latest"
    [test-image-user-username-group]="$CRI_TOOLS/test-image-user-username-group:latest"
    [test-image-predefined-group]="$CRI_TOOLS/test-image-predefined-group:latest"
    [hostnet-nginx]="$CRI_TOOLS/hostnet-nginx-amd64:latest"
    # registry.k8s.io/pause:3.9 and k8s.gcr.io/pause:3.9 are one image at one path.
    [pause-3.9]="pause:3.9"
    # The runtime's own infra image: a separate build, so that critest removing
    # pause:3.9 never removes it.
    [pause-3.10]="pause:3.10"
)
# Build order: parents first.
TAGS=(
    busybox nginx httpd nonewprivs
    test-image-tag-test test-image-tag-all test-image-latest
    test-image-1 test-image-2 test-image-3 test-image-tags
    test-image-user-uid test-image-user-username test-image-user-uid-group
    test-image-user-username-group test-image-predefined-group
    hostnet-nginx pause-3.9 pause-3.10
)
# The node e2e suite's images: their own file, with the tags they add to the two above.
# shellcheck source=hack/build-node-e2e-images.sh
source "$HACK_DIR/build-node-e2e-images.sh"

write_sources() {
    mkdir -p "$SRC"
    cat >"$SRC/nnp.c" <<'EOF'
/* Prints the effective uid; installed setuid root to test no_new_privs. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    printf("Effective uid: %d\n", (int)geteuid());
    return 0;
}
EOF
    cat >"$SRC/pause.c" <<'EOF'
/* An infra process: blocks in pause() until SIGINT or SIGTERM, then exits 0.
 * As PID 1 of a shared PID namespace it reaps orphaned children on SIGCHLD.
 * It never runs or is `sleep`, so `pgrep sleep` in a pod never finds it. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "unknown"
#endif

static void sigdown(int signo)
{
    static const char msg[] = "pause: shutting down\n";
    (void)signo;
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(0);
}

static void sigreap(int signo)
{
    int saved = errno;
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

int main(int argc, char **argv)
{
    struct sigaction sa;

    if (argc == 2 && strcmp(argv[1], "-v") == 0) {
        static const char v[] = "pause " VERSION "\n";
        (void)!write(STDOUT_FILENO, v, sizeof(v) - 1);
        return 0;
    }
    if (getpid() != 1) {
        static const char w[] = "pause: warning: not running as PID 1\n";
        (void)!write(STDERR_FILENO, w, sizeof(w) - 1);
    }
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = sigdown;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return 1;
    sa.sa_handler = sigreap;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        return 2;
    for (;;)
        pause();
}
EOF
    compile_static "$SRC/nnp.c" "$SRC/nnp"
    # Setuid root: without no_new_privs the kernel raises the euid to 0 on exec.
    chown 0:0 "$SRC/nnp"
    chmod 4755 "$SRC/nnp"
    compile_static "$SRC/pause.c" "$SRC/pause-3.9" -DVERSION='"3.9"'
    compile_static "$SRC/pause.c" "$SRC/pause-3.10" -DVERSION='"3.10"'
    chmod 0755 "$SRC/pause-3.9" "$SRC/pause-3.10"
    # The empty marker file of the test-image-* images.
    install -m 0644 /dev/null "$SRC/empty"
    # hostnet-nginx is upstream's nginx with only its server block changed to port 12003
    # (host network: it must not take port 80 of the host).
    nginx_server "$SRC/hostnet" 12003
}

# ---------------------------------------------------------------------------------------
# Build

BUSYBOX_DEB=$(fetch_deb busybox)
node_e2e_prepare

# What the images are made of: this script, the busybox .deb, the compiler and static
# libc (nnp, pause), umoci and tar (they write the layers), what node_e2e_stamp names
# and, in .host-files, a checksum of every host file (and cached binary) copied in. When
# any of it changes the layout is built again from scratch: an image built from older
# inputs must not survive next to newer ones.
# .complete is removed while images are being added, so that an interrupted build (a tag
# may exist before its layer and config do) is not mistaken for a finished one.
inputs_stamp() {
    sha256sum "$0" | cut -d' ' -f1
    echo "epoch=$EPOCH"
    basename "$BUSYBOX_DEB"
    gcc -dumpfullversion
    sha256sum /usr/lib/x86_64-linux-gnu/libc.a | cut -d' ' -f1
    umoci --version
    tar --version | sed -n 1p
    node_e2e_stamp
}
STAMP=$(inputs_stamp)
HOST_FILES=$WORK/host-files
: >"$HOST_FILES"
if ((REBUILD)); then
    rm -rf "$LAYOUT"
elif [[ -d $LAYOUT ]]; then
    if [[ ! -e $LAYOUT/.complete ]]; then
        log "the last build did not finish: building every image again"
        rm -rf "$LAYOUT"
    elif [[ "$(cat "$LAYOUT/.inputs" 2>/dev/null)" != "$STAMP" ]] ||
        ! sha256sum --quiet --status -c "$LAYOUT/.host-files" 2>/dev/null; then
        log "inputs changed since the last build: building every image again"
        rm -rf "$LAYOUT"
    fi
fi
if [[ ! -d $LAYOUT ]]; then
    umoci init --layout "$LAYOUT"
    echo "$STAMP" >"$LAYOUT/.inputs"
    : >"$LAYOUT/.host-files"
fi

need_build=0
for tag in "${TAGS[@]}"; do has_tag "$tag" || need_build=1; done
if ((need_build)); then
    rm -f "$LAYOUT/.complete"
    dpkg -x "$BUSYBOX_DEB" "$BUSYBOX_DIR"
    write_sources
    node_e2e_sources
fi

BB_CONFIG=(--config.env "$PATH_ENV" --clear config.entrypoint --clear config.cmd --config.cmd sh)
build busybox "" populate_busybox "${BB_CONFIG[@]}"
build nginx busybox populate_nginx --config.exposedports 80/tcp \
    --clear config.cmd --config.cmd nginx
build httpd busybox populate_httpd --config.exposedports 80/tcp --config.stopsignal SIGWINCH \
    --config.env "PATH=/usr/local/apache2/bin:${PATH_ENV#PATH=}" \
    --config.workingdir /usr/local/apache2 --clear config.cmd --config.cmd httpd-foreground
build_file nonewprivs busybox "$SRC/nnp" /usr/local/bin/nnp \
    --clear config.cmd --config.entrypoint /usr/local/bin/nnp
# Busybox plus one empty marker file each (upstream: ADD ${TEST} ${TEST}).
build_file test-image-tag-test busybox "$SRC/empty" /test
build_file test-image-tag-all busybox "$SRC/empty" /all
build_file test-image-latest busybox "$SRC/empty" /test-image-latest
build_file test-image-1 busybox "$SRC/empty" /test-image-1
build_file test-image-2 busybox "$SRC/empty" /test-image-2
build_file test-image-3 busybox "$SRC/empty" /test-image-3
build_file test-image-tags busybox "$SRC/empty" /same-image
# Upstream: FROM busybox; USER ... (no new layer).
build test-image-user-uid busybox "" --config.user 1002
build test-image-user-username busybox "" --config.user www-data
build test-image-user-uid-group busybox "" --config.user 1003:1004
build test-image-user-username-group busybox "" --config.user www-data:1004
build test-image-predefined-group busybox populate_predefined_group --config.user 1000
build_file hostnet-nginx nginx "$SRC/hostnet/etc/nginx/conf.d/default.conf" \
    /etc/nginx/conf.d/default.conf --clear config.exposedports --config.exposedports 12003/tcp
# As upstream pause: no shell, no passwd, entrypoint /pause, user 65535.
PAUSE_CONFIG=(--config.entrypoint /pause --config.user 65535:65535 --clear config.env
    --clear config.cmd)
build_file pause-3.9 "" "$SRC/pause-3.9" /pause "${PAUSE_CONFIG[@]}"
build_file pause-3.10 "" "$SRC/pause-3.10" /pause "${PAUSE_CONFIG[@]}"
node_e2e_build

# Each config step above left an unreferenced manifest and config behind.
umoci gc --layout "$LAYOUT"
# Remember the host files in the images with their checksums (see inputs_stamp).
if [[ -s $HOST_FILES ]]; then
    { cut -c67- "$LAYOUT/.host-files"; cat "$HOST_FILES"; } | sort -u | xargs -r -d '\n' sha256sum \
        >"$LAYOUT/.host-files.new"
    mv -f "$LAYOUT/.host-files.new" "$LAYOUT/.host-files"
fi
touch "$LAYOUT/.complete"

# ---------------------------------------------------------------------------------------
# Push

# registry_digest REF: the digest the registry serves for path:tag REF, or nothing.
registry_digest() {
    local path=${1%:*} tag=${1##*:}
    curl -sfI --max-time 10 \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
        "http://$REGISTRY/v2/$path/manifests/$tag" |
        awk 'tolower($1) == "docker-content-digest:" { sub(/\r$/, "", $2); print $2 }' || true
}

if ((PUSH)); then
    curl -sf --max-time 5 -o /dev/null "http://$REGISTRY/v2/" ||
        die "no registry answers on http://$REGISTRY/v2/ (start one with hack/registry.sh start)"
fi
for tag in "${TAGS[@]}"; do
    digest=$(manifest_digest "$tag")
    read -ra refs <<<"${PUSH_REFS[$tag]}"
    for ref in "${refs[@]}"; do
        if ((PUSH)); then
            if [[ $(registry_digest "$ref") == "$digest" ]]; then
                state="already pushed"
            else
                # The layout holds OCI manifests and the registry takes them as they are,
                # so the pushed digest is the local one (checked below).
                skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:$tag" "docker://$REGISTRY/$ref"
                [[ $(registry_digest "$ref") == "$digest" ]] ||
                    die "$REGISTRY/$ref: registry digest differs from the local $digest"
                state="pushed"
            fi
            printf '%-70s %s  (%s)\n' "$REGISTRY/$ref" "$digest" "$state"
        else
            printf '%-70s %s\n' "$ref" "$digest"
        fi
    done
done
