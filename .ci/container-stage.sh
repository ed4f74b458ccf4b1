#!/usr/bin/env bash
# Container stage: the end-to-end suite on the MiniStack container, with the
# image built offline when it is absent.
#
#   PYTHON=/path/to/venv/bin/python bash .ci/container-stage.sh [pytest args...]
#
# Expects:
#   - root (apt-get, dockerd, debootstrap, chroot);
#   - $PYTHON, or `python` on PATH: the project's venv, with
#     `pip install -e ".[test]"` done;
#   - Debian's package mirror and PyPI reachable (docker.io, debootstrap, the
#     image's wheels); no container registry is needed.
# Does:
#   1. installs docker.io when dockerd is missing (apt-get update first);
#   2. starts dockerd when no engine answers, waits for it, and stops it on exit;
#   3. builds the MiniStack image (csv-pipeline build-image) when the
#      tag is absent, installing debootstrap first if needed;
#   4. runs `pytest -m "e2e or container" --csv-pipeline-backend=ministack-container -n 2`
#      (extra arguments are passed to pytest);
#   5. fails when a container is left behind, and removes it: a container whose
#      starting process (label csv-pipeline.harness.pid) has exited, or that has
#      no such label; on an engine that was already running, only containers
#      labelled csv-pipeline.harness are considered (other users may share it).
# Environment: TESTCONTAINERS_RYUK_DISABLED defaults to true (Ryuk's image cannot
# be pulled offline; the harness removes its own containers). DOCKERD_FLAGS adds
# flags to a dockerd this script starts. CSV_PIPELINE_MINISTACK_IMAGE overrides the tag.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

PYTHON=${PYTHON:-$(command -v python || command -v python3)}
export TESTCONTAINERS_RYUK_DISABLED=${TESTCONTAINERS_RYUK_DISABLED:-true}
LABEL=csv-pipeline.harness
WORK=$(mktemp -d)
DOCKERD_PID=""
APT_UPDATED=""

log() { echo "[container-stage] $*"; }

apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"$WORK/apt.log" 2>&1 || {
    tail -20 "$WORK/apt.log"; return 1; }
}

engine_answers() { docker info >/dev/null 2>&1; }

leftovers() {
  # Containers whose starting process (label $LABEL.pid) is gone, or that have
  # no such label: all containers on an engine this script started, only the
  # harness's on an engine that was already running (others may use it).
  local ids id pid
  if [ -n "$DOCKERD_PID" ]; then
    ids=$(docker ps -aq)
  else
    ids=$(docker ps -aq --filter "label=$LABEL")
  fi
  for id in $ids; do
    pid=$(docker inspect --format "{{index .Config.Labels \"$LABEL.pid\"}}" "$id" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
      echo "$id"
    fi
  done
  return 0
}

cleanup() {
  local status=$?
  set +e  # try every step of the cleanup
  if engine_answers; then
    local left
    left=$(leftovers)
    if [ -n "$left" ]; then
      # shellcheck disable=SC2086
      docker rm -f $left >/dev/null 2>&1 || true
    fi
  fi
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    log "stopping the dockerd this stage started (pid $DOCKERD_PID)"
    kill -TERM "$DOCKERD_PID"
    for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

# 1. Docker engine installed ------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io"
  apt_install docker.io
fi

# 2. ... and answering --------------------------------------------------------
if ! engine_answers; then
  log "starting dockerd"
  # shellcheck disable=SC2086
  setsid dockerd ${DOCKERD_FLAGS:-} >"$WORK/dockerd.log" 2>&1 </dev/null &
  DOCKERD_PID=$!
  for _ in $(seq 1 120); do
    engine_answers && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -30 "$WORK/dockerd.log"; exit 1; }
    sleep 0.5
  done
  engine_answers || { log "dockerd did not answer within 60s"; tail -30 "$WORK/dockerd.log"; exit 1; }
fi
docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'

# 3. The MiniStack image, built offline when absent --------------------------
IMAGE=$("$PYTHON" -c \
  'from csv_pipeline_harness.provisioning.backends import MinistackContainerBackend as B; print(B().image)')
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || { log "installing debootstrap"; apt_install debootstrap; }
  log "building $IMAGE offline"
  "$PYTHON" -m csv_pipeline_harness build-image --tag "$IMAGE"
else
  log "$IMAGE is present"
fi

# 4. The end-to-end suite on the container ---------------------------------
set +e
"$PYTHON" -m pytest -m "e2e or container" --csv-pipeline-backend=ministack-container -n 2 \
  -p no:cacheprovider --junitxml="$ROOT/.ci-junit-container.xml" "$@"
tests_status=$?
set -e

# 5. Nothing of ours left ----------------------------------------------------
left=$(leftovers)
if [ -n "$left" ]; then
  log "containers left behind:"
  # shellcheck disable=SC2086
  docker inspect --format '{{.Id}} {{.Config.Image}} {{.State.Status}} {{json .Config.Labels}}' $left
  exit 1
fi
log "no container left behind"
if [ "$tests_status" -ne 0 ]; then
  log "pytest failed (exit $tests_status)"
  exit "$tests_status"
fi
log "passed"
