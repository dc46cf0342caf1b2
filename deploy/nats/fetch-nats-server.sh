#!/usr/bin/env bash
# Fetches Debian trixie's nats-server 2.10 (it runs on bookworm: it needs only libc) into a
# tools folder that git ignores, and prints the binary's path. fundflow targets nats-server 2.10
# or newer; bookworm's package is 2.9.10. Idempotent: an existing binary is reused.
#
# Usage: deploy/nats/fetch-nats-server.sh [TOOLS_DIR]   (default: <repo>/.tools)
# The tests find the binary through FUNDFLOW_NATS_SERVER, then <repo>/.tools, then PATH.
set -euo pipefail

version="2.10.27-1+b2"
sha256="6d913ac987b78734c08537c2adeb1526cf735f216173a9170d94b185fcfe6f8a"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
tools="${1:-$repo/.tools}"
binary="$tools/nats-server/usr/sbin/nats-server"

if [ -x "$binary" ] && "$binary" --version | grep "v2.10" > /dev/null; then
  echo "$binary"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
cat > "$work/sources.list" <<SOURCES
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
SOURCES
# A private apt state: the machine's own sources and lists stay untouched.
apt_options=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "APT::Architecture=amd64"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
apt-get "${apt_options[@]}" update -qq >&2
(cd "$work" && apt-get "${apt_options[@]}" download -qq "nats-server=$version" >&2)
deb="$(ls "$work"/nats-server_*.deb)"
echo "$sha256  $deb" | sha256sum --check --quiet >&2
mkdir -p "$tools/nats-server"
dpkg -x "$deb" "$tools/nats-server"
"$binary" --version >&2
echo "$binary"
