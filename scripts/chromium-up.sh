#!/usr/bin/env bash
# Install Debian's chromium for the dashboard's browser tests (tests/server) and bench/ui_bench.py.
# Idempotent: does nothing when /usr/bin/chromium exists; otherwise one `apt-get update`, then
# `apt-get install -y chromium`. Needs root (the tests skip loudly without it, and fail under $CI).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium is installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/chromium-up.sh: installing chromium needs root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
