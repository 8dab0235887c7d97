#!/usr/bin/env bash
# CI's Docker engine and base images (docs/deployment.md).
#   bash docker/ci/engine.sh start   install docker.io + docker-compose from apt if missing, start
#                                    dockerd if none answers, build the local base images; prints
#                                    nothing else on success
#   bash docker/ci/engine.sh stop    stop dockerd if `start` started it (by its pid)
# Container registries cannot be reached here, so `FROM python:3.11-slim` cannot be pulled. The
# base is built from Debian's packages instead: debootstrap --variant=minbase (python3,
# python3-venv, ca-certificates, redis-server, prometheus, wget) -> docker import, then a venv at
# /opt/venv on PATH (so `python` and `pip` work as in the official image) and the host's extra CA
# certificates, which pip needs to reach the package index from inside a build. Three tags:
#   usfad-ci-base:<key>        the Dockerfiles' BASE_IMAGE
#   usfad-ci-redis:<key>       redis-server from Debian (the compose file's USFAD_REDIS_IMAGE)
#   usfad-ci-prometheus:<key>  prometheus from Debian (USFAD_PROMETHEUS_IMAGE)
# <key> hashes the package list, the suite and the CA certificates, so a cached image in the
# local engine is reused only when it was built from the same inputs; from nothing it takes
# about 2 minutes (debootstrap), from the cache about a second.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUITE=bookworm
MIRROR=${USFAD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,ca-certificates,redis-server,prometheus,wget
RECIPE=1  # bump when build_base changes what goes into the base image
STATE=${USFAD_CI_STATE:-/var/tmp/usfad-ci}
mkdir -p "$STATE"

log() { echo "[docker/ci/engine.sh] $*" >&2; }

image_key() {
  { echo "$SUITE $MIRROR $PACKAGES $RECIPE"; cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; } \
    | sha256sum | cut -c1-12
}

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

start_engine() {
  if engine_answers; then
    return
  fi
  log "starting dockerd (log: $STATE/dockerd.log)"
  rm -f "$STATE/dockerd.pid"
  nohup dockerd >"$STATE/dockerd.log" 2>&1 &
  echo $! >"$STATE/dockerd.pid"
  for _ in $(seq 1 120); do
    engine_answers && return
    sleep 0.5
  done
  tail -20 "$STATE/dockerd.log" >&2
  log "dockerd did not answer within 60 s"
  exit 1
}

build_base() {
  local key base rootfs
  key=$(image_key)
  base="usfad-ci-base:$key"
  if ! docker image inspect "$base" >/dev/null 2>&1; then
    rootfs=$(mktemp -d /var/tmp/usfad-rootfs.XXXXXX)
    log "debootstrap $SUITE into $rootfs"
    nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
      >"$STATE/debootstrap.log" 2>&1 || { tail -20 "$STATE/debootstrap.log" >&2; rm -rf "$rootfs"; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "usfad-ci-rootfs:$key" >/dev/null
    rm -rf "$rootfs"
    local context
    context=$(mktemp -d)
    mkdir -p "$context/ca"
    cp /usr/local/share/ca-certificates/*.crt "$context/ca/" 2>/dev/null || true
    cat >"$context/Dockerfile" <<DOCKERFILE
FROM usfad-ci-rootfs:$key
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null && python3 -m venv /opt/venv && /opt/venv/bin/python -m pip --version
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 LANG=C.UTF-8
DOCKERFILE
    docker build -q -t "$base" "$context" 2>&1 >/dev/null | grep -v -i -E "deprecated|buildx|^$" >&2 || true
    rm -rf "$context"
    docker image rm "usfad-ci-rootfs:$key" >/dev/null 2>&1 || true
  fi
  printf 'FROM %s\nWORKDIR /data\nCMD ["redis-server"]\n' "$base" \
    | docker build -q -t "usfad-ci-redis:$key" - 2>&1 >/dev/null | grep -v -i -E "deprecated|buildx|^$" >&2 || true
  printf 'FROM %s\nWORKDIR /prometheus\nENTRYPOINT ["/usr/bin/prometheus"]\n' "$base" \
    | docker build -q -t "usfad-ci-prometheus:$key" - 2>&1 >/dev/null | grep -v -i -E "deprecated|buildx|^$" >&2 || true
  # What tests/test_deploy_stack.py reads:
  cat >"$STATE/images.env" <<ENV
USFAD_BASE_IMAGE=usfad-ci-base:$key
USFAD_REDIS_IMAGE=usfad-ci-redis:$key
USFAD_PROMETHEUS_IMAGE=usfad-ci-prometheus:$key
ENV
}

clean_stale_stacks() {
  # Stacks of tests/test_deploy_stack.py are named usfad-ci-<pid of its pytest>; one whose pytest
  # is gone (killed before its teardown ran) is removed here: containers, network, volumes.
  engine_answers || return 0
  local project pid
  for project in $(docker ps -a --format '{{.Label "com.docker.compose.project"}}' | grep -E '^usfad-ci-[0-9]+$' | sort -u); do
    pid=${project#usfad-ci-}
    kill -0 "$pid" 2>/dev/null && continue
    log "removing the stale stack $project"
    docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null
    docker network ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker network rm >/dev/null
    docker volume ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker volume rm >/dev/null
  done
}

stop_engine() {
  clean_stale_stacks
  if [[ -f "$STATE/dockerd.pid" ]]; then
    local pid
    pid=$(cat "$STATE/dockerd.pid")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping dockerd (pid $pid)"
      kill "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$STATE/dockerd.pid"
  fi
}

case "${1:-}" in
  start) install_packages; start_engine; clean_stale_stacks; build_base ;;
  stop) stop_engine ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
