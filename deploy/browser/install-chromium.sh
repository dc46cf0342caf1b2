#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver, which the dashboard's browser tests drive
# (headless, through WebDriver), when they are missing. Idempotent: installed packages are
# reused. Needs root, or sudo.
#
# Usage: deploy/browser/install-chromium.sh
# The tests find the binaries through FUNDFLOW_CHROMIUM and FUNDFLOW_CHROMEDRIVER, else
# /usr/bin/chromium and chromedriver on PATH.
set -euo pipefail

if command -v chromedriver > /dev/null && [ -x /usr/bin/chromium ]; then
  chromedriver --version
  exit 0
fi

as_root=()
if [ "$(id -u)" != 0 ]; then
  as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# The package lists of a fresh machine may be missing or stale: refresh them only when needed.
if ! "${as_root[@]}" apt-get install -y -qq chromium chromium-driver > /dev/null; then
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq chromium chromium-driver > /dev/null
fi
chromedriver --version
