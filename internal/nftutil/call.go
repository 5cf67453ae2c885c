package nftutil

import (
	"errors"
	"fmt"
	"time"
)

// ErrAborted is Call's error when its done channel closed first.
var ErrAborted = errors.New("aborted")

// Call runs fn, a call into the kernel, with a deadline: it returns fn's
// error, or an error when fn has not returned within timeout or done closed
// first. A call that overran is abandoned to its goroutine, so the caller must
// share no state with it and should close the connection it was using
// (closing a netlink socket unblocks the call).
func Call(done <-chan struct{}, timeout time.Duration, fn func() error) error {
	result := make(chan error, 1)
	go func() { result <- fn() }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-result:
		return err
	case <-timer.C:
		return fmt.Errorf("no answer within %v", timeout)
	case <-done:
		return ErrAborted
	}
}
