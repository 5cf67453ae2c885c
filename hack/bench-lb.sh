#!/usr/bin/env bash
# Measures moat lb's data plane beside a direct connection and HAProxy (TCP mode), in one run on
# this machine, against the same backends: throughput (1 stream, 1 MiB writes), connections per
# second, request/response latency p50/p99, and the proxies' CPU seconds per GB moved.
# Usage: hack/bench-lb.sh [lbbench flags, e.g. -reps 5 -bytes 4294967296]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v haproxy >/dev/null; then
  echo "installing haproxy (Debian) ..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
mkdir -p bin
go build -o bin/moat ./cmd/moat
go build -o bin/lbbench ./hack/lbbench
# On a 2-core machine, pin the proxy to CPU 1 and the load (client and backends) to CPU 0, so the
# two do not steal each other's time.
cpus=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  cpus=1
  exec taskset -c 0 bin/lbbench -moat bin/moat -haproxy "$(command -v haproxy)" -proxy-cpus "$cpus" "$@"
fi
exec bin/lbbench -moat bin/moat -haproxy "$(command -v haproxy)" "$@"
