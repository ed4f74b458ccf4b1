#!/usr/bin/env bash
# Run the tox environments this machine can run, and fail if any of them fails.
#
#   .ci/tox-stage.sh                 py310..py313 + lint + type (+ Docker envs, see below)
#   .ci/tox-stage.sh -e py312 -- -x  any tox command line, with the interpreters found
#   .ci/tox-stage.sh --envs          print the environments the first form would run
#
# tox runs from its own virtualenv (TOX_STAGE_VENV, default .tox/.stage-tox),
# so nothing is installed into the interpreter that calls this script.
#
# Interpreters: every pyenv-installed CPython 3.10-3.13 (newest patch release
# of each) is put on PATH, so tox finds python3.10 ... python3.13 without
# `pyenv local` or shims; a python3.X already on PATH is used otherwise.
# A missing one is an error under CI=true and a notice elsewhere.
#
# Docker environments (TOX_STAGE_DOCKER=auto|yes|no, default auto):
#   container   runs when a Docker engine answers (`docker info`);
#   localstack  runs when, in addition, $LOCALSTACK_IMAGE
#               (default localstack/localstack:4.14) is already present locally.
# Set TOX_STAGE_DOCKER=no when the Docker stage runs on its own.
#
# Parallelism: each suite runs under pytest-xdist with TOX_STAGE_PYTEST_WORKERS
# workers (default: the number of cores; 1 turns it off), one environment after
# another. TOX_STAGE_PARALLEL=N runs N environments at once (default 1: on two
# cores, two environments side by side were slower than xdist in one).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOX_SPEC="tox>=4.20,<5"
VENV="${TOX_STAGE_VENV:-.tox/.stage-tox}"
DOCKER_MODE="${TOX_STAGE_DOCKER:-auto}"
PARALLEL="${TOX_STAGE_PARALLEL:-1}"
PYTHONS=(3.10 3.11 3.12 3.13)

log() { printf '[tox-stage] %s\n' "$*" >&2; }

host_python() {
    local candidate
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
    log "no Python >= 3.10 on PATH to run tox with"
    return 1
}

ensure_tox() {
    if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$VENV"
        "$HOST_PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TOX_SPEC"
}

pyenv_root() {
    if command -v pyenv >/dev/null; then
        pyenv root
    else
        printf '%s\n' "${PYENV_ROOT:-$HOME/.pyenv}"
    fi
}

# Newest pyenv CPython X.Y.Z for a given X.Y (plain releases only: no 3.13.0t,
# no -dev, no virtualenvs), as its bin directory.
pyenv_bin_for() {
    local minor="$1" root versions
    root="$(pyenv_root)"
    [[ -d "$root/versions" ]] || return 1
    versions="$(find "$root/versions" -mindepth 1 -maxdepth 1 -printf '%f\n' \
        | grep -E "^${minor//./\\.}\\.[0-9]+\$" | sort -V | tail -n 1)"
    [[ -n "$versions" && -x "$root/versions/$versions/bin/python$minor" ]] || return 1
    printf '%s\n' "$root/versions/$versions/bin"
}

# tox's own interpreter is chosen before PATH gains the pyenv versions.
HOST_PYTHON="$(host_python)"

PY_ENVS=()
MISSING=()
for minor in "${PYTHONS[@]}"; do
    if bin_dir="$(pyenv_bin_for "$minor")"; then
        PATH="$bin_dir:$PATH"
        log "python$minor: $bin_dir/python$minor"
    elif command -v "python$minor" >/dev/null \
        && "python$minor" -c 'import sys' 2>/dev/null; then
        log "python$minor: $(command -v "python$minor")"
    else
        MISSING+=("$minor")
        continue
    fi
    PY_ENVS+=("py${minor//./}")
done
export PATH

LIST_ONLY=false
if [[ "${1:-}" == "--envs" ]]; then
    LIST_ONLY=true
    shift
fi

# An explicit tox command line: run it as given (interpreters are on PATH now).
if [[ $# -gt 0 ]]; then
    ensure_tox
    exec "$VENV/bin/tox" "$@"
fi

if [[ ${#MISSING[@]} -gt 0 ]]; then
    for minor in "${MISSING[@]}"; do
        log "python$minor not found: pyenv install $minor (or put python$minor on PATH)"
    done
    if [[ "${CI:-}" == "true" ]]; then
        log "CI=true: every supported Python must run"
        exit 1
    fi
fi

ENVS=("${PY_ENVS[@]}" lint type)

docker_answers() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

case "$DOCKER_MODE" in
    no) log "Docker environments skipped (TOX_STAGE_DOCKER=no)" ;;
    yes | auto)
        if docker_answers; then
            ENVS+=(container)
            image="${LOCALSTACK_IMAGE:-localstack/localstack:4.14}"
            if docker image inspect "$image" >/dev/null 2>&1; then
                ENVS+=(localstack)
            else
                log "localstack skipped: image $image is not present locally"
            fi
        elif [[ "$DOCKER_MODE" == yes ]]; then
            log "TOX_STAGE_DOCKER=yes but no Docker engine answers (docker info)"
            exit 1
        else
            log "container and localstack skipped: no Docker engine answers (docker info)"
        fi
        ;;
    *)
        log "TOX_STAGE_DOCKER must be auto, yes or no (got '$DOCKER_MODE')"
        exit 2
        ;;
esac

workers="${TOX_STAGE_PYTEST_WORKERS:-$(nproc)}"
if [[ "$workers" -gt 1 ]]; then
    export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:+$PYTEST_ADDOPTS }-n $workers"
fi

list="$(IFS=,; printf '%s' "${ENVS[*]}")"
if "$LIST_ONLY"; then
    printf '%s\n' "$list"
    exit 0
fi
ensure_tox
log "running: $list (PYTEST_ADDOPTS=${PYTEST_ADDOPTS:-})"
start=$SECONDS
status=0
if [[ "$PARALLEL" -gt 1 ]]; then
    "$VENV/bin/tox" run-parallel --parallel "$PARALLEL" --parallel-live \
        --skip-missing-interpreters false -e "$list" || status=$?
else
    "$VENV/bin/tox" run --skip-missing-interpreters false -e "$list" || status=$?
fi
log "finished in $((SECONDS - start)) s with exit status $status"
exit "$status"
