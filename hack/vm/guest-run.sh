#!/usr/bin/env bash
# In the guest (criservice-vm-job.service): run the job hack/vm.sh wrote to _out/vm/job.sh
# in the checkout, its output to _out/vm/job.log and the console, its status to _out/vm/rc.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/_out/vm
echo "$(date -u +%FT%TZ) $(uname -r), systemd $(systemctl --version | awk 'NR == 1 {print $2}'), $(stat -fc %T /sys/fs/cgroup)" > "$OUT/started"
# The host registry's storage with the test images, copied: the guest's tests run a
# registry of their own on it (hack/e2e-env.sh with E2E_IMAGES_PUSHED) and may delete.
if [[ -d /mnt/registry/data ]]; then
    mkdir -p /var/tmp/criservice-registry
    cp -a /mnt/registry/data /var/tmp/criservice-registry/
fi
cd "$ROOT"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
bash "$OUT/job.sh" 2>&1 | tee "$OUT/job.log"
echo "${PIPESTATUS[0]}" > "$OUT/rc"
sync
