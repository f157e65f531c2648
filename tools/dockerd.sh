#!/usr/bin/env bash
# A Docker engine for the image tests (tests/image/), on a machine that has none running.
#   tools/dockerd.sh start   install docker.io, debootstrap and docker-compose from Debian's packages when
#                            missing (needs root), start dockerd if no daemon answers, wait until it does
#   tools/dockerd.sh stop    stop the dockerd this script started (nothing else)
# dockerd runs as root with --storage-driver=vfs --iptables=false --ip-masq=false --bridge=none: the
# tests build with --network host and run containers with --network host. See docs/deploy.md.
set -euo pipefail
STATE_DIR=${ATC_DOCKERD_DIR:-/var/run/atc-dockerd}
PIDFILE=$STATE_DIR/dockerd.pid

install_missing() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dockerd.sh: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
  fi
}

start() {
  if docker info >/dev/null 2>&1; then echo "dockerd.sh: a Docker daemon already answers"; return 0; fi
  if [ "$(id -u)" != 0 ]; then echo "dockerd.sh: not root, cannot start dockerd (image tests will skip)"; return 0; fi
  install_missing
  mkdir -p "$STATE_DIR"
  dockerd --storage-driver=vfs --iptables=false --ip-masq=false --bridge=none \
    --pidfile "$PIDFILE" >"$STATE_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then echo "dockerd.sh: dockerd is up"; return 0; fi
    sleep 1
  done
  echo "dockerd.sh: dockerd did not answer within 60 s; its log:" >&2
  tail -20 "$STATE_DIR/dockerd.log" >&2
  return 1
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  kill "$(cat "$PIDFILE")" 2>/dev/null || true
  for _ in $(seq 1 30); do [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null || return 0; sleep 1; done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
