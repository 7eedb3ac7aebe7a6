#!/usr/bin/env bash
# Pod start with crun against runc, in the guest (on the project's v1 hybrid hosts
# crun refuses every container): one criservice with the systemd cgroup driver, its
# two handlers measured in one run by hack/bench_pods.py through the CRI.
#   hack/vm.sh run hack/vm/guest-bench-handlers.sh
# Counts are small: the emulation runs fork and exec about 30x slower than the host,
# so the figures compare the handlers with each other, not with the host's. Both share
# one daemon, so its memory and list figures are not the handlers' and are left out.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
trap '"$ROOT/hack/e2e-env.sh" down >/dev/null 2>&1 || true' EXIT
E2E_CGROUP_DRIVER=systemd E2E_IMAGES_PUSHED=1 "$ROOT/hack/e2e-env.sh" up > /tmp/e2e-env.sh
set -a
# shellcheck disable=SC1091
source /tmp/e2e-env.sh
set +a
E2E_DIR=${E2E_DIR:-/var/tmp/criservice-e2e}
pid=$(cat "$E2E_DIR/criservice.pid")
mkdir -p "$ROOT/_out/bench-handlers"
"$ROOT/.venv/bin/python" "$ROOT/hack/bench_pods.py" \
    --runtime "runc=$CONTAINER_RUNTIME_ENDPOINT,pid=$pid,monitor=conmon:$E2E_DIR/,handler=runc" \
    --runtime "crun=$CONTAINER_RUNTIME_ENDPOINT,pid=$pid,monitor=conmon:$E2E_DIR/,handler=crun" \
    --log-root /var/tmp/bench-handlers-logs --sequential "${BENCH_SEQUENTIAL:-10}" --parallel 5 \
    --parallel-rounds 1 --pod-mode 0 --list-calls 0 "$@" \
    | tee "$ROOT/_out/bench-handlers/result.txt"
