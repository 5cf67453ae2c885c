package lb

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connLimiter caps the connections an http.Server holds. At the cap, a new connection takes the
// place of the longest-idle one (between keep-alive requests, or not yet past its request header),
// as nginx reuses idle keep-alive connections when it runs out: an idle flood never locks clients
// out. When every connection is busy with a request, the new one is refused: a few at a time are
// answered with a 503 the handler writes (refusedConn tells it which), within refusalTimeout, and
// the rest are closed at once. Descriptors held are thus at most max + maxRefusing.
type connLimiter struct {
	net.Listener
	max            int
	maxRefusing    int
	refusalTimeout time.Duration

	mu       sync.Mutex
	open     map[*limitedConn]struct{} // admitted and not closed
	refusing map[*limitedConn]struct{} // being answered 503

	refused prometheus.Counter
	evicted prometheus.Counter
}

func newConnLimiter(ln net.Listener, max int, reg prometheus.Registerer) *connLimiter {
	l := &connLimiter{
		Listener:       ln,
		max:            max,
		maxRefusing:    refusalSlots(max),
		refusalTimeout: 2 * time.Second,
		open:           map[*limitedConn]struct{}{},
		refusing:       map[*limitedConn]struct{}{},
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_api_connections_refused_total",
			Help: "API connections refused because all --api-max-connections were busy with requests: answered 503 (Throttling, or RequestLimitExceeded for EC2), or closed at once when too many were being answered.",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_api_connections_evicted_total",
			Help: "Idle API connections closed to make room for a new one at --api-max-connections.",
		}),
	}
	if reg != nil {
		reg.MustRegister(l.refused, l.evicted)
		for _, state := range []string{"busy", "idle"} {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name:        "moat_api_connections_open",
				Help:        "API connections open (busy: serving a request; idle: between requests or not yet past the request header); busy and idle together are at most --api-max-connections.",
				ConstLabels: prometheus.Labels{"state": state},
			}, func() float64 { return float64(l.count(state == "idle")) }))
		}
	}
	return l
}

// count is the number of admitted connections that are idle, or busy.
func (l *connLimiter) count(idle bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.open {
		if !c.idleSince.IsZero() == idle {
			n++
		}
	}
	return n
}

// refusalSlots is how many refused connections may be answered 503 at once for a cap of max.
func refusalSlots(max int) int { return max/8 + 1 }

// Accept returns the next admitted or to-be-refused connection; connections refused at once never
// leave it.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := &limitedConn{Conn: c, l: l, idleSince: time.Now()}
		var victim *limitedConn
		l.mu.Lock()
		if len(l.open) >= l.max {
			if victim = l.longestIdle(); victim != nil {
				delete(l.open, victim)
				l.evicted.Inc()
			}
		}
		switch {
		case len(l.open) < l.max:
			l.open[lc] = struct{}{}
			l.mu.Unlock()
			if victim != nil {
				victim.Conn.Close()
			}
			return lc, nil
		case len(l.refusing) < l.maxRefusing:
			l.refusing[lc] = struct{}{}
			l.refused.Inc()
			l.mu.Unlock()
			lc.refused = true
			lc.hardDeadline = time.Now().Add(l.refusalTimeout)
			_ = lc.Conn.SetDeadline(lc.hardDeadline)
			return lc, nil
		default:
			l.refused.Inc()
			l.mu.Unlock()
			c.Close()
		}
	}
}

// longestIdle is the admitted connection idle for longest, or nil when all are busy. Callers hold mu.
func (l *connLimiter) longestIdle() *limitedConn {
	var oldest *limitedConn
	for c := range l.open {
		if !c.idleSince.IsZero() && (oldest == nil || c.idleSince.Before(oldest.idleSince)) {
			oldest = c
		}
	}
	return oldest
}

// connState is the http.Server's ConnState hook: it tells busy connections from idle ones.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	lc, ok := unwrapConn(c).(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateActive:
		lc.idleSince = time.Time{}
	case http.StateIdle:
		lc.idleSince = time.Now()
	}
}

func (l *connLimiter) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.open, c)
	delete(l.refusing, c)
}

// limitedConn is a connection the limiter counts until it is closed.
type limitedConn struct {
	net.Conn
	l            *connLimiter
	idleSince    time.Time // zero while serving a request; guarded by l.mu
	refused      bool      // to be answered 503 and closed
	hardDeadline time.Time // of a refused connection: no deadline the server sets goes past it
}

func (c *limitedConn) Close() error {
	c.l.release(c)
	return c.Conn.Close()
}

func (c *limitedConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *limitedConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.clamp(t))
}
func (c *limitedConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

func (c *limitedConn) clamp(t time.Time) time.Time {
	if c.refused && (t.IsZero() || t.After(c.hardDeadline)) {
		return c.hardDeadline
	}
	return t
}

// unwrapConn is the connection under TLS, as the limiter handed it out.
func unwrapConn(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
}

type refusedKey struct{}

// connContext marks the context of a refused connection's requests (http.Server.ConnContext).
func connContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := unwrapConn(c).(*limitedConn); ok && lc.refused {
		return context.WithValue(ctx, refusedKey{}, true)
	}
	return ctx
}

// refusedConn reports whether r came on a connection the limiter refused.
func refusedConn(r *http.Request) bool {
	refused, _ := r.Context().Value(refusedKey{}).(bool)
	return refused
}
