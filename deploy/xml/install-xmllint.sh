#!/usr/bin/env bash
# Installs Debian's libxml2-utils, whose xmllint validates the IATI files fundflow writes against
# the official IATI 2.03 schema in the tests, when it is missing. Idempotent. Needs root, or sudo.
#
# Usage: deploy/xml/install-xmllint.sh
set -euo pipefail

if command -v xmllint > /dev/null; then
  xmllint --version 2>&1 | sed -n 1p
  exit 0
fi

as_root=()
if [ "$(id -u)" != 0 ]; then
  as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# The package lists of a fresh machine may be missing or stale: refresh them only when needed.
if ! "${as_root[@]}" apt-get install -y -qq libxml2-utils > /dev/null; then
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq libxml2-utils > /dev/null
fi
xmllint --version 2>&1 | sed -n 1p
