package dataplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/tlspolicy"
)

// DefaultTLSHandshakeTimeout bounds a TLS listener's client handshake when
// ListenerTLS.HandshakeTimeout is zero.
const DefaultTLSHandshakeTimeout = 10 * time.Second

// tlsRoute is a TLS listener's part of its routes: built once per Apply from
// the Config, shared by the listener's sockets, never changed.
type tlsRoute struct {
	server *tls.Config
	// backend is the client side toward TLS targets: NLB's backend policy,
	// no verification. A flow that negotiated ALPN with its client offers
	// that protocol to the target (see backendFor).
	backend          *tls.Config
	handshakeTimeout time.Duration
}

// newTLSRoute resolves a TLS listener's settings into crypto/tls
// configurations.
func newTLSRoute(lt *ListenerTLS) (*tlsRoute, error) {
	if lt == nil || len(lt.Certificates) == 0 {
		return nil, errors.New("TLS listener without a certificate")
	}
	certs := slices.Clone(lt.Certificates)
	for i := range certs {
		if certs[i].Leaf != nil {
			continue
		}
		if len(certs[i].Certificate) == 0 {
			return nil, fmt.Errorf("certificate %d of the TLS listener is empty", i)
		}
		leaf, err := x509.ParseCertificate(certs[i].Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the TLS listener: %w", i, err)
		}
		certs[i].Leaf = leaf
	}
	policy := lt.Policy
	if policy.Name == "" {
		var err error
		if policy, err = tlspolicy.Lookup(tlspolicy.Default); err != nil {
			return nil, err
		}
	}
	list := certs[1:]
	server := &tls.Config{
		// The default certificate is crypto/tls's fallback; the list is
		// searched first for a client that names a server (GetCertificate
		// is only called then), so a default that also matches the name
		// does not shadow the list, as on NLB.
		Certificates: certs[:1],
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			for i := range list {
				if hello.SupportsCertificate(&list[i]) == nil {
					return &list[i], nil
				}
			}
			return nil, nil
		},
		NextProtos: slices.Clone(lt.ALPN),
		// NLB does not support renegotiation, and neither does a crypto/tls
		// server; tickets resume within one process, as NLB resumes within a node.
	}
	policy.Apply(server)
	if len(server.NextProtos) > 0 {
		// crypto/tls refuses a client whose ALPN offer does not overlap the
		// server's; NLB then just does not use ALPN.
		withoutALPN := server.Clone()
		withoutALPN.NextProtos = nil
		server.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if len(hello.SupportedProtos) > 0 && !slices.ContainsFunc(hello.SupportedProtos, func(p string) bool {
				return slices.Contains(server.NextProtos, p)
			}) {
				return withoutALPN, nil
			}
			return nil, nil
		}
	}
	backend := &tls.Config{InsecureSkipVerify: true} // NLB does not verify targets' certificates
	policy.Backend().Apply(backend)
	timeout := lt.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultTLSHandshakeTimeout
	}
	return &tlsRoute{server: server, backend: backend, handshakeTimeout: timeout}, nil
}

// backendFor is the client configuration toward a TLS target for a flow
// whose client negotiated proto by ALPN ("" for none).
func (t *tlsRoute) backendFor(proto string) *tls.Config {
	if proto == "" {
		return t.backend
	}
	c := t.backend.Clone()
	c.NextProtos = []string{proto}
	return c
}

// handshake runs a TLS handshake on raw within timeout.
func handshake(c *tls.Conn, raw *net.TCPConn, timeout time.Duration) error {
	if err := raw.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if err := c.Handshake(); err != nil {
		return err
	}
	return raw.SetDeadline(time.Time{})
}

// tlsStream is one side of a TLS listener's flow: the TLS session, or nil
// for a plaintext target, over its TCP connection.
type tlsStream struct {
	tls *tls.Conn
	raw *net.TCPConn
}

func (s tlsStream) conn() net.Conn {
	if s.tls != nil {
		return s.tls
	}
	return s.raw
}

// closeWrite ends the stream's sending side: close_notify, then FIN.
func (s tlsStream) closeWrite() {
	if s.tls != nil {
		_ = s.tls.CloseWrite()
	}
	_ = s.raw.CloseWrite()
}

// tlsCopyBuffer holds one TLS record's plaintext, the most a tls.Conn read
// returns.
const tlsCopyBuffer = 16 << 10

// pipeTLS copies src to dst through userspace, the bytes being encrypted on
// at least one side, until src ends (then half-closes dst), the flow idles
// out, or an error ends the flow (then both sides are reset). It counts
// payload bytes and moves the idle deadline as pipe does.
func (f *tcpFlow) pipeTLS(dst, src tlsStream, bytes prometheus.Counter) {
	tick := idleTick(f.idle)
	buf := make([]byte, tlsCopyBuffer)
	in, out := src.conn(), dst.conn()
	for {
		// A read that times out leaves a tls.Conn usable: the deadline
		// error is temporary, and a partial record stays buffered.
		if err := in.SetReadDeadline(time.Now().Add(tick)); err != nil {
			f.terminate()
			return
		}
		n, err := in.Read(buf)
		if n > 0 {
			if _, werr := out.Write(buf[:n]); werr != nil {
				f.terminate()
				return
			}
			bytes.Add(float64(n))
			f.last.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if time.Since(time.Unix(0, f.last.Load())) >= f.idle {
				f.terminate()
				return
			}
		case errors.Is(err, io.EOF): // close_notify, or a FIN at a record boundary
			f.closed()
			dst.closeWrite()
			return
		default:
			f.terminate()
			return
		}
	}
}
