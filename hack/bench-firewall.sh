#!/usr/bin/env bash
# Measures the instance firewall's cost: throughput (1 stream, 1 MiB writes), connections per
# second and latency straight to an instance's address, with instance security groups off and
# enforcing (a full group of 60 rules), side by side in one run; ct-only is the firewall's table
# with no instance in it, which costs what connection tracking costs. The paths take turns, many
# short rounds, and the medians are compared, so that a busy machine weighs on all alike. It runs
# in a network namespace it creates, so that neither the host's rules nor its traffic play a part.
# Needs root.
# Usage: hack/bench-firewall.sh [lbbench flags, e.g. -reps 31 -duration 5s]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench-firewall.sh: needs root (network namespaces and nftables)" >&2
  exit 1
fi
mkdir -p bin
go build -o bin/lbbench ./hack/lbbench
ns="moatfwbench$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip -n "$ns" link set lo up
ip netns exec "$ns" bin/lbbench -firewall -reps 15 -bytes 1073741824 -duration 2s -requests 5000 "$@"
