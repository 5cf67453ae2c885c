#!/usr/bin/env bash
# Measures moat lb's data plane beside a direct connection, HAProxy (TCP mode: as configured by
# default, and splicing) and nginx's stream module (UDP; HAProxy 2.6 has none), in one run on this
# machine, each path with its client, its proxy (or router) and its backends in three network
# namespaces that it creates: TCP throughput (1 stream, sent with sendfile and discarded with
# splice, so that the load copies nothing), connections per second, request/response latency
# p50/p99, UDP datagrams per second, and the proxies' CPU seconds per GB moved. Needs root.
# With --baseline REF it also builds moat from git REF (e.g. main) and measures it in the same run,
# as the paths base and base-us, so that a change is judged against the build before it.
# Usage: hack/bench-lb.sh [--baseline REF] [lbbench flags, e.g. -reps 5 -bytes 4294967296
#        -paths moat-us,haproxy -tests conns,latency]
set -euo pipefail
cd "$(dirname "$0")/.."
baseline_ref=""
if [ "${1:-}" = "--baseline" ]; then
  baseline_ref=$2
  shift 2
fi
if [ "$(id -u)" != 0 ]; then
  echo "bench-lb.sh: needs root (network namespaces and nftables)" >&2
  exit 1
fi
if ! command -v haproxy >/dev/null || ! [ -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  echo "installing haproxy and nginx's stream module (Debian) ..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy libnginx-mod-stream >/dev/null
fi
mkdir -p bin
go build -o bin/moat ./cmd/moat
go build -o bin/lbbench ./hack/lbbench
baseline=()
if [ -n "$baseline_ref" ]; then
  src=$(mktemp -d)
  git archive "$baseline_ref" | tar -x -C "$src"
  (cd "$src" && go build -o "$OLDPWD/bin/moat-baseline" ./cmd/moat)
  rm -rf "$src"
  baseline=(-baseline bin/moat-baseline)
fi

# The labs (see hack/lbbench/lab.go), one for each path, alike: client ── proxies (a router, and
# moat lb's host) ── target. Each path has a host of its own, as on separate machines, so that all
# run at once and the latency test takes turns between them request by request, while no path's
# kernel state (moat's table turns on connection tracking for its host) touches another's.
prefix=mbench$$-
paths=(direct moat moat-us base base-us haproxy haproxy-splice nginx)
cleanup() {
  for p in "${paths[@]}"; do
    for role in c l t; do ip netns del "$prefix$p-$role" 2>/dev/null || true; done
  done
}
trap cleanup EXIT
# veth joins namespace $1 (address $3) and $4 (address $6) by interfaces $2 and $5.
veth() {
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  ip -n "$1" addr add "$3" dev "$2" && ip -n "$1" link set "$2" up
  ip -n "$4" addr add "$6" dev "$5" && ip -n "$4" link set "$5" up
}
# On a 2-core machine, the proxies run on CPU 1 and the load (client and backends) on CPU 0, so
# that the two do not steal each other's time. The kernel's receive work is steered the same way
# (RPS): each host's interfaces are processed on its own CPU. A veth delivers a packet in its
# sender's context, so without steering the router's forwarding, and with it the kernel fast
# path's connection tracking and NAT, ran on the load's CPU (costing the client conn/s the path
# did not cost the proxies' host), while a proxy's own receive work ran there for free.
pin=() cpus=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin=(taskset -c 0) cpus=1
fi
steer() {
  [ -n "$cpus" ] && ip netns exec "$1" sh -c "echo $3 > /sys/class/net/$2/queues/rx-0/rps_cpus"
  return 0
}
for p in "${paths[@]}"; do
  client=$prefix$p-c lb=$prefix$p-l target=$prefix$p-t
  for ns in "$client" "$lb" "$target"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  veth "$client" c0 198.18.0.2/24 "$lb" c1 198.18.0.1/24
  veth "$target" t0 198.18.2.10/24 "$lb" t1 198.18.2.1/24
  ip -n "$client" route add 198.18.0.0/15 via 198.18.0.1
  ip -n "$target" route add default via 198.18.2.1
  # The load balancer addresses moat allocates (from the 100th of each subnet) are routed to its
  # host, as a cloud routes an NLB's addresses to its nodes; the host forwards to the target.
  ip -n "$lb" route add local 198.18.1.96/27 dev lo
  ip -n "$lb" route add local 198.18.2.96/27 dev lo
  ip netns exec "$lb" sysctl -q -w net.ipv4.ip_forward=1
  steer "$client" c0 1 && steer "$target" t0 1 && steer "$lb" c1 2 && steer "$lb" t1 2
done
"${pin[@]}" bin/lbbench -labs "$prefix" -moat bin/moat -haproxy "$(command -v haproxy)" \
  -nginx "$(command -v nginx)" -proxy-cpus "$cpus" "${baseline[@]}" "$@"
