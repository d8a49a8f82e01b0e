#!/usr/bin/env bash
# Install a headless browser for the HTML report's tests (tests/test_report.py) and screenshots:
# Chromium from the distribution's packages. Idempotent; never fails the set-up: without a
# browser (no root, no apt, offline) the browser tests skip with the reason.
set -uo pipefail
for exe in chromium chromium-browser google-chrome; do
    if command -v "$exe" >/dev/null 2>&1; then
        echo "setup_browser: $exe is installed"
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_browser: no apt-get: install Chromium by hand for the report's browser tests (they skip)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "setup_browser: not root and no sudo: the report's browser tests skip"
        exit 0
    fi
fi
if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium >/dev/null 2>&1 || \
   { $SUDO apt-get update >/dev/null 2>&1 && \
     DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium >/dev/null 2>&1; }; then
    echo "setup_browser: installed chromium"
else
    echo "setup_browser: apt-get install chromium failed: the report's browser tests skip"
fi
exit 0
