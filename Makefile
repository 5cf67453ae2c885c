# The targets a newcomer needs. `make test` is what CI runs (through .ci/run).
GO        ?= go
# Empty: each fuzz target runs a fixed number of executions, about 30 s here (see fuzz). A
# duration (FUZZTIME=5m) bounds every target by time instead.
FUZZTIME  ?=
BIN       := bin/moat
# The reference `make image` tags its image with: what the chart and config/ pull by default.
IMAGE     ?= ghcr.io/moatlb/moat:latest
IMAGE_VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null)
# Every timestamp in the image is the last commit's time, so a commit always gives the same digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: build run test test-long test-portable cross fuzz bench lint image

build:
	$(GO) build -o $(BIN) ./cmd/moat

run: build
	$(BIN) up

# Unit and conformance tests with the race detector, the end-to-end tests (short mode), the data
# plane's tests again with the kernel fast path (skipped without root), the API conformance suite
# again on a 3-member etcd cluster (skipped without the kube assets' etcd), the portable stand-ins'
# tests, the cross-compiles, and a CI-sized run of every fuzz target.
# The end-to-end package runs whole programs one after another: it gets more than go test's default
# ten minutes, which a loaded 2-core machine can come near.
test:
	$(GO) vet ./...
	$(GO) test -race -short -count=1 -timeout 25m ./...
	$(GO) test -race -short -count=1 ./internal/dataplane -args -kernel
	$(GO) test -race -short -count=1 ./internal/awsapi ./internal/cloud -args -store=etcd
	$(MAKE) test-portable
	$(MAKE) cross
	$(MAKE) fuzz

# The stand-ins for what only Linux has, tested on Linux: with -tags moat_portable there are no
# socket filters (a denied TCP client is accepted and reset) and no Pdeathsig (moat up's children
# die with it through its watchdog), as on macOS.
test-portable:
	$(GO) test -race -short -count=1 -tags moat_portable ./internal/secgroup ./internal/dataplane ./internal/lb ./internal/up

# moat builds for macOS and Linux on ARM; the macOS build is vetted with its tests.
cross:
	GOOS=darwin GOARCH=arm64 $(GO) build ./...
	GOOS=darwin GOARCH=arm64 $(GO) vet ./...
	GOOS=linux GOARCH=arm64 $(GO) build ./...

# The long loops: more kill -9 rounds, the scale test on moat up (1,000 Services; size it with
# MOAT_SCALE_SERVICES), longer fuzzing. The scale test alone can take tens of minutes.
test-long:
	$(GO) test -race -count=1 -timeout 180m ./...
	$(GO) test -race -count=1 ./internal/dataplane -args -kernel
	$(MAKE) fuzz FUZZTIME=5m

# CI bounds each target by executions: a -fuzztime duration can end with "context deadline
# exceeded" and nothing found, a race in Go's fuzzing coordinator at the deadline (golang/go#75804;
# it failed a CI run here).
fuzz_for = $(or $(FUZZTIME),$(1))
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDispatch$$' -fuzztime $(call fuzz_for,40000x) ./internal/awsapi
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(call fuzz_for,300000x) ./internal/awsapi/sigv4
	$(GO) test -run '^$$' -fuzz '^FuzzPolicy$$' -fuzztime $(call fuzz_for,200000x) ./internal/secgroup
	$(GO) test -run '^$$' -fuzz '^FuzzOpenBolt$$' -fuzztime $(call fuzz_for,6000x) ./internal/store
	$(GO) test -run '^$$' -fuzz '^FuzzParseDenial$$' -fuzztime $(call fuzz_for,250000x) ./internal/firewall
	$(GO) test -run '^$$' -fuzz '^FuzzTaggingCBOR$$' -fuzztime $(call fuzz_for,40000x) ./internal/awsapi

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/secgroup ./internal/dataplane

# moat's container image without a Docker daemon: static binaries for linux/amd64 and
# linux/arm64, each alone on an empty base, as one multi-platform index in the OCI image layout
# bin/image (for `crane push`), and the linux/amd64 image as the docker tarball
# bin/moat-image-amd64.tar (for `kind load image-archive`). See hack/image.
image:
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w" -o bin/linux-$$arch/moat ./cmd/moat || exit 1; \
	done
	$(GO) run ./hack/image -out bin/image -ref $(IMAGE) -version "$(IMAGE_VERSION)" -created $(SOURCE_DATE_EPOCH) \
		-docker-tar bin/moat-image-amd64.tar linux/amd64=bin/linux-amd64/moat linux/arm64=bin/linux-arm64/moat

lint:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...
