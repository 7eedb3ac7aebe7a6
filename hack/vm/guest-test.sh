#!/usr/bin/env bash
# The guest suite (hack/vm.sh test runs it inside the guest, as root, in the checkout):
# what must hold where systemd is PID 1 and cgroup v2 is the only hierarchy.
#   1. the platform itself: systemd PID 1, cgroup2 at /sys/fs/cgroup
#   2. the README's first command installs criservice as its systemd unit and starts it
#   3. tests/e2e/test_systemd_unit.py against that unit (Type=notify, restart keeps
#      containers, the journal), with a mirror to the local registry as a drop-in
#   4. tests/integration/test_cgroup_v2.py: the systemd and cgroupfs drivers on v2
#      (where containers and conmon land, limits, updates, stats, OOM kills), and
#      crun, which refuses this project's v1 hybrid hosts
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PYTEST=("$ROOT/.venv/bin/python" -m pytest -ra -p no:cacheprovider)
start=$SECONDS
step() { echo "=== guest: $* ($((SECONDS - start)) s)"; }

step "platform"
[[ $(ps -o comm= -p 1) == systemd ]] || { echo "PID 1 is $(ps -o comm= -p 1), not systemd"; exit 1; }
[[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]] || { echo "/sys/fs/cgroup is not cgroup2"; exit 1; }
echo "systemd $(systemctl --version | awk 'NR == 1 {print $2}'), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"

step "the local registry and the test images (hack/e2e-env.sh up)"
trap '"$ROOT/hack/e2e-env.sh" down >/dev/null 2>&1 || true' EXIT
E2E_IMAGES_PUSHED=1 "$ROOT/hack/e2e-env.sh" up > /tmp/e2e-env.sh
set -a
# shellcheck disable=SC1091
source /tmp/e2e-env.sh
set +a

step "the README's first command: hack/local-up.sh"
"$ROOT/hack/local-up.sh"
install -d /etc/criservice/criservice.toml.d
cat > /etc/criservice/criservice.toml.d/90-vm-test-registry.toml <<TOML
[image.registries."registry.k8s.io"]
mirrors = ["http://$CRISERVICE_REGISTRY"]
TOML
systemctl restart criservice

step "tests/e2e/test_systemd_unit.py on the unit"
status=0
CONTAINER_RUNTIME_ENDPOINT=unix:///run/criservice/criservice.sock \
    IMAGE_SERVICE_ENDPOINT=unix:///run/criservice/criservice.sock \
    "${PYTEST[@]}" tests/e2e/test_systemd_unit.py || status=1
systemctl stop criservice

step "tests/integration/test_cgroup_v2.py: both cgroup drivers on cgroup v2, and the crun handler"
"${PYTEST[@]}" tests/integration/test_cgroup_v2.py "tests/integration/test_oci_runtime.py::test_crun_handler" \
    || status=1
step "done, status $status"
exit $status
