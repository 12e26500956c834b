#!/usr/bin/env bash
# Installs (Debian/Ubuntu, as root) and starts a Docker engine when none answers, plus what the Docker tests use:
# debootstrap (the local base image), docker-compose and docker-registry. Idempotent: a no-op when all is there.
set -euo pipefail
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
if [ ${#missing[@]} -gt 0 ]; then
  echo "docker-setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's package starts a registry service where an init system runs; the tests start their own on demand.
if ! docker info >/dev/null 2>&1; then
  echo "docker-setup: starting dockerd"
  nohup dockerd > /var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
docker info --format 'docker-setup: engine {{.ServerVersion}} ready' || { tail -20 /var/log/dockerd.log; exit 1; }
