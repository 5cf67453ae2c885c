// Package testcheck says whether the consistency checks that only tests pay for should run.
package testcheck

import (
	"flag"
	"testing"
)

// Enabled reports whether to run the checks: in a test binary, except while it runs benchmarks
// (-test.bench), whose time per operation the checks — a decode, a read of a whole bucket, an
// encoding done twice — would swamp.
func Enabled() bool {
	if !testing.Testing() {
		return false
	}
	bench := flag.Lookup("test.bench")
	return bench == nil || bench.Value.String() == ""
}
