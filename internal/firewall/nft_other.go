//go:build !linux || moat_portable

package firewall

import "errors"

func dial(string) (kernelConn, error) {
	return nil, errors.New("instance security groups are enforced with nftables, which only Linux has")
}

func openPacketLog(string) (packetLog, error) {
	return nil, errors.New("the kernel's packet log (NFLOG) is Linux's")
}
