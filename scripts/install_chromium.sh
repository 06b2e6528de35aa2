#!/usr/bin/env bash
# Install Debian's headless Chromium for the feature-browser test (tests/eval/test_browser_chromium.py).
# Idempotent: does nothing when chromium is already on PATH. Needs root (CI runs as root); without
# root or without the package registry it exits non-zero and the browser test skips with its reason.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install_chromium.sh: not root, cannot apt-get install chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
