#!/usr/bin/env bash
# Run the test suite against a real embedded MongoDB in a fresh, isolated directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export FIFTYONE_DO_NOT_TRACK=true
run_dir=$(mktemp -d -t pointtrack-tests.XXXXXX)
export FIFTYONE_DATABASE_DIR="$run_dir/db"
export FIFTYONE_DEFAULT_DATASET_DIR="$run_dir/datasets"
export POINTTRACK_TEST_ARTIFACTS="${POINTTRACK_TEST_ARTIFACTS:-$PWD/test-artifacts}"
mkdir -p "$POINTTRACK_TEST_ARTIFACTS"
cleanup() {
    # Stop the mongod this run started, then remove its files.
    pkill -f "mongod.*$run_dir" 2>/dev/null || true
    rm -rf "$run_dir"
}
trap cleanup EXIT
.venv/bin/python -m pytest "$@"
