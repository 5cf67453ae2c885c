# The targets a newcomer needs. `make test` is what CI runs (through .ci/run).
GO        ?= go
FUZZTIME  ?= 30s
BIN       := bin/moat

.PHONY: build run test test-long fuzz bench lint

build:
	$(GO) build -o $(BIN) ./cmd/moat

run: build
	$(BIN) up

# Unit and conformance tests with the race detector, the end-to-end tests (short mode), the data
# plane's tests again with the kernel fast path (skipped without root), and a CI-sized run of
# every fuzz target.
test:
	$(GO) vet ./...
	$(GO) test -race -short -count=1 ./...
	$(GO) test -race -short -count=1 ./internal/dataplane -args -kernel
	$(MAKE) fuzz

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

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/secgroup ./internal/dataplane

lint:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...
