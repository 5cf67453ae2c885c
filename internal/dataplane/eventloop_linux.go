//go:build linux && !moat_portable

package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// The event loops carry the userspace proxy's plain TCP flows on Linux, as HAProxy and nginx
// carry theirs: one loop per CPU the runtime uses (GOMAXPROCS), each driving nonblocking sockets
// registered in an epoll set of its own with raw system calls (rawsys_linux.go). A goroutine per
// direction and the net package, as off Linux, cost half again the CPU per connection (measured
// with hack/bench-lb.sh): the net package's own calls (getsockname, getpeername, SO_ERROR, the
// read that finds nothing, the poller's registrations and removals) and the scheduler's
// switches between goroutines.
//
// What a flow is allowed and where it goes is the engine's, shared with the goroutine path:
// the route's decision (admitTCP), the flow's registration with its socket and its target (so
// that deregistration, unhealthiness and a deleted listener end it), the idle timeout and the
// metrics. A TLS listener's connections are handed to the goroutine path (handle), since
// crypto/tls needs a net.Conn.
//
// A loop is a goroutine that waits in epoll_wait on its set, holding its processor (see run):
// the kernel wakes the loop's own thread, and a wake-up costs that one call and the reads and
// writes it allows. Only its own loop touches a flow; other goroutines post to the loop
// (terminate). Listening sockets are shared by every loop (EPOLLEXCLUSIVE: a connection wakes one
// of them) and closed by whoever closes the tcpSocket, under their rawSocket's lock, which the
// loops' accepts hold.

const (
	// flowEvents are a flow socket's, edge-triggered and registered once for its life: no
	// epoll_ctl per read or write. A read shorter than the buffer drained the socket, and the
	// next data to arrive raises a new edge, so no read is spent finding the queue empty, except
	// after a hang-up (EPOLLRDHUP), when reading goes on to the end of the stream.
	flowEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	// listenerEvents are level-triggered, so that one accept per wake-up loses no connection,
	// and exclusive, so that a connection wakes one loop, not every loop.
	listenerEvents = unix.EPOLLIN | unix.EPOLLEXCLUSIVE
	// moveBudget bounds the chunks one direction moves per wake-up, so that a bulk flow cannot
	// starve the loop's other flows; the rest is moved after the next (non-blocking) wait.
	moveBudget = 16
)

// eventLoops are the engine's loops and the listening sockets they share.
type eventLoops struct {
	loops []*eventLoop

	mu        sync.RWMutex
	listeners map[int32]*loopListener // by ID, which their epoll events carry
	lastID    int32
}

// loopListener is a listening socket the loops accept from.
type loopListener struct {
	id   int32
	sock *tcpSocket
	raw  *rawSocket
}

func newEventLoops(u *Userspace) (*eventLoops, error) {
	ls := &eventLoops{listeners: map[int32]*loopListener{}}
	n := reserveLoopProcessors()
	for range n {
		l, err := newEventLoop(u, ls)
		if err != nil {
			for _, l := range ls.loops {
				l.closeFDs()
			}
			releaseLoopProcessors(n)
			return nil, err
		}
		ls.loops = append(ls.loops, l)
	}
	for _, l := range ls.loops {
		u.wg.Go(func() {
			defer releaseLoopProcessors(1)
			l.run()
		})
	}
	return ls, nil
}

// listen opens s's listening socket (attach puts its filter on before it listens) and has every
// loop accept from it.
func (ls *eventLoops) listen(s *tcpSocket, attach func(syscall.RawConn) error) error {
	raw, err := listenRaw(s.key, attach)
	if err != nil {
		return err
	}
	ll := &loopListener{sock: s, raw: raw}
	ls.mu.Lock()
	ls.lastID++
	ll.id = ls.lastID
	ls.listeners[ll.id] = ll
	ls.mu.Unlock()
	s.rc = raw
	s.stopListening = func() { ls.stopListening(ll) }
	for _, l := range ls.loops {
		if err := l.watchListener(ll); err != nil {
			ls.stopListening(ll)
			return err
		}
	}
	return nil
}

// stopListening closes the listening socket, which takes it out of every loop's epoll set; a
// loop that was about to accept from it finds it closed.
func (ls *eventLoops) stopListening(ll *loopListener) {
	ls.mu.Lock()
	delete(ls.listeners, ll.id)
	ls.mu.Unlock()
	ll.raw.close()
}

func (ls *eventLoops) listener(id int32) *loopListener {
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	return ls.listeners[id]
}

// stop ends the loops: each resets the flows it still carries. The engine's WaitGroup sees them
// return.
func (ls *eventLoops) stop() {
	for _, l := range ls.loops {
		l.stop()
	}
}

// eventLoop is one loop: its epoll set, the flows it carries, and the queue other goroutines
// post to.
type eventLoop struct {
	u    *Userspace
	set  *eventLoops
	epfd int
	wake int // an eventfd: a post writes it when the loop may be waiting

	mu       sync.Mutex
	queue    []func()
	stopping bool
	woken    atomic.Bool // the eventfd was written and the queue not yet taken

	// The rest is the loop goroutine's alone.
	now       int64      // UnixNano, read after each wait
	sides     []sideSlot // the flow sockets' registrations, by file descriptor
	seq       int32      // the last registration's sequence number
	flows     map[*loopFlow]struct{}
	again     []*loopFlow // flows whose budget ran out with bytes left to move
	buf       []byte
	pipes     []*splicePipe // idle pipes for the next bulk run
	paused    []pausedListener
	backoff   time.Duration // the last accept error's pause; 0 after an accept succeeds
	nextSweep int64         // when the idle and connect timeouts are next checked
}

// sideSlot is a registered flow socket. Its epoll events carry the descriptor and seq, so that
// an event read before the socket closed is not taken for the next socket on that descriptor.
type sideSlot struct {
	seq  int32
	side *flowSide
}

type pausedListener struct {
	ll    *loopListener
	until int64
}

func newEventLoop(u *Userspace, set *eventLoops) (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	l := &eventLoop{u: u, set: set, epfd: epfd, wake: wake, flows: map[*loopFlow]struct{}{}, buf: make([]byte, spliceMin)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		l.closeFDs()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return l, nil
}

func (l *eventLoop) closeFDs() {
	unix.Close(l.wake)
	unix.Close(l.epfd)
}

// post has the loop run fn; false when the loop has stopped (and so reset every flow it had).
func (l *eventLoop) post(fn func()) bool {
	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, fn)
	l.mu.Unlock()
	l.notify()
	return true
}

func (l *eventLoop) stop() {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.notify()
}

func (l *eventLoop) notify() {
	if l.woken.CompareAndSwap(false, true) {
		one := [8]byte{1} // any non-zero count wakes the loop
		_, _ = unix.Write(l.wake, one[:])
	}
}

// run waits for events and handles them until the loop stops. The wait is epoll_wait as a raw
// system call: the kernel wakes the loop's own thread, which holds its processor (P) while it
// waits, so reserveLoopProcessors gives the rest of the program as many again. Against the loop
// parked in the runtime's poller on its epoll set, a wake-up saves the runtime's own
// epoll_wait, the nested set's poll, the switch to the loop's goroutine and the poller's look
// before it sleeps again: 4% of the round trip through the proxy (hack/bench-lb.sh). Measured,
// the alternatives were worse:
//   - a wait the runtime tracks (entersyscall) lets sysmon take an idle loop's P after 10 ms:
//     the rest of the program then ran on more processors than the CPUs it had, and the UDP
//     relay's goroutines lost 10% of their datagrams per second to the scheduler's spinning;
//     without the spare processors, sysmon took the P back after 20 µs, three context switches
//     per connection;
//   - the set in the runtime's poller as well (a nonblocking os.File puts it there): every
//     event woke the poller's thread too, 12% of the round trip.
//
// The runtime stops a loop as any running goroutine: its preemption signal ends the wait
// (EINTR), and the next call's stack check parks the loop for the garbage collector or the
// scheduler; it signals again every 100 µs until it does. maxWait bounds the wait where no
// signal comes (GODEBUG=asyncpreemptoff=1).
func (l *eventLoop) run() {
	events := make([]unix.EpollEvent, 256)
	var failed error
	for {
		n, err := sysEpollWait(l.epfd, events, l.waitMillis())
		l.now = time.Now().UnixNano() // after every wait: an interrupted one is timed anew from it
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Only a bad argument fails epoll_wait: nothing this loop can recover from.
			failed = err
			break
		}
		for _, ev := range events[:n] {
			l.dispatch(ev)
		}
		l.moveAgain()
		if !l.runPosted() {
			break
		}
		l.expire()
	}
	if failed != nil {
		l.u.log.Error("event loop wait failed: its flows are reset", "error", failed)
	}
	l.shutdown()
}

// waitMillis is how long the loop may wait: not at all with flows whose budget ran out, until
// the next sweep or paused listener, and no longer than maxWait.
func (l *eventLoop) waitMillis() int {
	if len(l.again) > 0 {
		return 0
	}
	var next int64
	if len(l.flows) > 0 {
		next = l.nextSweep
	}
	for _, p := range l.paused {
		if next == 0 || p.until < next {
			next = p.until
		}
	}
	wait := maxWait
	if next != 0 {
		wait = min(wait, time.Duration(next-l.now)) // now: the last wait's end, a turn's work ago
	}
	return int(max(0, (wait+time.Millisecond-1)/time.Millisecond))
}

// maxWait is the longest a loop waits in epoll_wait with nothing to time (see run).
const maxWait = 250 * time.Millisecond

// reserveLoopProcessors is the number of loops an engine runs, one per processor the program
// had before any loop ran, and raises GOMAXPROCS by as many: a loop's thread holds its P while
// it waits (see run). releaseLoopProcessors gives n back as loops end.
func reserveLoopProcessors() int {
	loopProcs.mu.Lock()
	defer loopProcs.mu.Unlock()
	if loopProcs.loops == 0 {
		loopProcs.base = runtime.GOMAXPROCS(0)
	}
	loopProcs.loops += loopProcs.base
	runtime.GOMAXPROCS(loopProcs.base + loopProcs.loops)
	return loopProcs.base
}

func releaseLoopProcessors(n int) {
	loopProcs.mu.Lock()
	defer loopProcs.mu.Unlock()
	loopProcs.loops -= n
	runtime.GOMAXPROCS(loopProcs.base + loopProcs.loops)
}

var loopProcs struct {
	mu    sync.Mutex
	base  int
	loops int
}

func (l *eventLoop) dispatch(ev unix.EpollEvent) {
	switch {
	case ev.Pad < 0:
		if ll := l.set.listener(-ev.Pad); ll != nil {
			l.accept(ll)
		}
	case ev.Pad == 0: // the eventfd: runPosted takes the queue
		var b [8]byte
		_, _ = unix.Read(l.wake, b[:])
	default:
		if fd := int(ev.Fd); fd < len(l.sides) && l.sides[fd].seq == ev.Pad {
			l.sides[fd].side.event(ev.Events)
		}
	}
}

// runPosted runs what other goroutines posted; false once the loop is to stop.
func (l *eventLoop) runPosted() bool {
	if !l.woken.Load() {
		return true
	}
	l.woken.Store(false)
	l.mu.Lock()
	queue, stopping := l.queue, l.stopping
	l.queue = nil
	l.mu.Unlock()
	for _, fn := range queue {
		fn()
	}
	return !stopping
}

func (l *eventLoop) moveAgain() {
	again := l.again
	l.again = nil
	for _, f := range again {
		f.queued = false
		if !f.ended {
			f.pump()
		}
	}
}

// expire resets the flows whose idle timeout passed and fails the connects whose timeout did,
// and resumes the listeners whose pause is over.
func (l *eventLoop) expire() {
	if len(l.paused) > 0 {
		kept := l.paused[:0]
		for _, p := range l.paused {
			if l.now < p.until {
				kept = append(kept, p)
			} else if err := l.watchListener(p.ll); err != nil && !errors.Is(err, net.ErrClosed) {
				l.u.log.Error("resume accepting failed", "address", p.ll.sock.key.addrPort(), "error", err)
			}
		}
		l.paused = kept
	}
	if len(l.flows) == 0 || l.now < l.nextSweep {
		return
	}
	shortest := l.u.connectTimeout
	for f := range l.flows {
		switch {
		case f.connecting && l.now >= f.deadline:
			f.connectFailed(unix.ETIMEDOUT)
		case !f.connecting && l.now-f.last >= int64(f.route.idle):
			f.reset() // idle timeout: both sides get an RST, as on AWS
		}
		shortest = min(shortest, f.route.idle)
	}
	l.nextSweep = l.now + int64(idleTick(shortest))
}

// shutdown resets every flow the loop still carries and closes what it owns.
func (l *eventLoop) shutdown() {
	l.stop()
	l.runPosted()
	for f := range l.flows {
		f.reset()
	}
	for _, p := range l.pipes {
		p.close()
	}
	l.closeFDs()
}

// watchListener adds ll to the loop's epoll set.
func (l *eventLoop) watchListener(ll *loopListener) error {
	var err error
	if cerr := ll.raw.Control(func(fd uintptr) {
		err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: listenerEvents, Fd: int32(fd), Pad: -ll.id})
	}); cerr != nil {
		return cerr
	}
	return os.NewSyscallError("epoll_ctl", err)
}

// unwatchListener takes ll out of the loop's epoll set.
func (l *eventLoop) unwatchListener(ll *loopListener) {
	_ = ll.raw.Control(func(fd uintptr) {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// accept takes one connection from ll: the listener is level-triggered, so the next wait reports
// the ones still queued, and no accept is spent finding the queue empty.
func (l *eventLoop) accept(ll *loopListener) {
	var fd int
	var client netip.AddrPort
	var err error
	if ll.raw.Control(func(lfd uintptr) { fd, client, err = sysAccept4(int(lfd)) }) != nil {
		return // closed: its tcpSocket is gone
	}
	s := ll.sock
	switch {
	case err == nil:
		l.backoff = 0
		l.open(s, fd, client)
	case err == unix.EAGAIN || acceptDropped(err): // another loop took it, or it died in the queue
	case acceptExhausted(err):
		l.backoff = acceptBackoff(l.backoff)
		s.u.log.Warn("accept failed, retrying", "address", s.key.addrPort(), "error", err, "delay", l.backoff)
		l.unwatchListener(ll)
		l.paused = append(l.paused, pausedListener{ll: ll, until: l.now + int64(l.backoff)})
	default:
		l.unwatchListener(ll)
		// socketFailed takes the engine's lock, which Apply holds while it closes sockets: not
		// on the loop, which Apply's closing may be waiting on.
		r := s.r.Load()
		s.u.wg.Go(func() { s.u.socketFailed(s.key, s, r, os.NewSyscallError("accept", err)) })
	}
}

// open starts the flow of a connection accepted on s: admission, then the connect to its target.
func (l *eventLoop) open(s *tcpSocket, fd int, client netip.AddrPort) {
	r := s.r.Load()
	if r.tls != nil {
		l.handOff(s, fd) // handle detaches the filter
		return
	}
	if s.filtered.Load() {
		// The connection inherited the listener's filter: remove it, or a later rule change
		// would go on judging this established flow's segments.
		_ = sysSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	}
	local := s.key.addrPort()
	t, set, ok := r.admitTCP(l.u, client, local)
	if !ok {
		sysReset(fd)
		return
	}
	f := &loopFlow{loop: l, sock: s, route: r, tgt: t}
	f.client = flowSide{f: f, fd: fd, writable: true}
	f.up = flowSide{f: f, fd: -1}
	f.toTarget = direction{src: &f.client, dst: &f.up, bytes: r.m.bytesIn}
	f.toClient = direction{src: &f.up, dst: &f.client, bytes: r.m.bytesOut}
	if !s.addFlow(f) { // the socket is closing
		r.flows.release()
		sysReset(fd)
		return
	}
	t.addFlow(f)
	l.flows[f] = struct{}{}
	l.nextSweep = min(l.nextSweep, l.now+int64(idleTick(min(r.idle, l.u.connectTimeout))))
	if err := l.watch(&f.client); err != nil {
		f.reset()
		return
	}
	if set.ProxyProtocolV2 {
		f.toTarget.pending = ppv2Header(client, local) // before the client's first byte
	}
	f.connect(r.upstreamSource(set.PreserveClientIP, client.Addr(), local.Addr(), t.addr.Addr()))
}

// handOff gives a TLS listener's connection to a goroutine of its own (tcpSocket.handle).
func (l *eventLoop) handOff(s *tcpSocket, fd int) {
	file := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(file) // a duplicate of fd, in the net package's poller
	_ = file.Close()
	if err != nil {
		l.u.log.Warn("hand TLS connection to its goroutine failed", "address", s.key.addrPort(), "error", err)
		return
	}
	l.u.wg.Go(func() { s.handle(c.(*net.TCPConn)) })
}

// watch registers a flow socket in the loop's epoll set.
func (l *eventLoop) watch(s *flowSide) error {
	if s.fd >= len(l.sides) {
		l.sides = append(l.sides, make([]sideSlot, max(s.fd+1, 2*len(l.sides))-len(l.sides))...)
	}
	l.seq++
	if l.seq <= 0 {
		l.seq = 1
	}
	l.sides[s.fd] = sideSlot{seq: l.seq, side: s}
	err := sysEpollAdd(l.epfd, s.fd, &unix.EpollEvent{Events: flowEvents, Fd: int32(s.fd), Pad: l.seq})
	return os.NewSyscallError("epoll_ctl", err)
}

// loopFlow is one proxied TCP connection on a loop.
type loopFlow struct {
	loop  *eventLoop
	sock  *tcpSocket
	route *route
	tgt   *target

	client, up         flowSide
	toTarget, toClient direction

	connecting bool
	active     bool  // connected, and counted in the active flows (until it begins to close)
	deadline   int64 // of the connect, UnixNano
	last       int64 // UnixNano of the last bytes moved either way
	ended      bool
	queued     bool // in the loop's again list
}

// flowSide is one of a flow's sockets, with what its epoll edges said of it.
type flowSide struct {
	f        *loopFlow
	fd       int // -1 before the connect and after close
	readable bool
	writable bool
	hup      bool // the peer closed or reset: read on to the end of the stream
}

// direction moves bytes from src to dst: through the loop's buffer, or, once a read fills it
// (a bulk run), through a pipe by splice(2), so that the bytes never enter userspace.
type direction struct {
	src, dst *flowSide
	pending  []byte      // read but not yet written: dst was full
	pipe     *splicePipe // during a bulk run
	ended    bool        // src sent its FIN; dst is half-closed once pending is written
	closed   bool        // dst half-closed
	bytes    prometheus.Counter
}

func (d *direction) held() int {
	n := len(d.pending)
	if d.pipe != nil {
		n += d.pipe.held
	}
	return n
}

// terminate implements flow: the loop resets both sides.
func (f *loopFlow) terminate() { f.loop.post(f.reset) }

func (f *loopFlow) scope() (string, bool) { return f.route.zone, f.route.crossZone }

func (f *loopFlow) connect(src netip.Addr) {
	l := f.loop
	f.connecting = true
	f.deadline = l.now + int64(l.u.connectTimeout)
	fd, err := dialNonblocking(f.tgt.addr, src, l.u.mark)
	if err != nil && err != unix.EINPROGRESS {
		f.connectFailed(err)
		return
	}
	f.up.fd = fd
	if werr := l.watch(&f.up); werr != nil {
		f.connectFailed(werr)
		return
	}
	if err == nil {
		f.established()
	}
}

// dialNonblocking starts connecting a nonblocking socket with the engine's mark to target,
// from src (the zero Addr: the kernel chooses).
func dialNonblocking(target netip.AddrPort, src netip.Addr, mark uint32) (int, error) {
	family, sa := sockaddrFrom(target)
	fd, err := sysSocket(family)
	if err != nil {
		return -1, err
	}
	_ = sysSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)) // see markSocket
	_ = sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)    // see listenRaw
	if src.IsValid() {
		// The source port is chosen at connect time (see controlBindNoPort).
		_ = sysSetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		_, ssa := sockaddrFrom(netip.AddrPortFrom(src, 0))
		err = sysBind(fd, &ssa)
	}
	if err == nil {
		err = sysConnect(fd, &sa)
	}
	if err != nil && err != unix.EINPROGRESS {
		sysClose(fd)
		return -1, err
	}
	return fd, err
}

func (f *loopFlow) connectFailed(err error) {
	r := f.route
	r.m.connectErrors.Inc()
	f.loop.u.log.Debug("connect to target failed", "listener", r.listenerID, "target", f.tgt.addr, "error", err)
	f.reset()
}

func (f *loopFlow) established() {
	f.connecting, f.active = false, true
	m := f.route.m
	m.newFlows.Inc()
	m.proxied.Inc()
	m.active.Inc()
	f.last = f.loop.now
	f.pump()
}

// event records what an edge says of the socket and moves what it allows.
func (s *flowSide) event(ev uint32) {
	f := s.f
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.readable = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.hup = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.writable = true
	}
	if f.connecting {
		// The client's edges are kept for when the target answers.
		if s == &f.up {
			if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				f.connectFailed(socketError(s.fd))
			} else if ev&unix.EPOLLOUT != 0 {
				f.established()
			}
		}
		return
	}
	f.pump()
}

// pump moves what can be moved both ways, and ends the flow once both ways ended or either
// failed (a reset, or a write to a reset peer): then both sides are reset, as on the goroutine
// path.
func (f *loopFlow) pump() {
	moreIn, err := f.toTarget.move(f)
	if err != nil {
		f.reset()
		return
	}
	moreOut, err := f.toClient.move(f)
	if err != nil {
		f.reset()
		return
	}
	if f.toTarget.closed && f.toClient.closed {
		f.end(false)
		return
	}
	if (moreIn || moreOut) && !f.queued {
		f.queued = true
		f.loop.again = append(f.loop.again, f)
	}
}

// move moves bytes until src has no more, dst takes no more, or the budget is spent (more).
func (d *direction) move(f *loopFlow) (more bool, err error) {
	l := f.loop
	for range moveBudget {
		if d.held() > 0 {
			if !d.dst.writable {
				return false, nil
			}
			if err := d.flush(l); err != nil || d.held() > 0 {
				return false, err
			}
		}
		if d.ended {
			if !d.closed {
				d.closed = true
				f.closing()
				sysShutdownWrite(d.dst.fd)
			}
			return false, nil
		}
		if !d.src.readable || !d.dst.writable {
			return false, nil
		}
		var n int
		if d.pipe != nil {
			n, err = d.spliceIn(l)
		} else {
			n, err = d.read(l)
		}
		if err != nil || n <= 0 {
			if err == unix.EAGAIN {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			continue // n == 0: the end of the stream
		}
		d.bytes.Add(float64(n))
		f.last = l.now
	}
	return true, nil
}

// read reads what src has queued into the loop's buffer and writes it to dst, keeping what dst
// does not take. A read that fills the buffer starts a bulk run.
func (d *direction) read(l *eventLoop) (int, error) {
	n, err := sysRead(d.src.fd, l.buf)
	switch {
	case err == unix.EAGAIN:
		d.src.readable = false
		return 0, err
	case err != nil:
		return 0, err
	case n == 0:
		d.ended = true
		return 0, nil
	case n == len(l.buf):
		d.pipe = l.takePipe() // nil when the system has no pipe to spare: copy on
	case !d.src.hup:
		d.src.readable = false // a short read emptied the queue
	}
	w, err := sysWrite(d.dst.fd, l.buf[:n])
	if err != nil && err != unix.EAGAIN {
		return n, err
	}
	if w = max(w, 0); w < n {
		d.pending = append(d.pending[:0], l.buf[w:n]...)
		d.dst.writable = false
	}
	return n, nil
}

// spliceIn moves what src has queued into the direction's (empty) pipe. When src has nothing,
// the bulk run is over and the pipe goes back to the loop: a waiting flow holds none.
func (d *direction) spliceIn(l *eventLoop) (int, error) {
	n, err := sysSplice(d.src.fd, d.pipe.w, spliceChunk)
	switch {
	case err == unix.EAGAIN:
		d.src.readable = false
		l.putPipe(d.pipe)
		d.pipe = nil
		return 0, err
	case err != nil:
		return 0, err
	case n == 0:
		d.ended = true
		l.putPipe(d.pipe)
		d.pipe = nil
		return 0, nil
	}
	d.pipe.held = int(n)
	return int(n), nil
}

// flush writes what the direction holds to dst, until dst is full.
func (d *direction) flush(l *eventLoop) error {
	for len(d.pending) > 0 {
		w, err := sysWrite(d.dst.fd, d.pending)
		if err == unix.EAGAIN {
			d.dst.writable = false
			return nil
		}
		if err != nil {
			return err
		}
		d.pending = d.pending[w:]
	}
	d.pending = d.pending[:0]
	for d.pipe != nil && d.pipe.held > 0 {
		n, err := sysSplice(d.pipe.r, d.dst.fd, d.pipe.held)
		if err == unix.EAGAIN {
			d.dst.writable = false
			return nil
		}
		if err != nil {
			return err
		}
		d.pipe.held -= int(n)
	}
	return nil
}

// reset ends the flow with an RST to both sides: the target turned unhealthy, its draining
// ended, the flow idled out, the listener went away, or one side reset.
func (f *loopFlow) reset() { f.end(true) }

// end closes both sides (with an RST when reset) and forgets the flow.
func (f *loopFlow) end(reset bool) {
	if f.ended {
		return
	}
	f.ended = true
	l := f.loop
	l.closeSide(&f.client, reset)
	l.closeSide(&f.up, reset)
	for _, d := range [2]*direction{&f.toTarget, &f.toClient} {
		if d.pipe != nil {
			if d.pipe.held > 0 {
				d.pipe.close() // its bytes are lost with the flow
			} else {
				l.putPipe(d.pipe)
			}
			d.pipe = nil
		}
	}
	delete(l.flows, f)
	f.sock.removeFlow(f)
	f.tgt.removeFlow(f)
	f.route.flows.release()
	f.closing()
}

// closing counts the flow out of the active ones, once: at the first end of
// stream either way, as the kernel fast path (and AWS, which counts flows in
// SYN_SENT and ESTABLISHED) do, or at its end.
func (f *loopFlow) closing() {
	if f.active {
		f.active = false
		f.route.m.active.Dec()
	}
}

func (l *eventLoop) closeSide(s *flowSide, reset bool) {
	if s.fd < 0 {
		return
	}
	l.sides[s.fd] = sideSlot{}
	if reset {
		sysReset(s.fd)
	} else {
		sysClose(s.fd)
	}
	s.fd = -1
}

// splicePipe is a pipe a bulk run splices through, and the bytes in it.
type splicePipe struct {
	r, w int
	held int
}

// maxIdlePipes bounds the pipes a loop keeps for the next bulk run.
const maxIdlePipes = 16

func (l *eventLoop) takePipe() *splicePipe {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil
	}
	// As large as a chunk, so that one splice each way moves it; the default is 64 KiB.
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, spliceChunk)
	return &splicePipe{r: fds[0], w: fds[1]}
}

func (l *eventLoop) putPipe(p *splicePipe) {
	if len(l.pipes) >= maxIdlePipes {
		p.close()
		return
	}
	l.pipes = append(l.pipes, p)
}

func (p *splicePipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// rawSocket is a listening socket outside the net package, as a syscall.RawConn for the filter
// and drop counters, which other goroutines use: its lock keeps the descriptor from closing (and
// its number from being reused) under them.
type rawSocket struct {
	mu sync.RWMutex
	fd int // -1 once closed
}

var _ syscall.RawConn = (*rawSocket)(nil)

func (s *rawSocket) Control(fn func(fd uintptr)) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	fn(uintptr(s.fd))
	return nil
}

func (s *rawSocket) Read(func(fd uintptr) bool) error  { return errors.ErrUnsupported }
func (s *rawSocket) Write(func(fd uintptr) bool) error { return errors.ErrUnsupported }

func (s *rawSocket) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// listenRaw opens a nonblocking listening socket on key's address, as the net package would
// (SO_REUSEADDR, TCP_NODELAY, IPv6 only for an IPv6 address, the system's largest backlog),
// with attach run on it before it listens.
func listenRaw(key sockKey, attach func(syscall.RawConn) error) (*rawSocket, error) {
	family, sa := sockaddrFrom(key.addrPort())
	fd, err := sysSocket(family)
	if err != nil {
		return nil, err
	}
	raw := &rawSocket{fd: fd}
	err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err == nil {
		// Bytes are written as they arrive, as the net package and HAProxy have it: with Nagle's
		// algorithm, the second part of a message written in two (a response's headers, then
		// its body) waited for the peer's delayed acknowledgement of the first, 40 ms. Accepted
		// connections inherit the option.
		err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if err == nil && family == unix.AF_INET6 {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	if err == nil {
		err = attach(raw)
	}
	if err == nil {
		err = sysBind(fd, &sa)
	}
	if err == nil {
		// The kernel takes the smaller of this and net.core.somaxconn, as the net package asks.
		err = unix.Listen(fd, 1<<16-1)
	}
	if err != nil {
		raw.close()
		return nil, err
	}
	return raw, nil
}

// socketError is a failed connect's error (SO_ERROR).
func socketError(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return err
	case v != 0:
		return unix.Errno(v)
	}
	return unix.ECONNRESET
}
