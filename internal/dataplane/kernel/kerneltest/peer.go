// Package kerneltest has a netlink peer for tests of the kernel fast path: it
// stands in for the kernel's nftables side and can be made to hang.
package kerneltest

import (
	"sync"
	"sync/atomic"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Peer acknowledges every nftables request (and ends every dump empty) until
// Hang is called; from then on every request waits until Answer or Release.
// Its Answer method is a kernel.Options.NetlinkDial.
type Peer struct {
	hung     atomic.Bool
	requests atomic.Int32

	once    sync.Once
	release chan struct{}
}

// NewPeer returns an answering peer.
func NewPeer() *Peer { return &Peer{release: make(chan struct{})} }

// Hang makes every later request wait.
func (p *Peer) Hang() { p.hung.Store(true) }

// Answer makes the peer answer again; requests already waiting stay stuck
// until Release.
func (p *Peer) Answer() { p.hung.Store(false) }

// Release ends every waiting request with an error; call it when the test
// ends.
func (p *Peer) Release() { p.once.Do(func() { close(p.release) }) }

// Requests is how many requests the peer received.
func (p *Peer) Requests() int { return int(p.requests.Load()) }

// Serve answers one batch of requests.
func (p *Peer) Serve(reqs []netlink.Message) ([]netlink.Message, error) {
	p.requests.Add(1)
	if p.hung.Load() {
		<-p.release
		return nil, unix.EBADF
	}
	var replies []netlink.Message
	for _, r := range reqs {
		switch {
		case r.Header.Flags&netlink.Dump == netlink.Dump:
			replies = append(replies, netlink.Message{Header: netlink.Header{Type: netlink.Done,
				Flags: netlink.Multi, Sequence: r.Header.Sequence}, Data: make([]byte, 4)})
		case r.Header.Flags&netlink.Acknowledge != 0:
			replies = append(replies, netlink.Message{Header: netlink.Header{Type: netlink.Error,
				Sequence: r.Header.Sequence, PID: r.Header.PID}, Data: make([]byte, 4)})
		}
	}
	return replies, nil
}
