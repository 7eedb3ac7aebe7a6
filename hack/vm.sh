#!/usr/bin/env bash
# A test bed of the platform real nodes run: a Debian 12 guest with systemd as PID 1
# and cgroup v2, under qemu's software emulation (KVM cannot be used on these hosts).
#   hack/vm.sh build         build the guest image (cached by the hash of its inputs)
#   hack/vm.sh run CMD...    boot the guest, run CMD as root in the checkout under its
#                            systemd, power off; exits with CMD's status
#   hack/vm.sh test          run the guest suite (hack/vm/guest-test.sh)
#   hack/vm.sh conformance [critest|kubelet|node]...
#                            the long runs with the systemd cgroup driver
#                            (hack/vm/guest-conformance.sh); the test images are
#                            pushed first, as for `test`
#
# The image: debootstrap of bookworm, then Debian's kernel, systemd and every package of
# hack/lib/packages.sh installed in a chroot, a venv of the project's dependencies made
# there with Debian's python3 (the host's .venv may use another interpreter), then
# `mkfs.ext4 -d`. It lives in $VM_DIR/<key> (default /var/tmp/criservice-vm), the key
# hashing everything it is made from, so an unchanged image is not rebuilt. Each boot
# writes to a throw-away qcow2 overlay of it.
# The guest has no network but its loopback (-nic none) and downloads nothing. The
# checkout reaches it by virtio-9p at the same path (with the image's venv mounted
# over .venv, and .tools/bin as the host built it); the test images by a read-only
# share of the local registry's storage (hack/registry.sh), which the guest copies.
# The job's log and status come back in _out/vm/ of the checkout, the guest's console
# in _out/vm/console.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VM_DIR=${VM_DIR:-/var/tmp/criservice-vm}
OUT=$ROOT/_out/vm
SUITE=bookworm
MIRROR=${VM_MIRROR:-http://deb.debian.org/debian}
MEMORY=${VM_MEMORY:-4096}
CPUS=${VM_CPUS:-2}
BOOT_TIMEOUT=${VM_BOOT_TIMEOUT:-300}   # seconds until the guest's job has started
RUN_TIMEOUT=${VM_TIMEOUT:-3600}        # seconds for the whole run
REGISTRY_STORE=${REGISTRY_DIR:-/var/tmp/criservice-registry}
GUEST_VENV=/opt/criservice-venv
# shellcheck source=hack/lib/packages.sh
source "$ROOT/hack/lib/packages.sh"

log() { echo "vm: $*" >&2; }
die() { log "error: $*"; exit 1; }

# need CMD:PACKAGE...: the host tools this script runs, installed from Debian's packages
# when missing (only these tools: the guest's own packages come with its image).
need() {
    local cmd pkg missing=()
    for cmd in "$@"; do
        pkg=${cmd#*:}; cmd=${cmd%%:*}
        command -v "$cmd" >/dev/null || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return
    ((EUID == 0)) || die "${missing[*]} missing (apt-get install ${missing[*]})"
    log "apt-get install ${missing[*]}"
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}")
    "${install[@]}" >&2 || { apt-get update -q >&2 && "${install[@]}" >&2; } || die "cannot install ${missing[*]}"
}

# The image's key: what it is made from. The guest's fstab and units name the
# checkout's path and the venv holds the project's dependencies, so both count.
image_key() {
    {
        echo "$SUITE $MIRROR $ROOT"
        declare -f build_rootfs configure_guest
        cat "$ROOT/hack/lib/packages.sh" "$ROOT/pyproject.toml" "$ROOT"/hack/vm/*.service
    } | sha256sum | cut -c1-16
}

# Undo of the chroot's mounts, innermost first; run on every exit of `build`.
CHROOT_MOUNTS=()
umount_chroot() {
    local i
    for ((i = ${#CHROOT_MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${CHROOT_MOUNTS[i]}" 2>/dev/null || true; done
    CHROOT_MOUNTS=()
}
chroot_mount() {   # chroot_mount SOURCE TARGET [mount options...]
    [[ -e $2 ]] || mkdir -p "$2"
    mount "${@:3}" "$1" "$2"
    CHROOT_MOUNTS+=("$2")
}

build_rootfs() {   # build_rootfs DIR
    local dir=$1
    debootstrap --variant=minbase --include=systemd,systemd-sysv,udev,kmod,dbus,linux-image-amd64,python3,python3-venv,ca-certificates \
        "$SUITE" "$dir" "$MIRROR" >&2
    # Packages install without starting their services in the chroot.
    printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
    chmod +x "$dir/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    chroot_mount proc "$dir/proc" -t proc
    chroot_mount sysfs "$dir/sys" -t sysfs
    chroot_mount /dev "$dir/dev" --bind
    chroot_mount "$ROOT" "$dir$ROOT" --bind
    DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2
    # The project's dependencies, editable on the checkout's path as the guest will see it.
    chroot "$dir" python3 -m venv "$GUEST_VENV"
    # pip trusts what the host trusts (a TLS-inspecting proxy's CA, say), for this step only.
    chroot_mount /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt" --bind -o ro
    chroot "$dir" env -u PIP_FIND_LINKS "$GUEST_VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[dev]" >&2
    # The stamp hack/install-deps.sh looks for, so the guest never runs pip.
    touch "$dir$GUEST_VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
    chroot "$dir" apt-get clean   # the image keeps no .debs
    umount_chroot
    rm -f "$dir/usr/sbin/policy-rc.d"
}

configure_guest() {   # configure_guest DIR
    local dir=$1
    echo criservice-vm > "$dir/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 criservice-vm\n::1 localhost\n' > "$dir/etc/hosts"
    : > "$dir/etc/resolv.conf"
    # The checkout at its own path, the image's venv over its .venv, the host registry's
    # storage read-only for the job to copy.
    mkdir -p "$dir$ROOT" "$dir/mnt/registry"
    cat > "$dir/etc/fstab" <<FSTAB
/dev/vda / ext4 rw,relatime,errors=remount-ro 0 1
checkout $ROOT 9p trans=virtio,version=9p2000.L,msize=524288,cache=mmap 0 0
$GUEST_VENV $ROOT/.venv none bind,x-systemd.requires-mounts-for=$ROOT 0 0
registry /mnt/registry 9p trans=virtio,version=9p2000.L,msize=524288,ro,nofail 0 0
FSTAB
    printf '%s\n' 9p 9pnet_virtio overlay br_netfilter > "$dir/etc/modules-load.d/criservice-vm.conf"
    sed "s|@ROOT@|$ROOT|g" "$ROOT/hack/vm/criservice-vm-job.service" > "$dir/etc/systemd/system/criservice-vm-job.service"
    ln -sf /etc/systemd/system/criservice-vm-job.service "$dir/etc/systemd/system/multi-user.target.wants/"
    # Nothing the guest does not need at boot: the tests start their own registry,
    # nginx and Prometheus; timers would only steal the emulated CPUs.
    local unit
    for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer \
        dpkg-db-backup.timer nginx.service prometheus.service prometheus-node-exporter.service \
        docker-registry.service systemd-timesyncd.service getty@tty1.service; do
        ln -sf /dev/null "$dir/etc/systemd/system/$unit"
    done
    chroot "$dir" passwd -d root >/dev/null
}

build() {
    if [[ -s $IMAGE/rootfs.img && -s $IMAGE/vmlinuz && -s $IMAGE/initrd.img ]]; then
        log "image $IMAGE is up to date"
        return
    fi
    ((EUID == 0)) || die "building the image needs root (debootstrap, chroot, mounts)"
    need debootstrap mkfs.ext4:e2fsprogs
    local work=$IMAGE.build
    rm -rf "$work" && mkdir -p "$work"
    # shellcheck disable=SC2064  # $work is fixed now
    trap "umount_chroot; rm -rf --one-file-system '$work'" EXIT
    local start=$SECONDS
    log "building $IMAGE (debootstrap $SUITE from $MIRROR, ${#PACKAGES[@]} packages)"
    build_rootfs "$work/rootfs"
    configure_guest "$work/rootfs"
    cp "$(ls "$work"/rootfs/boot/vmlinuz-* | sort -V | tail -1)" "$work/vmlinuz"
    cp "$(ls "$work"/rootfs/boot/initrd.img-* | sort -V | tail -1)" "$work/initrd.img"
    local size_mb
    size_mb=$(( $(du -sm "$work/rootfs" | cut -f1) * 2 + 4096 ))   # room for images and containers
    mkfs.ext4 -q -L criservice-vm -d "$work/rootfs" "$work/rootfs.img" "${size_mb}M"
    rm -rf --one-file-system "$work/rootfs"
    rm -rf "$IMAGE" && mv "$work" "$IMAGE"
    trap - EXIT
    # Images of other inputs are out of date: only the newest one is kept.
    find "$VM_DIR" -mindepth 1 -maxdepth 1 ! -name "${IMAGE##*/}" ! -name "*.build" -exec rm -rf --one-file-system {} +
    log "image built in $((SECONDS - start)) s: $IMAGE ($(du -sh --apparent-size "$IMAGE/rootfs.img" | cut -f1) sparse)"
}

# run CMD...: boot a throw-away overlay of the image, run CMD in the guest, return its status.
run() {
    need qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils
    build
    mkdir -p "$OUT" "$REGISTRY_STORE"
    rm -f "$OUT"/{job.sh,job.log,started,rc,console.log}
    printf '%q ' "$@" > "$OUT/job.sh"
    local disk=$OUT/disk.qcow2
    qemu-img create -q -f qcow2 -F raw -b "$IMAGE/rootfs.img" "$disk"
    log "booting the guest (${CPUS} CPUs, ${MEMORY} MiB, TCG) to run: $*"
    local start=$SECONDS
    qemu-system-x86_64 -accel tcg,thread=multi -smp "$CPUS" -m "$MEMORY" -nic none -rtc base=utc,clock=host \
        -display none -serial "file:$OUT/console.log" -no-reboot \
        -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.unified_cgroup_hierarchy=1" \
        -drive "file=$disk,if=virtio,format=qcow2" \
        -virtfs "local,path=$ROOT,mount_tag=checkout,security_model=passthrough,id=checkout" \
        -virtfs "local,path=$REGISTRY_STORE,mount_tag=registry,security_model=passthrough,readonly=on,id=registry" &
    local qemu=$!
    # shellcheck disable=SC2064  # the pid and path are fixed now
    trap "kill $qemu 2>/dev/null; rm -f '$disk'" EXIT
    local status=0
    while [[ ! -e $OUT/started ]]; do
        if ! kill -0 "$qemu" 2>/dev/null; then
            fail_console "the guest stopped before its job started"
        elif ((SECONDS - start > BOOT_TIMEOUT)); then
            fail_console "the guest did not come up within ${BOOT_TIMEOUT} s"
        fi
        sleep 1
    done
    log "guest up in $((SECONDS - start)) s; its job's log: $OUT/job.log"
    while kill -0 "$qemu" 2>/dev/null; do
        ((SECONDS - start <= RUN_TIMEOUT)) || fail_console "the guest's job did not end within ${RUN_TIMEOUT} s"
        sleep 1
    done
    wait "$qemu" || true
    trap - EXIT
    rm -f "$disk"
    [[ -s $OUT/rc ]] || fail_console "the guest powered off without its job's status"
    status=$(cat "$OUT/rc")
    log "guest ran for $((SECONDS - start)) s; job exited with $status"
    return "$status"
}

# The test images built and pushed on the host, into the registry storage the guest copies.
host_images() {
    local started=""
    if ! curl -sf http://127.0.0.1:5000/v2/ >/dev/null; then
        "$ROOT/hack/registry.sh" start >&2
        started=1
    fi
    "$ROOT/hack/build-test-images.sh" --push 127.0.0.1:5000 >&2
    [[ -z $started ]] || "$ROOT/hack/registry.sh" stop >&2
}

fail_console() {
    log "error: $1; the guest's console (last 60 lines of $OUT/console.log):"
    tail -n 60 "$OUT/console.log" >&2 || true
    exit 1
}

IMAGE=$VM_DIR/$(image_key)   # here, once every function it hashes is defined
case ${1:-} in
    build) build ;;
    run) shift; (($#)) || die "usage: $0 run CMD..."; run "$@" ;;
    test) host_images; run hack/vm/guest-test.sh ;;
    conformance) shift; host_images; run hack/vm/guest-conformance.sh "$@" ;;
    *) echo "usage: $0 build | run CMD... | test | conformance [critest|kubelet|node]..." >&2; exit 2 ;;
esac
