package sigv4

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
)

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// reasonOf returns the Reason of a verification error, 0 for nil, -1 for an
// error that is not an *Error (which Verify must never return).
func reasonOf(err error) Reason {
	if err == nil {
		return 0
	}
	var e *Error
	if !errors.As(err, &e) {
		return -1
	}
	return e.Reason
}
