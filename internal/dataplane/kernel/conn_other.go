//go:build !linux || moat_portable

package kernel

import "github.com/mdlayher/netlink"

var errTableExists = ErrUnsupported

func dialNFT(uint32, func([]netlink.Message) ([]netlink.Message, error)) (conn, error) {
	return nil, ErrUnsupported
}

func readHostNet() (hostNet, error) { return hostNet{}, ErrUnsupported }
