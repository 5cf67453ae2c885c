package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/secgroup"
)

// spliceChunk bounds one (*net.TCPConn).ReadFrom call: between chunks the
// copy loop updates the byte counters and the idle deadline. The kernel moves
// the bytes (splice through a pipe); they never enter userspace.
const spliceChunk = 1 << 20

// tcpSocket is a listening TCP socket on one load balancer address and port. Its connections
// are accepted and carried by the engine's event loops (see eventloop_linux.go), or, off Linux,
// by a goroutine each (acceptLoop, handle); on Linux a TLS listener's connections too are handed
// to a goroutine each.
type tcpSocket struct {
	u     *Userspace
	key   sockKey
	rc    syscall.RawConn // the listening socket's
	r     atomic.Pointer[route]
	drops *dropSource
	// stopListening closes the listening socket: new connections are refused from its return.
	stopListening func()
	// filtered is set once a socket filter may have been attached: from then on every accepted
	// connection may have inherited one, which must come off.
	filtered atomic.Bool

	mu     sync.Mutex
	flows  map[flow]struct{}
	closed bool
}

func (u *Userspace) listenTCP(key sockKey, r *route) (*tcpSocket, error) {
	s := &tcpSocket{u: u, key: key, flows: map[flow]struct{}{}}
	s.r.Store(r)
	// The filter goes on before the socket listens, so no SYN is ever judged without it.
	attach := func(rc syscall.RawConn) error { return s.applyFilter(rc, r.policy) }
	var err error
	if u.loops != nil {
		err = u.loops.listen(s, attach)
	} else {
		err = s.listenNet(attach)
	}
	if err != nil {
		return nil, err
	}
	s.drops = u.metrics.drops.track(s.rc, r)
	return s, nil
}

// listenNet listens with the net package and accepts in a goroutine.
func (s *tcpSocket) listenNet(attach func(syscall.RawConn) error) error {
	// MPTCP sockets refuse socket filters. No TCP keepalives: an NLB sends none on either side
	// (its idle timeout ends quiet flows), and each would cost system calls per connection.
	lc := net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, c syscall.RawConn) error {
		return attach(c)
	}}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(s.u.ctx, s.key.listenNetwork(), s.key.addrPort().String())
	if err != nil {
		return unwrapListenError(err)
	}
	tl := ln.(*net.TCPListener)
	if s.rc, err = tl.SyscallConn(); err != nil {
		ln.Close()
		return err
	}
	s.stopListening = func() { _ = ln.Close() }
	s.u.wg.Go(func() { s.acceptLoop(tl) })
	return nil
}

// applyFilter makes the listening socket's filter enforce p (see Userspace.applyFilter).
func (s *tcpSocket) applyFilter(rc syscall.RawConn, p *secgroup.Policy) error {
	if !p.Equal(secgroup.AllowAll()) {
		s.filtered.Store(true) // before the filter exists, so no connection that inherits it is missed
	}
	return s.u.applyFilter(rc, p, s.key)
}

// unwrapListenError keeps the system error (EADDRINUSE, EACCES, …) and drops
// the *net.OpError wrapping, whose text repeats what ListenerError says.
func unwrapListenError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err
		}
		return oe.Err
	}
	return err
}

func (s *tcpSocket) setRoute(r *route) {
	// The route goes first: from here on new connections are judged by the
	// new policy. The filter follows; until it does, clients it still drops
	// retransmit their SYN, and clients it still passes are reset.
	old := s.r.Swap(r)
	s.u.metrics.drops.relabel(s.drops, r)
	if !r.policy.Equal(old.policy) {
		if err := s.applyFilter(s.rc, r.policy); err != nil {
			s.u.log.Error("attach socket filter failed: denied clients are reset instead of dropped",
				"address", s.key.addrPort(), "error", err)
		}
	}
}

func (s *tcpSocket) close() {
	s.mu.Lock()
	s.closed = true
	flows := make([]flow, 0, len(s.flows))
	for f := range s.flows {
		flows = append(flows, f)
	}
	s.mu.Unlock()
	s.u.metrics.drops.remove(s.drops)
	s.stopListening()
	for _, f := range flows {
		f.terminate()
	}
}

func (s *tcpSocket) acceptLoop(ln *net.TCPListener) {
	var backoff time.Duration
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if acceptDropped(err) {
				continue // that connection is gone, the next may be fine: as the event loops do
			}
			if acceptExhausted(err) {
				backoff = acceptBackoff(backoff)
				s.u.log.Warn("accept failed, retrying", "address", s.key.addrPort(), "error", err, "delay", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-s.u.ctx.Done():
					return
				}
			}
			s.u.socketFailed(s.key, s, s.r.Load(), err)
			return
		}
		backoff = 0
		s.u.wg.Go(func() { s.handle(c) })
	}
}

// acceptExhausted reports an accept that found the process or the system out of descriptors or
// buffers: the listener pauses (acceptBackoff) and retries, as net/http does, rather than spin
// or give up.
func acceptExhausted(err error) bool {
	return isErrno(err, syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM)
}

// acceptDropped reports an accept whose connection died in the queue, or that a signal or a
// firewall interrupted: the listener goes on.
func acceptDropped(err error) bool {
	return isErrno(err, syscall.ECONNABORTED, syscall.EINTR, syscall.EPROTO, syscall.EPERM)
}

// acceptBackoff is the pause after an exhausted accept that followed a pause of last: doubling,
// from 5 ms to 1 s.
func acceptBackoff(last time.Duration) time.Duration {
	return min(max(2*last, 5*time.Millisecond), time.Second)
}

func isErrno(err error, errnos ...syscall.Errno) bool {
	for _, e := range errnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// reset closes c with an RST instead of a FIN (SO_LINGER 0).
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// handle runs one accepted connection: admission, target choice, the
// client's TLS handshake on a TLS listener, connect (and the target's TLS
// handshake for a TLS target group), then the two copy loops.
func (s *tcpSocket) handle(c *net.TCPConn) {
	// The connection inherited the listener's filter: remove it, or a later
	// rule change would go on judging this established flow's segments.
	if rc, err := c.SyscallConn(); err == nil && s.filtered.Load() {
		if err := secgroup.DetachFilter(rc); err != nil {
			s.u.log.Debug("detach socket filter from connection", "error", err)
		}
	}
	r := s.r.Load()
	client := addrPortOf(c.RemoteAddr())
	local := addrPortOf(c.LocalAddr())
	t, set, ok := r.admitTCP(s.u, client, local)
	if !ok {
		reset(c)
		return
	}
	defer r.flows.release()
	f := &tcpFlow{route: r, client: c, tgt: t, idle: r.idle}
	if !s.addFlow(f) {
		reset(c)
		return
	}
	defer s.removeFlow(f)
	t.addFlow(f)
	defer t.removeFlow(f)

	// The client's handshake comes after admission, which the socket filter
	// (or the check above) made before any byte of it was read; the flow is
	// registered first, so that terminate and Close interrupt it.
	if r.tls != nil {
		f.clientTLS = tls.Server(c, r.tls.server)
		if err := handshake(f.clientTLS, c, r.tls.handshakeTimeout); err != nil {
			if !f.isTerminated() {
				r.m.tlsHandshakeErrors.Inc()
				s.u.log.Debug("TLS handshake with client failed", "listener", r.listenerID, "client", client, "error", err)
			}
			// A FIN, not a reset: the client reads the alert crypto/tls sent, if any.
			_ = c.Close()
			return
		}
	}

	d := net.Dialer{KeepAlive: -1, Control: s.u.controlUpstream}
	d.SetMultipathTCP(false)
	// No source (the zero AddrPort) binds the wildcard address: the kernel chooses at connect.
	var src netip.AddrPort
	if a := r.upstreamSource(set.PreserveClientIP, client.Addr(), local.Addr(), t.addr.Addr()); a.IsValid() {
		src = netip.AddrPortFrom(a, 0)
	}
	// By address, not by name: no string to format and parse, no resolver.
	ctx, cancel := context.WithTimeout(context.Background(), s.u.connectTimeout)
	if !f.setCancelConnect(cancel) {
		cancel()
		return // terminated: both sides were reset
	}
	up, err := d.DialTCP(ctx, "tcp", src, t.addr)
	cancel()
	if err != nil {
		if !f.isTerminated() {
			r.m.connectErrors.Inc()
			s.u.log.Debug("connect to target failed", "listener", r.listenerID, "target", t.addr, "error", err)
		}
		reset(c)
		return
	}
	if !f.setUpstream(up) {
		return
	}
	if set.ProxyProtocolV2 {
		// Before the first byte of the client's: the target reads it first.
		if _, err := up.Write(ppv2Header(client, local)); err != nil {
			f.terminate()
			return
		}
	}
	if r.tls != nil && set.TLS {
		f.upTLS = tls.Client(up, r.tls.backendFor(f.clientTLS.ConnectionState().NegotiatedProtocol))
		if err := handshake(f.upTLS, up, r.tls.handshakeTimeout); err != nil {
			if !f.isTerminated() {
				r.m.connectErrors.Inc()
				s.u.log.Debug("TLS handshake with target failed", "listener", r.listenerID, "target", t.addr, "error", err)
			}
			f.terminate()
			return
		}
	}
	r.m.newFlows.Inc()
	r.m.proxied.Inc()
	r.m.active.Inc()
	defer f.closed()
	f.run(s.u)
}

// closed counts the flow out of the active ones, once: at the first end of
// stream either way, as the kernel fast path (and AWS, which counts flows in
// SYN_SENT and ESTABLISHED) do, or at its end.
func (f *tcpFlow) closed() {
	if f.closing.CompareAndSwap(false, true) {
		f.route.m.active.Dec()
	}
}

// admitTCP decides a new TCP connection from client to local: the listener's groups, a target,
// the listener's flow cap (taken; the caller releases it when the flow ends). A refused
// connection is logged and counted here, before the caller resets it, so that whoever sees the
// reset can see the record of it.
func (r *route) admitTCP(u *Userspace, client, local netip.AddrPort) (*target, *tgSettings, bool) {
	t, set, denied := r.admit(u, client, local, syscall.IPPROTO_TCP)
	if t == nil {
		u.flowLog.denied(r, client, denied)
		r.m.countDenied(denied)
		return nil, nil, false
	}
	if !r.flows.take() {
		u.flowLog.denied(r, client, DenyFlowLimit)
		r.m.deniedFlowLimit.Inc()
		return nil, nil, false
	}
	return t, set, true
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

func (s *tcpSocket) addFlow(f flow) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.flows[f] = struct{}{}
	return true
}

func (s *tcpSocket) removeFlow(f flow) {
	s.mu.Lock()
	delete(s.flows, f)
	s.mu.Unlock()
}

// tcpFlow is one proxied TCP connection.
type tcpFlow struct {
	route  *route
	client *net.TCPConn
	tgt    *target
	idle   time.Duration

	last atomic.Int64 // UnixNano of the last chunk moved either way
	// closing is set once either side ended its stream or the flow ended:
	// the flow is no longer active (see closed).
	closing atomic.Bool

	// clientTLS and upTLS are a TLS listener's sessions over client and up
	// (upTLS for a TLS target group only); set before run, by handle.
	clientTLS, upTLS *tls.Conn

	mu         sync.Mutex
	up         *net.TCPConn
	terminated bool
	// cancelConnect ends the connect to the target: terminate calls it. The connect's context
	// is its own, not under the engine's: a tree of contexts cost 4% of the proxy's CPU per
	// connection, and Close terminates every flow anyway.
	cancelConnect context.CancelFunc
}

func (f *tcpFlow) isTerminated() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.terminated
}

// setCancelConnect installs the cancel of the connect about to start, unless the flow was
// terminated already.
func (f *tcpFlow) setCancelConnect(cancel context.CancelFunc) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelConnect = cancel
	return !f.terminated
}

func (f *tcpFlow) scope() (string, bool) { return f.route.zone, f.route.crossZone }

// setUpstream installs the target connection, unless the flow was terminated
// while connecting.
func (f *tcpFlow) setUpstream(up *net.TCPConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.terminated {
		reset(up)
		return false
	}
	f.up = up
	return true
}

// terminate resets both sides: the target turned unhealthy, its draining
// ended, the flow idled out, the listener went away, or one side reset.
func (f *tcpFlow) terminate() {
	f.mu.Lock()
	if f.terminated {
		f.mu.Unlock()
		return
	}
	f.terminated = true
	up := f.up
	cancelConnect := f.cancelConnect
	f.mu.Unlock()
	if cancelConnect != nil {
		cancelConnect()
	}
	reset(f.client)
	if up != nil {
		reset(up)
	}
}

// run copies both ways until both sides have finished, then closes.
func (f *tcpFlow) run(u *Userspace) {
	f.last.Store(time.Now().UnixNano())
	m := f.route.m
	toTarget := func() { f.pipe(f.up, f.client, m.bytesIn) }
	toClient := func() { f.pipe(f.client, f.up, m.bytesOut) }
	if f.clientTLS != nil { // no splice: one side at least is encrypted
		client, up := tlsStream{f.clientTLS, f.client}, tlsStream{f.upTLS, f.up}
		toTarget = func() { f.pipeTLS(up, client, m.bytesIn) }
		toClient = func() { f.pipeTLS(client, up, m.bytesOut) }
	}
	done := make(chan struct{})
	u.wg.Go(func() {
		defer close(done)
		toTarget()
	})
	toClient()
	<-done
	f.mu.Lock()
	f.terminated = true
	f.mu.Unlock()
	f.client.Close()
	f.up.Close()
}

// idleTick is how often a copy loop wakes up on a quiet flow to account for
// bytes and check the idle timeout: a tenth of the timeout, within [50ms, 10s].
func idleTick(idle time.Duration) time.Duration {
	return min(max(idle/10, 50*time.Millisecond), 10*time.Second)
}

// pipe copies src to dst until src ends (then half-closes dst), the flow
// idles out, or an error ends the flow (then both sides are reset).
//
// Small runs of data — requests and responses — are read as soon as src is
// readable into a pooled buffer and written to dst (copyQueued): a read that
// would wait, the wait, the read and the write, as any proxy makes.
//
// Bulk runs go through the kernel: once a read fills a whole buffer, more is
// queued, and the loop switches to (*net.TCPConn).ReadFrom with an
// *io.LimitedReader over the *net.TCPConn src, which the net package serves
// with splice(2): the payload goes socket → pipe → socket inside the kernel.
// Nothing may wrap either connection, or net falls back to a userspace copy.
// Each chunk is limited to the bytes already queued on src, after waiting for
// src to be readable (awaitData): a splice that waits for data holds a pipe
// (two file descriptors and its buffer), so an idle flow would cost six
// descriptors instead of two — and the open-file limit, not memory, would
// bound how many flows moat holds. When less than a buffer is queued, the
// loop goes back to copying. No buffer or pipe is held while waiting.
func (f *tcpFlow) pipe(dst, src *net.TCPConn, bytes prometheus.Counter) {
	tick := idleTick(f.idle)
	lr := &io.LimitedReader{R: src}
	rc, err := src.SyscallConn()
	if err != nil {
		f.terminate()
		return
	}
	reader := newQueuedReader(rc)
	var armed time.Time // the read deadline last set
	bulk := false       // the last read filled a buffer: splice what is queued
	for {
		// The deadline wakes a quiet flow to check its idle timeout. Moving it on every chunk
		// would update a runtime timer per chunk; moving it once half of it has passed keeps
		// the wake-ups between tick/2 and tick apart.
		if now := time.Now(); armed.Sub(now) < tick/2 {
			armed = now.Add(tick)
			if err := src.SetReadDeadline(armed); err != nil {
				f.terminate()
				return
			}
		}
		var n int64
		if bulk {
			var queued int
			queued, err = awaitData(rc)
			if err == nil && queued < spliceMin {
				bulk = false // copyQueued reads it, or finds the end of stream or the error
				continue
			}
			if err == nil {
				lr.N = int64(min(queued, spliceChunk))
				n, err = dst.ReadFrom(lr)
			}
		} else {
			n, bulk, err = reader.copyQueued(dst)
		}
		if n > 0 {
			bytes.Add(float64(n))
			f.last.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil && n == 0: // src sent FIN
			f.closed()
			_ = dst.CloseWrite()
			return
		case err == nil: // the queued bytes moved
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A quiet tick, or the deadline fired mid-chunk (the bytes moved are counted above).
			if n == 0 && time.Since(time.Unix(0, f.last.Load())) >= f.idle {
				f.terminate() // idle timeout: both sides get an RST, as on AWS
				return
			}
		default: // a reset, a write error, or terminate closed the connections
			f.terminate()
			return
		}
	}
}

// spliceMin is the size of the copy buffers, and so the smallest run of queued bytes that is
// spliced. Below it a plain read and write costs the same two system calls and no pipe: small
// request/response traffic then never takes pipes from the runtime's pool, whose size (two
// descriptors each, freed only by the garbage collector) would otherwise bound how many flows fit
// in the open-file limit. Bulk transfers queue far more than this and go to the splice path.
const spliceMin = 64 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, spliceMin); return &b }}

// queuedReader reads what is queued on a socket into a pooled buffer (see copyQueued). It is
// made once per copy loop: the callback it hands the runtime and the results it keeps then cost
// no allocation per read.
type queuedReader struct {
	rc   syscall.RawConn
	read func(fd uintptr) bool // r.readOnce, bound once
	buf  *[]byte
	got  int
	err  error
}

func newQueuedReader(rc syscall.RawConn) *queuedReader {
	r := &queuedReader{rc: rc}
	r.read = r.readOnce
	return r
}

// readOnce is rc.Read's callback: a read, or, when nothing is queued, no buffer kept and false
// (wait until readable).
func (r *queuedReader) readOnce(fd uintptr) bool {
	r.buf = copyBuffers.Get().(*[]byte)
	for {
		r.got, r.err = unix.Read(int(fd), *r.buf)
		if r.err != unix.EINTR {
			break
		}
	}
	if r.err == unix.EAGAIN {
		copyBuffers.Put(r.buf)
		r.buf = nil
		return false
	}
	return true
}

// copyQueued waits until the socket is readable, reads what is queued, up to a buffer, and
// writes it to dst. It takes a buffer only once there is something to read, so a waiting flow
// holds none. full reports that the read filled the buffer: more is probably queued. n == 0 with
// no error is the end of the stream; an error of the socket (a reset) is returned, not lost.
func (r *queuedReader) copyQueued(dst *net.TCPConn) (n int64, full bool, err error) {
	r.buf, r.got, r.err = nil, 0, nil
	err = r.rc.Read(r.read)
	buf := r.buf
	if buf != nil {
		defer copyBuffers.Put(buf)
	}
	switch {
	case err != nil:
		return 0, false, err
	case r.err != nil:
		return 0, false, os.NewSyscallError("read", r.err)
	case r.got == 0:
		return 0, false, nil
	}
	if _, err := dst.Write((*buf)[:r.got]); err != nil {
		return int64(r.got), false, err
	}
	return int64(r.got), r.got == len(*buf), nil
}

// awaitData waits until the socket is readable and returns how many bytes are queued on it: 0
// when readability means end of stream or an error. It honours the read deadline.
func awaitData(rc syscall.RawConn) (int, error) {
	queued := 0
	var ioErr error
	err := rc.Read(func(fd uintptr) bool {
		n, err := unix.IoctlGetInt(int(fd), fionread)
		if err != nil {
			ioErr = err
			return true
		}
		if n > 0 {
			queued = n
			return true
		}
		// An empty queue is either "nothing yet" (wait) or end of stream / a pending error
		// (readable now): a peek tells them apart without consuming any data. It does consume
		// a pending error (the kernel reports a socket error once), so the error is returned
		// here: a reset lost in the peek would read as an end of stream, and the flow would
		// half-close the other side instead of resetting it.
		var b [1]byte
		_, _, err = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return false
		}
		ioErr = err
		return true
	})
	if err != nil {
		return 0, err
	}
	return queued, ioErr
}
