#!/usr/bin/env bash
# Install criservice and its dependencies, then run the daemon with the default
# configuration on the default socket (/run/criservice/criservice.sock).
#   hack/local-up.sh        install and start (no-op for parts already done)
#   hack/local-up.sh stop   stop a daemon this script started
# Under systemd the daemon is the criservice.service unit; elsewhere (containers,
# CI sandboxes) it runs detached with its log in /var/log/criservice.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SOCKET=/run/criservice/criservice.sock
PIDFILE=/run/criservice.pid
LOG=/var/log/criservice.log
have_systemd() { [[ -d /run/systemd/system ]]; }

if [[ ${1:-} == stop ]]; then
    if have_systemd; then systemctl stop criservice; exit 0; fi
    if [[ -s $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        kill -TERM "$(cat "$PIDFILE")"
        for _ in $(seq 100); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$PIDFILE"
    exit 0
fi

"$ROOT/hack/install-deps.sh"

ln -sf "$ROOT/.venv/bin/criservice" /usr/local/bin/criservice
ln -sf "$ROOT/.tools/bin/crictl" /usr/local/bin/crictl
install -d -m 0755 /etc/criservice /etc/cni/net.d
[[ -e /etc/criservice/criservice.toml ]] || install -m 0644 "$ROOT/deploy/criservice.toml" /etc/criservice/criservice.toml
[[ -e /etc/crictl.yaml ]] || install -m 0644 "$ROOT/deploy/crictl.yaml" /etc/crictl.yaml
if ! compgen -G '/etc/cni/net.d/*.conflist' >/dev/null && ! compgen -G '/etc/cni/net.d/*.conf' >/dev/null; then
    install -m 0644 "$ROOT/deploy/cni/10-criservice.conflist" /etc/cni/net.d/10-criservice.conflist
fi

/usr/local/bin/criservice config check

if have_systemd; then
    install -m 0644 "$ROOT/deploy/systemd/criservice.service" /etc/systemd/system/criservice.service
    systemctl daemon-reload
    systemctl enable --now criservice
    systemctl restart criservice
elif [[ -s $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "local-up: criservice already running (pid $(cat "$PIDFILE")); 'hack/local-up.sh stop' to stop it"
else
    setsid /usr/local/bin/criservice serve </dev/null >>"$LOG" 2>&1 &
    echo $! > "$PIDFILE"
fi

for _ in $(seq 150); do
    if crictl --runtime-endpoint "unix://$SOCKET" version >/dev/null 2>&1; then
        crictl --runtime-endpoint "unix://$SOCKET" version
        echo "local-up: criservice is serving unix://$SOCKET (log: $(have_systemd && echo 'journalctl -u criservice' || echo $LOG))"
        exit 0
    fi
    sleep 0.2
done
echo "local-up: criservice did not answer on $SOCKET within 30s; log follows" >&2
tail -n 50 "$LOG" >&2 || true
exit 1
