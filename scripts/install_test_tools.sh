#!/usr/bin/env bash
# System tools the tests use, from Debian, only where missing (idempotent, non-interactive):
# Chromium for the App browser test (Playwright drives /usr/bin/chromium; never
# `playwright install`) and ffmpeg, whose ffprobe FiftyOne's video apply_model needs.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_tools: no apt-get here; install ${missing[*]} by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install_test_tools: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install_test_tools: installing Debian's ${missing[*]}"
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ -x /usr/bin/chromium ] || { echo "install_test_tools: /usr/bin/chromium still missing" >&2; exit 1; }
command -v ffprobe >/dev/null || { echo "install_test_tools: ffprobe still missing" >&2; exit 1; }
