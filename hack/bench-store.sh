#!/usr/bin/env bash
# Compares moat lb's stores in one run: API mutations/s and Describe calls/s (and DNS answers/s), at
# 8 clients each, on bbolt, on a 1-member etcd and on a 3-member etcd, the etcd members started on
# loopback from the kube assets' etcd (hack/kube-assets.sh caches it). Prints a markdown table.
# Nothing is pinned: moat lb, the etcd members and the clients share the machine's cores, as they
# would on one node, so run it on a quiet machine.
# Usage: hack/bench-store.sh [apibench flags, e.g. -duration 10s -sizes 10/45/50 -stores bbolt,etcd3]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/moat-storebench ./cmd/moat
go build -o bin/apibench ./hack/apibench
exec bin/apibench -moat bin/moat-storebench -stores bbolt,etcd1,etcd3 -sizes 10/45/50 \
  -write-clients 8 -read-clients 8 -duration 10s -markdown "$@"
