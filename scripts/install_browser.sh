#!/usr/bin/env bash
# Install Debian's Chromium for the App browser test, only where /usr/bin/chromium is missing.
# Idempotent and non-interactive; Playwright drives this binary (never `playwright install`).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: no apt-get here; install Chromium at /usr/bin/chromium by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install_browser: need root (or sudo) to apt-get install chromium" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install_browser: installing Debian's chromium (for tests/test_app_browser.py)"
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
[ -x /usr/bin/chromium ] || { echo "install_browser: /usr/bin/chromium still missing" >&2; exit 1; }
