//go:build moat_pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // the profiles hack/bench-api.sh -profile takes
	"os"
)

// A binary built with -tags moat_pprof serves Go's profiles on $MOAT_PPROF_ADDR, for the
// benchmarks; release builds have no such endpoint.
func init() {
	if addr := os.Getenv("MOAT_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
