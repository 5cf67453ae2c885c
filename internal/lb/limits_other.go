//go:build !linux

package lb

// raiseFileLimit reports the open-file limit moat lb runs with: every proxied TCP flow needs two
// descriptors. The Go runtime has already raised the soft limit as far as this system lets a
// process (on macOS, to kern.maxfilesperproc; setting it to an unlimited hard limit fails there).
func raiseFileLimit() (uint64, error) { return openFileLimit() }
