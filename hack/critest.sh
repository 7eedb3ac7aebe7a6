#!/usr/bin/env bash
# The whole critest (cri-tools v1.37.0) validation suite against criservice.
#   hack/critest.sh [-p N] [critest flags...]
# Brings up hack/e2e-env.sh when it is not up (and takes it down again), runs
# every spec but the skips below, writes a JUnit and a JSON report to
# $CRITEST_REPORT_DIR (default _out/critest), prints the tally by area and the
# time it took, and fails when any spec fails. -p N runs N ginkgo nodes
# (default 2): [Serial] specs still run alone.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPORTS=${CRITEST_REPORT_DIR:-$ROOT/_out/critest}
NODES=2
if [[ ${1:-} == -p ]]; then NODES=$2; shift 2; fi

# Every skip has its reason; nothing else may be skipped by us.
SKIPS=(
    # Pins the digest of the upstream busybox image; an image rebuilt offline cannot have it.
    "public image with digest should be pulled and removed"
)
# critest skips by itself: AppArmor specs on a host without AppArmor, NRI specs
# without -nri-socket (criservice has no NRI yet), user namespace specs when no
# handler announces them (runc 1.1 has no idmapped mounts), benchmarks.

if [[ -z ${CONTAINER_RUNTIME_ENDPOINT:-} ]]; then
    trap '"$ROOT/hack/e2e-env.sh" down >/dev/null 2>&1' EXIT
    set -a
    # shellcheck disable=SC1090
    source <("$ROOT/hack/e2e-env.sh" up)
    set +a
fi

skip=$(printf '(%s)|' "${SKIPS[@]}")
mkdir -p "$REPORTS"
export PATH=$ROOT/.tools/bin:$PATH   # -parallel runs `ginkgo`
start=$(date +%s)
status=0
(cd "$REPORTS" && critest --runtime-endpoint "$CONTAINER_RUNTIME_ENDPOINT" \
    --image-endpoint "$CONTAINER_RUNTIME_ENDPOINT" -parallel "$NODES" \
    -ginkgo.skip "${skip%|}" -ginkgo.no-color \
    -ginkgo.junit-report "$REPORTS/junit.xml" -ginkgo.json-report "$REPORTS/report.json" "$@") \
    > "$REPORTS/critest.log" 2>&1 || status=$?
echo "critest: $(( $(date +%s) - start )) s, $NODES nodes; log and reports in $REPORTS"
"$ROOT/.venv/bin/python" "$ROOT/hack/critest_tally.py" "$REPORTS/report.json" || status=1
if [[ $status -ne 0 ]]; then
    grep -E '^\s*\[(FAIL|PANICKED|TIMEDOUT)\]' "$REPORTS/critest.log" | sort -u || tail -n 40 "$REPORTS/critest.log"
fi
exit $status
