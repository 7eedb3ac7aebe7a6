#!/usr/bin/env bash
# Run a local OCI registry for the tests: Debian's docker-registry (CNCF distribution 2.8)
# on loopback, plain HTTP, storage in one directory. No public registry can be reached
# from the test machines, so hack/build-test-images.sh pushes the test images here and
# the runtime's registry mirrors point at it (see docs on test images).
#
#   hack/registry.sh start            start it (no-op if it already answers on /v2/)
#   hack/registry.sh stop [--purge]   stop it; --purge also deletes its storage
#   hack/registry.sh status           exit 0 if it answers, 3 if not (LSB convention)
#
# Environment: REGISTRY_PORT (default 5000), REGISTRY_DIR (default
# /var/tmp/criservice-registry; holds config.yml, registry.pid, registry.log, data/).
set -euo pipefail

PORT=${REGISTRY_PORT:-5000}
DIR=${REGISTRY_DIR:-/var/tmp/criservice-registry}
ADDR=127.0.0.1:$PORT
URL=http://$ADDR/v2/
CONFIG=$DIR/config.yml
PIDFILE=$DIR/registry.pid
LOG=$DIR/registry.log
BIN=/usr/bin/docker-registry
START_TIMEOUT=15 # seconds; the registry is normally up in well under one

usage() {
    echo "usage: $0 start | stop [--purge] | status" >&2
    exit 2
}

answers() {
    # A short timeout: a port that accepts but never answers must not hang the caller.
    curl -sf --max-time 2 -o /dev/null "$URL"
}

# The pid from the pid file, printed only if that process is still our docker-registry:
# a stale file whose pid was reused by something else must never make us kill it.
registry_pid() {
    local pid cmdline
    [[ -s $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == "$BIN serve $CONFIG " ]] || return 1
    echo "$pid"
}

write_config() {
    # Rewritten on every start so a changed REGISTRY_PORT or DIR takes effect; the
    # storage itself is kept. Deletion is enabled because tests remove images.
    local tmp=$CONFIG.tmp
    cat >"$tmp" <<EOF
# Written by hack/registry.sh; edits are overwritten on the next start.
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $ADDR
  # Fixed, because it only signs upload state and this registry is loopback-only;
  # it silences the "generated random secret" warning on every start.
  secret: criservice-local-test-registry
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    mv -f "$tmp" "$CONFIG"
}

start() {
    local pid deadline
    if answers; then
        echo "registry: already answering on $URL"
        return 0
    fi
    [[ -x $BIN ]] || { echo "registry: $BIN missing (apt-get install docker-registry)" >&2; exit 1; }
    if pid=$(registry_pid); then
        # Ours, but not answering: wedged. Replace it rather than stack a second one.
        echo "registry: pid $pid does not answer on $URL; restarting it" >&2
        stop_pid "$pid"
    fi
    mkdir -p "$DIR/data"
    write_config
    # setsid and closed stdin: the registry must outlive the shell that started it.
    setsid "$BIN" serve "$CONFIG" </dev/null >>"$LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"

    deadline=$((SECONDS + START_TIMEOUT))
    until answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "registry: docker-registry exited during start-up; log follows ($LOG)" >&2
            tail -n 20 "$LOG" >&2 || true
            rm -f "$PIDFILE"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "registry: no answer on $URL within ${START_TIMEOUT}s; log follows ($LOG)" >&2
            tail -n 20 "$LOG" >&2 || true
            stop_pid "$pid"
            exit 1
        fi
        sleep 0.1
    done
    echo "registry: serving $URL (pid $pid, storage $DIR/data, log $LOG)"
}

stop_pid() {
    local pid=$1 deadline
    kill -TERM "$pid" 2>/dev/null || return 0
    # distribution drains for a moment on SIGTERM; give it a deadline, then insist.
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$PIDFILE"
}

stop() {
    local purge=${1:-} pid
    [[ -z $purge || $purge == --purge ]] || usage
    if pid=$(registry_pid); then
        stop_pid "$pid"
        echo "registry: stopped pid $pid"
    else
        rm -f "$PIDFILE"
        if answers; then
            # Someone else's registry on our port: not ours to kill.
            echo "registry: $URL answers but was not started from $DIR; left alone" >&2
        else
            echo "registry: not running"
        fi
    fi
    if [[ $purge == --purge ]]; then
        rm -rf -- "$DIR"
        echo "registry: removed $DIR"
    fi
}

status() {
    local pid=
    pid=$(registry_pid) || true
    if answers; then
        echo "registry: answering on $URL${pid:+ (pid $pid)}, storage $DIR/data"
        return 0
    fi
    if [[ -n $pid ]]; then
        echo "registry: pid $pid is running but does not answer on $URL"
    else
        echo "registry: not running"
    fi
    return 3
}

case ${1:-} in
start) (($# == 1)) || usage; start ;;
stop) (($# <= 2)) || usage; stop "${2:-}" ;;
status) (($# == 1)) || usage; status ;;
*) usage ;;
esac
