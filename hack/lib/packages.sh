# The Debian packages criservice and its tests need: hack/install-deps.sh installs them
# on the host, hack/vm.sh into the guest image.
# shellcheck disable=SC2034  # used by the scripts that source this file
PACKAGES=(
    runc crun conmon containernetworking-plugins golang-github-containers-common
    iproute2 iptables util-linux mount procps
    docker-registry skopeo umoci
    # what hack/build-test-images.sh takes binaries from (see shared test-images notes)
    nginx-light apache2-bin gcc libc6-dev
    curl jq bc tmux python3-venv
    # kube-proxy clears conntrack entries of UDP services with it (hack/local-cluster.sh)
    conntrack
    # observability tests (a real Prometheus scrapes the daemon) and CheckpointContainer
    prometheus criu
    # critest's AppArmor specs load their profiles with `sudo apparmor_parser`; they run
    # where the kernel has AppArmor on (the guest's does, this host's does not)
    sudo apparmor
)
