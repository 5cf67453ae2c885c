package lb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/awsapi"
)

// APILimits bound what clients, signed or not, can hold of the API: connections, and the time a
// request may take to arrive.
type APILimits struct {
	// MaxConnections caps concurrent API connections (--api-max-connections). At the cap a new
	// connection replaces the longest-idle one; when all are busy it is refused (see connLimiter).
	MaxConnections int
	// ReadTimeout bounds reading one request, header and body (--api-read-timeout). The default
	// lets the largest body, 1 MiB, arrive at 35 KB/s.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no next request (--api-idle-timeout).
	IdleTimeout time.Duration
}

// DefaultAPILimits are the limits of `moat lb` unless flags say otherwise.
func DefaultAPILimits() APILimits {
	return APILimits{MaxConnections: 1024, ReadTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
}

// Time a response may take once its request has been read: the handler and the write, which a
// client that does not read would otherwise hold forever.
const responseTimeout = 30 * time.Second

// Time a request header may take to arrive: a header is a few hundred bytes.
const headerTimeout = 10 * time.Second

func (l APILimits) withDefaults() APILimits {
	if l == (APILimits{}) {
		return DefaultAPILimits()
	}
	return l
}

func (l APILimits) validate() error {
	l = l.withDefaults()
	switch {
	case l.MaxConnections < 1:
		return fmt.Errorf("--api-max-connections %d: at least 1", l.MaxConnections)
	case l.ReadTimeout <= 0:
		return fmt.Errorf("--api-read-timeout %s: must be positive", l.ReadTimeout)
	case l.IdleTimeout <= 0:
		return fmt.Errorf("--api-idle-timeout %s: must be positive", l.IdleTimeout)
	}
	return nil
}

// fitFileLimit lowers the connection cap so that the API, refusals included, holds at most a
// quarter of the open-file limit: the rest is for the data plane's flows, DNS over TCP and the
// store.
func (l APILimits) fitFileLimit(fileLimit uint64) APILimits {
	budget := fileLimit / 4
	if uint64(l.MaxConnections+refusalSlots(l.MaxConnections)) <= budget {
		return l
	}
	l.MaxConnections = max(1, int(budget*8/9))
	return l
}

// newAPIServer is the http.Server of the API, with the timeouts of limits.
func newAPIServer(api *awsapi.Server, limits APILimits, ln *connLimiter) *http.Server {
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if refusedConn(r) {
				w.Header().Set("Connection", "close")
				api.Busy(w, r)
				return
			}
			api.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: min(headerTimeout, limits.ReadTimeout),
		ReadTimeout:       limits.ReadTimeout,
		WriteTimeout:      limits.ReadTimeout + responseTimeout,
		IdleTimeout:       limits.IdleTimeout,
		ConnState:         ln.connState,
		ConnContext:       connContext,
	}
}

// serveAPI binds addr and serves the API until ctx ends, within limits; it returns the URL.
func serveAPI(ctx context.Context, addr string, api *awsapi.Server, limits APILimits, certFile, keyFile string, reg prometheus.Registerer, log *slog.Logger, errs chan<- error) (string, error) {
	limits = limits.withDefaults()
	if fileLimit, err := openFileLimit(); err == nil {
		if fitted := limits.fitFileLimit(fileLimit); fitted != limits {
			log.Warn("lowered the API connection cap to a quarter of the open-file limit", "api_max_connections", fitted.MaxConnections, "asked", limits.MaxConnections, "open_file_limit", fileLimit)
			limits = fitted
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	limited := newConnLimiter(ln, limits.MaxConnections, reg)
	return serve(ctx, limited, newAPIServer(api, limits, limited), certFile, keyFile, errs)
}

// serveHTTP binds addr and serves h until ctx ends; it returns the URL it serves on.
func serveHTTP(ctx context.Context, addr string, h http.Handler, certFile, keyFile string, errs chan<- error) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: headerTimeout, ReadTimeout: headerTimeout, WriteTimeout: responseTimeout, IdleTimeout: time.Minute}
	return serve(ctx, ln, srv, certFile, keyFile, errs)
}

// serve serves srv on ln (over TLS with certFile) until ctx ends; it returns the URL.
func serve(ctx context.Context, ln net.Listener, srv *http.Server, certFile, keyFile string, errs chan<- error) (string, error) {
	scheme := "http"
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			ln.Close()
			return "", fmt.Errorf("tls: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- err
		}
	}()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return scheme + "://" + ln.Addr().String(), nil
}
