#!/usr/bin/env bash
# Measures moat lb's API as state grows: mutations per second, Describe calls and DNS queries per
# second with their p50/p99, and moat lb's CPU per call, at each size of -sizes (load balancers /
# target groups with a listener each / security groups with rules), built through the API. With
# --baseline REF it also builds moat from git REF (e.g. main) and measures it first, in the same
# run, so the table compares the two on the same machine and load.
# Usage: hack/bench-api.sh [--baseline REF] [apibench flags, e.g. -sizes 2/9/10,1000/4500/5000
#        -write-clients 8 -read-clients 1,8,32 -duration 10s -profile DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
baseline_ref=""
if [ "${1:-}" = "--baseline" ]; then
  baseline_ref=$2
  shift 2
fi
mkdir -p bin
# moat_pprof adds the profile endpoint that -profile reads; it changes nothing else.
go build -tags moat_pprof -o bin/moat-apibench ./cmd/moat
go build -o bin/apibench ./hack/apibench
args=(-moat bin/moat-apibench)
if [ -n "$baseline_ref" ]; then
  src=$(mktemp -d)
  git archive "$baseline_ref" | tar -x -C "$src"
  (cd "$src" && go build -o "$OLDPWD/bin/moat-apibench-baseline" ./cmd/moat)
  rm -rf "$src"
  args+=(-baseline bin/moat-apibench-baseline)
fi
# On a 2-core machine, pin moat lb to CPU 1 and the clients to CPU 0, so that the two do not steal
# each other's time and runs compare.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  exec taskset -c 0 bin/apibench "${args[@]}" -lb-cpus 1 "$@"
fi
exec bin/apibench "${args[@]}" "$@"
