#!/usr/bin/env bash
# A real kubelet on criservice: tests/e2e/test_kubelet.py with a standalone kubelet
# (static pods, no API server), built by hack/install-kubelet.sh when missing.
#   hack/kubelet-e2e.sh [pytest args...]
# Uses the runtime named by CONTAINER_RUNTIME_ENDPOINT when set (the environment of
# `hack/e2e-env.sh up`, with the same E2E_* variables, so that the restart scenario
# restarts that daemon); otherwise brings one up and takes it down afterwards.
# The kubelet must be the only client making pods on that runtime while this runs
# (it stops and removes pods it does not know): the tests refuse to start while the
# runtime holds pods that a kubelet did not make.
#
# Its files live in $KUBELET_E2E_DIR (default /var/tmp/criservice-kubelet-e2e), its
# pods' cgroups under $KUBELET_E2E_CGROUP_ROOT (/criservice-kubelet-e2e); it listens
# on 127.0.0.1 only: 10250 (KUBELET_E2E_PORT), the read-only 10255
# (KUBELET_E2E_READONLY_PORT) whose /pods the tests compare with crictl, and healthz
# 10248 (KUBELET_E2E_HEALTHZ_PORT). The log (with both views side by side) and the
# kubelet's own log go to $KUBELET_E2E_REPORT_DIR (default _out/kubelet-e2e).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export KUBELET_E2E_REPORT_DIR=${KUBELET_E2E_REPORT_DIR:-$ROOT/_out/kubelet-e2e}
export KUBELET_E2E_REQUIRED=1
"$ROOT/hack/install-kubelet.sh"

if [[ -z ${CONTAINER_RUNTIME_ENDPOINT:-} ]]; then
    trap '"$ROOT/hack/e2e-env.sh" down >/dev/null 2>&1' EXIT
    set -a
    # shellcheck disable=SC1090
    source <("$ROOT/hack/e2e-env.sh" up)
    set +a
fi

mkdir -p "$KUBELET_E2E_REPORT_DIR"
echo "kubelet-e2e: $("$ROOT/.tools/bin/kubelet" --version) on $CONTAINER_RUNTIME_ENDPOINT"
start=$(date +%s)
status=0
"$ROOT/.venv/bin/python" -m pytest -ra -s -p no:cacheprovider tests/e2e/test_kubelet.py "$@" \
    2>&1 | tee "$KUBELET_E2E_REPORT_DIR/kubelet-e2e.log" || status=$?
echo "kubelet-e2e: $(( $(date +%s) - start )) s; logs in $KUBELET_E2E_REPORT_DIR"
exit "$status"
