#!/usr/bin/env bash
# Headless Chromium for tests/test_report.py (renders the benchmark report). Idempotent: skips when a
# chromium binary is already on PATH. Debian/Ubuntu; needs root (or sudo) for apt-get.
set -euo pipefail
for bin in chromium chromium-browser google-chrome; do
  if command -v "$bin" >/dev/null 2>&1; then
    echo "install_browser: $bin already installed ($(command -v "$bin"))"
    exit 0
  fi
done
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium
command -v chromium >/dev/null
echo "install_browser: installed $(chromium --version)"
