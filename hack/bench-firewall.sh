#!/usr/bin/env bash
# Measures the instance firewall's cost: throughput (1 stream, sendfile to splice), connections per
# second and latency straight to an instance's address, with instance security groups off and
# enforcing (a full group of 60 rules), side by side in one run; ct-only is the firewall's table
# with no instance in it, which costs what connection tracking costs. The paths take turns, many
# short rounds, and the medians are compared, so that a busy machine weighs on all alike. It runs
# in network namespaces it creates, so that neither the host's rules nor its traffic play a part:
# first with the client on the instance's loopback, then with the client on another namespace
# reaching the instance over a veth pair, as traffic reaches a real host.
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
ns="moatfwbench$$" client="moatfwclient$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; ip netns del "$client" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip netns add "$client"
ip -n "$ns" link set lo up
ip -n "$client" link set lo up
args=(-firewall -reps 15 -bytes 1073741824 -duration 2s -requests 5000 "$@")

echo "== loopback: the client and the instance on one host's loopback (moat up's world)"
ip netns exec "$ns" bin/lbbench "${args[@]}"

# The instance's traffic reaches a real host over an interface: the client in a namespace of its
# own, joined to the instance's by a veth pair.
ip link add i0 netns "$ns" type veth peer name c0 netns "$client"
ip -n "$ns" addr add 198.18.0.10/24 dev i0 && ip -n "$ns" link set i0 up
ip -n "$client" addr add 198.18.0.2/24 dev c0 && ip -n "$client" link set c0 up
echo
echo "== link: the client on another host, over a veth pair"
ip netns exec "$ns" bin/lbbench "${args[@]}" -client-ns "$client" -instance-ip 198.18.0.10
