//go:build !linux || moat_portable

package node

import "net"

// markedDialer leaves sockets as they are: marks are Linux's, and so is the firewall that
// would read them (firewall.New fails first).
func markedDialer(uint32) func(*net.Dialer) { return nil }
