#!/usr/bin/env bash
# A three-node fundflow NATS cluster as plain processes on loopback, for trying the clustered
# deployment on one machine and for tests. Each node runs a copy of deploy/nats/node-N.conf and
# cluster.conf (the configs production uses) with its own store_dir, and command-line overrides
# for its loopback ports.
#
# Usage: deploy/local-cluster.sh up|down|status
#
#   up      start the nodes that are not running, wait until the cluster is healthy, and print
#           how to point fundflow at it
#   down    stop the nodes (SIGTERM, then SIGKILL after 10 s); their stores stay
#   status  each node's process and health
#
# Environment (all optional):
#   FUNDFLOW_CLUSTER_DIR            state: configs, stores, logs, keys  (default <repo>/.cluster)
#   FUNDFLOW_CLUSTER_CLIENT_PORTS   the nodes' client ports             (default "4311 4312 4313")
#   FUNDFLOW_CLUSTER_ROUTE_PORTS    the nodes' cluster ports            (default "6311 6312 6313")
#   FUNDFLOW_CLUSTER_MONITOR_PORTS  the nodes' monitoring ports         (default "8311 8312 8313")
#   FUNDFLOW_CONFIG                 fundflow's access config to generate the NATS users from
#                                   (default DIR/fundflow.toml, created with a service key)
#   FUNDFLOW_NATS_SERVER            the nats-server binary (2.10 or newer; default: the one
#                                   deploy/nats/fetch-nats-server.sh fetched, then PATH)
#   FUNDFLOW_BIN                    the fundflow binary (default: PATH, then target/, then built)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${FUNDFLOW_CLUSTER_DIR:-$repo/.cluster}"
read -r -a client_ports <<<"${FUNDFLOW_CLUSTER_CLIENT_PORTS:-4311 4312 4313}"
read -r -a route_ports <<<"${FUNDFLOW_CLUSTER_ROUTE_PORTS:-6311 6312 6313}"
read -r -a monitor_ports <<<"${FUNDFLOW_CLUSTER_MONITOR_PORTS:-8311 8312 8313}"
nodes=(1 2 3)

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

for list in client_ports route_ports monitor_ports; do
  declare -n ports="$list"
  [ "${#ports[@]}" -eq 3 ] || die "$list needs three ports, got: ${ports[*]:-none}"
done

nats_server() {
  local candidate
  for candidate in "${FUNDFLOW_NATS_SERVER:-}" "$repo/.tools/nats-server/usr/sbin/nats-server" \
    "$(command -v nats-server || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] &&
      "$candidate" --version | grep -Eq 'v2\.(1[0-9]|[2-9][0-9])\.|v[3-9]\.'; then
      echo "$candidate"
      return
    fi
  done
  die "no nats-server 2.10 or newer: run deploy/nats/fetch-nats-server.sh, or set FUNDFLOW_NATS_SERVER"
}

fundflow_bin() {
  local candidate
  for candidate in "${FUNDFLOW_BIN:-}" "$(command -v fundflow || true)" \
    "$repo/target/release/fundflow" "$repo/target/debug/fundflow"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return
    fi
  done
  echo "local-cluster: building fundflow (once)" >&2
  (cd "$repo" && cargo build --release --quiet -p fundflow-cli) >&2
  echo "$repo/target/release/fundflow"
}

# The node's pid, if its pid file names a live nats-server of this node (after a reboot the
# number may belong to another process, which must not be signalled).
pid_of() {
  local pid_file="$dir/node-$1/nats.pid" pid
  [ -f "$pid_file" ] || return 0
  pid="$(cat "$pid_file")"
  if [ -r "/proc/$pid/cmdline" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -F "$dir/node-$1/conf/node-$1.conf" > /dev/null; then
    echo "$pid"
  fi
}

healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:${monitor_ports[$1 - 1]}/healthz" >/dev/null 2>&1
}

urls() {
  local port list=()
  for port in "${client_ports[@]}"; do list+=("nats://127.0.0.1:$port"); done
  (IFS=,; echo "${list[*]}")
}

# The NATS users: generated from fundflow's access config at every `up`, so that an edited
# config takes effect on the next start.
write_auth() {
  local fundflow config key
  fundflow="$(fundflow_bin)"
  config="${FUNDFLOW_CONFIG:-$dir/fundflow.toml}"
  if [ ! -f "$config" ]; then
    [ -z "${FUNDFLOW_CONFIG:-}" ] || die "FUNDFLOW_CONFIG=$config does not exist"
    rm -f "$dir/service.nk"
    key="$("$fundflow" nkey new --role service --seed-file "$dir/service.nk" |
      sed -n 's/^public key: //p')"
    [ -n "$key" ] || die "fundflow nkey new printed no public key"
    cat >"$config" <<TOML
# fundflow's access config for the local cluster. Add partners, reviewers and auditors
# (fundflow token new, fundflow nkey new) and run deploy/local-cluster.sh up again.
[nats]
service_nkeys = ["$key"]
TOML
  fi
  "$fundflow" nats-config --config "$config" --out "$dir/conf/auth.conf" 2>/dev/null ||
    "$fundflow" nats-config --config "$config" --out "$dir/conf/auth.conf"
}

up() {
  local nats n routes=() port store
  nats="$(nats_server)"
  mkdir -p "$dir/conf"
  write_auth
  for port in "${route_ports[@]}"; do routes+=("nats-route://127.0.0.1:$port"); done
  for n in "${nodes[@]}"; do
    mkdir -p "$dir/node-$n/store" "$dir/node-$n/conf"
    # nats-server refuses -sd beside a store_dir in the config: each node gets its own copy.
    cp "$repo/deploy/nats/node-$n.conf" "$dir/conf/auth.conf" "$dir/node-$n/conf/"
    store="$(printf '%s' "$dir/node-$n/store" | sed 's/[\\&|]/\\&/g')"
    sed "s|^\(  store_dir:\).*|\1 \"$store\"|" "$repo/deploy/nats/cluster.conf" \
      >"$dir/node-$n/conf/cluster.conf"
    grep -qF "store_dir: \"$dir/node-$n/store\"" "$dir/node-$n/conf/cluster.conf" ||
      die "deploy/nats/cluster.conf has no store_dir line to point at the node's store"
    if [ -n "$(pid_of "$n")" ]; then
      # A running node rereads its config (the users above) on SIGHUP.
      kill -HUP "$(pid_of "$n")"
      echo "node $n: already running (pid $(pid_of "$n")); configuration reloaded"
      continue
    fi
    # setsid: the node outlives this script and the terminal it ran in.
    setsid "$nats" -c "$dir/node-$n/conf/node-$n.conf" \
      -a 127.0.0.1 -p "${client_ports[$n - 1]}" -m "${monitor_ports[$n - 1]}" \
      --cluster "nats://127.0.0.1:${route_ports[$n - 1]}" \
      --routes "$(IFS=,; echo "${routes[*]}")" \
      -l "$dir/node-$n/nats.log" \
      </dev/null >/dev/null 2>&1 &
    echo $! >"$dir/node-$n/nats.pid"
    echo "node $n: started (pid $!, client port ${client_ports[$n - 1]})"
  done
  local deadline=$((SECONDS + 60))
  for n in "${nodes[@]}"; do
    until healthy "$n"; do
      [ -n "$(pid_of "$n")" ] || die "node $n exited; see $dir/node-$n/nats.log"
      [ "$SECONDS" -lt "$deadline" ] || die "node $n is not healthy after 60 s; see $dir/node-$n/nats.log"
      sleep 0.2
    done
  done
  local seed="$dir/service.nk"
  [ -z "${FUNDFLOW_CONFIG:-}" ] || seed="<the seed file of a service key in $FUNDFLOW_CONFIG>"
  cat <<EOF
cluster healthy: $(urls)

Point fundflow at it (the stream gets three replicas):
  export FUNDFLOW_NATS_URL=$(urls)
  export FUNDFLOW_NATS_NKEY=$seed FUNDFLOW_REPLICAS=3
  fundflow serve --config ${FUNDFLOW_CONFIG:-$dir/fundflow.toml}
EOF
}

down() {
  local n pid waited
  for n in "${nodes[@]}"; do
    pid="$(pid_of "$n")"
    if [ -z "$pid" ]; then
      echo "node $n: not running"
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 100 ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$dir/node-$n/nats.pid"
    echo "node $n: stopped"
  done
  echo "stores kept in $dir; remove that folder to start afresh"
}

status() {
  local n pid failed=0
  for n in "${nodes[@]}"; do
    pid="$(pid_of "$n")"
    if [ -z "$pid" ]; then
      echo "node $n: stopped"
      failed=1
    elif healthy "$n"; then
      echo "node $n: running, healthy (pid $pid, nats://127.0.0.1:${client_ports[$n - 1]})"
    else
      echo "node $n: running, NOT healthy (pid $pid); see $dir/node-$n/nats.log"
      failed=1
    fi
  done
  return "$failed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *)
    sed -n '6,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
