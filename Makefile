# The targets a newcomer needs. `make test` is what CI runs (through .ci/run).
GO        ?= go
FUZZTIME  ?= 30s
BIN       := bin/moat

.PHONY: build run test test-long test-portable cross fuzz bench lint

build:
	$(GO) build -o $(BIN) ./cmd/moat

run: build
	$(BIN) up

# Unit and conformance tests with the race detector, the end-to-end tests (short mode), the data
# plane's tests again with the kernel fast path (skipped without root), the portable stand-ins'
# tests, the cross-compiles, and a CI-sized run of every fuzz target.
# The end-to-end package runs whole programs one after another: it gets more than go test's default
# ten minutes, which a loaded 2-core machine can come near.
test:
	$(GO) vet ./...
	$(GO) test -race -short -count=1 -timeout 25m ./...
	$(GO) test -race -short -count=1 ./internal/dataplane -args -kernel
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

# The long loops: more kill -9 rounds, longer fuzzing.
test-long:
	$(GO) test -race -count=1 ./...
	$(GO) test -race -count=1 ./internal/dataplane -args -kernel
	$(MAKE) fuzz FUZZTIME=5m

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDispatch$$' -fuzztime $(FUZZTIME) ./internal/awsapi
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./internal/awsapi/sigv4
	$(GO) test -run '^$$' -fuzz '^FuzzPolicy$$' -fuzztime $(FUZZTIME) ./internal/secgroup
	$(GO) test -run '^$$' -fuzz '^FuzzOpenBolt$$' -fuzztime $(FUZZTIME) ./internal/store
	$(GO) test -run '^$$' -fuzz '^FuzzParseDenial$$' -fuzztime $(FUZZTIME) ./internal/firewall

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/secgroup ./internal/dataplane

lint:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...
