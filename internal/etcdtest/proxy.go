package etcdtest

import (
	"net"
	"sync/atomic"
)

// Proxy forwards TCP connections to an etcd member until Cut: then it keeps every connection
// open but drops what either side sends, as a network partition does (no reset that would tell
// a client at once), until Cut(false) heals it.
type Proxy struct {
	ln  net.Listener
	cut atomic.Bool
}

// NewProxy listens on listen (host:port) and forwards to upstream. Close it with Close.
func NewProxy(listen, upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln}
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			go p.pipe(up, down)
			go p.pipe(down, up)
		}
	}()
	return p, nil
}

// Addr is where the proxy listens.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut partitions (true) or heals (false) every connection through the proxy.
func (p *Proxy) Cut(cut bool) { p.cut.Store(cut) }

// Close stops accepting; open connections end when either side closes.
func (p *Proxy) Close() error { return p.ln.Close() }

func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
