#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine, as root:
#   1. installs what it needs (hack/install-deps.sh)
#   2. the type check (mypy) and the unit tests (no root, seconds)
#   3. brings up hack/e2e-env.sh and runs the integration and end-to-end tests
#      (real runc, conmon, CNI, registry; crictl and critest as clients), then a
#      real kubelet's (hack/kubelet-e2e.sh), a one-node cluster's through kubectl
#      (hack/cluster-e2e.sh), the CI focus of the node conformance suite
#      (hack/node-e2e.sh) and the guest suite on cgroup v2 under systemd (hack/vm.sh test)
#   4. tears the environment down, and exits non-zero if anything failed.
# Extra arguments go to every pytest run (e.g. -x, -k NAME).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
"$ROOT/hack/install-deps.sh"
PYTEST=("$ROOT/.venv/bin/python" -m pytest -ra)

status=0
echo "=== type check (mypy over criservice/ and runtime/, as pyproject.toml configures it)"
"$ROOT/.venv/bin/mypy" || status=1

echo "=== unit tests"
"${PYTEST[@]}" tests/unit "$@" || status=1

echo "=== integration and end-to-end tests (hack/e2e-env.sh up)"
trap '"$ROOT/hack/e2e-env.sh" down' EXIT
set -a
# shellcheck disable=SC1090
source <("$ROOT/hack/e2e-env.sh" up)
set +a
# The kubelet tests run on their own below: a kubelet stops and removes pods it does
# not know, so it must not share the runtime with the other tests.
"${PYTEST[@]}" tests/integration tests/e2e --ignore tests/e2e/test_kubelet.py --ignore tests/e2e/test_cluster.py "$@" || status=1

echo "=== a real kubelet on criservice (hack/kubelet-e2e.sh)"
rc=0
"$ROOT/hack/kubelet-e2e.sh" "$@" || rc=$?
((rc == 0 || rc == 5)) || status=1   # 5: extra arguments (-k NAME) selected none of them

echo "=== a one-node cluster on criservice through kubectl (hack/cluster-e2e.sh)"
rc=0
"$ROOT/hack/cluster-e2e.sh" "$@" || rc=$?
((rc == 0 || rc == 5)) || status=1

if (($# == 0)); then   # a pytest selection (-k NAME) leaves the ginkgo suite and the guest out
    echo "=== Kubernetes node conformance, the CI focus (hack/node-e2e.sh)"
    "$ROOT/hack/node-e2e.sh" || status=1
    echo "=== cgroup v2 and systemd: the guest suite under qemu (hack/vm.sh test)"
    "$ROOT/hack/vm.sh" test || status=1
fi

if ((status)); then echo "=== FAILED"; else echo "=== all tests passed"; fi
exit $status
