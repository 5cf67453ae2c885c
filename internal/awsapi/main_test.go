package awsapi_test

import (
	"os"
	"testing"

	"github.com/moatlb/moat/internal/storetest"
)

// TestMain lets -store=etcd run the package's tests on an etcd cluster (see storetest).
func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }
