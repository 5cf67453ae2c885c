// Package console is moat lb's web console: a read-only view of the load balancers, their
// targets' health, the security groups and the flows they deny, for whoever holds an access key
// of moat lb's credentials file. It is served under /console on moat lb's metrics address, from
// files embedded in the binary, and updates live by Server-Sent Events.
package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/flowlog"
)

// Path is where the console is served.
const Path = "/console"

// DefaultSessionTTL is how long a sign-in lasts.
const DefaultSessionTTL = 12 * time.Hour

// Explainer answers the explain form: why a flow from an address to a load balancer or
// instance (host:port) would be admitted or dropped. The result is shown as JSON.
type Explainer interface {
	Explain(ctx context.Context, from netip.Addr, to string, protocol string) (any, error)
}

// Config is what the console reads.
type Config struct {
	// Credentials are the keys that may sign in: moat lb's credentials file.
	Credentials sigv4.CredentialStore
	// Snapshot reads the state to show.
	Snapshot func() (Snapshot, error)
	// Changes notifies every committed change of the state; the second result stops it.
	Changes func() (<-chan struct{}, func())
	// FlowLog is where denied flows come from; nil: none are listed, only counted per listener.
	FlowLog *flowlog.Log
	// Explainer answers the explain form; nil: the form says explain is unavailable.
	Explainer Explainer
	// SessionTTL is how long a sign-in lasts (0: DefaultSessionTTL).
	SessionTTL time.Duration
	// Refresh is how often an open page's data is checked for changes that no commit announces,
	// such as targets' health and counters (0: 2 s).
	Refresh time.Duration
	Log     *slog.Logger
}

// Console serves the console's pages and data.
type Console struct {
	cfg      Config
	sessions *sessions
	feed     *feed
	mux      *http.ServeMux
	done     chan struct{} // closed when Run returns: event streams end
}

//go:embed static
var static embed.FS

var signInPage = template.Must(template.ParseFS(static, "static/signin.html"))

// New returns a console; Run must run for it to follow the flow log and end its streams.
func New(cfg Config) *Console {
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Console{
		cfg:      cfg,
		sessions: &sessions{key: randomKey(), creds: cfg.Credentials, ttl: cfg.SessionTTL, now: time.Now},
		feed:     newFeed(cfg.FlowLog),
		mux:      http.NewServeMux(),
		done:     make(chan struct{}),
	}
	assets, _ := fs.Sub(static, "static")
	c.mux.HandleFunc("GET "+Path, c.page)
	c.mux.Handle("GET "+Path+"/static/", http.StripPrefix(Path+"/static/", http.FileServerFS(assets)))
	c.mux.HandleFunc("POST "+Path+"/signin", c.signIn)
	c.mux.HandleFunc("POST "+Path+"/signout", c.signOut)
	c.mux.Handle(Path+"/api/", c.authenticated(http.HandlerFunc(c.notFound)))
	c.mux.Handle("GET "+Path+"/api/snapshot", c.authenticated(http.HandlerFunc(c.snapshot)))
	c.mux.Handle("GET "+Path+"/api/denials", c.authenticated(http.HandlerFunc(c.denials)))
	c.mux.Handle("GET "+Path+"/api/events", c.authenticated(http.HandlerFunc(c.events)))
	c.mux.Handle("GET "+Path+"/api/explain", c.authenticated(http.HandlerFunc(c.explain)))
	c.mux.HandleFunc(Path+"/", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, Path, http.StatusSeeOther) })
	return c
}

// randomKey is the key of this process's session cookies.
func randomKey() []byte {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand crashes the program rather than return an error)
	return key
}

// Run follows the flow log until ctx ends, then ends the event streams.
func (c *Console) Run(ctx context.Context) {
	defer close(c.done)
	c.feed.run(ctx)
	<-ctx.Done()
}

// ServeHTTP serves /console and everything under it.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

const cookieName = "moat_console"

// session is the access key ID of r's valid session.
func (c *Console) session(r *http.Request) (string, bool) {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return "", false
	}
	return c.sessions.check(ck.Value)
}

// authenticated answers 401 to a request without a valid session.
func (c *Console) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := c.session(r); !ok {
			writeError(w, http.StatusUnauthorized, "sign in at "+Path+" with an access key of moat lb's credentials file")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// page is the console for a signed-in browser, the sign-in page for any other.
func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.session(r); !ok {
		c.signInPage(w, http.StatusOK, "")
		return
	}
	http.ServeFileFS(w, r, static, "static/console.html")
}

func (c *Console) signInPage(w http.ResponseWriter, status int, problem string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = signInPage.Execute(w, struct{ Problem, Path string }{problem, Path})
}

// sameOrigin refuses what a browser sends from another site: SameSite=Strict keeps the session
// cookie off such requests already, and this keeps another site from signing a browser in
// with a key of its own choosing. Clients that are not browsers send neither header.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin"
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		return err == nil && u.Host == r.Host
	}
	return true
}

func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		c.signInPage(w, http.StatusForbidden, "Sign in from this page, not from another site.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	id, secret := r.PostFormValue("access_key_id"), r.PostFormValue("secret_access_key")
	value, expires, ok := c.sessions.signIn(id, secret)
	if !ok {
		c.cfg.Log.Info("console sign-in refused", "access_key_id", id, "remote", r.RemoteAddr)
		c.signInPage(w, http.StatusUnauthorized, "That access key ID and secret access key are not in moat lb's credentials file.")
		return
	}
	c.cfg.Log.Info("console sign-in", "access_key_id", id, "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: Path, Expires: expires, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, Path, http.StatusSeeOther)
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "cross-site request")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Path: Path, MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, Path, http.StatusSeeOther)
}

func (c *Console) notFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, "no such console endpoint")
}

func (c *Console) snapshot(w http.ResponseWriter, _ *http.Request) {
	snap, err := c.cfg.Snapshot()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "read state: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, snap)
}

func (c *Console) denials(w http.ResponseWriter, _ *http.Request) {
	snap, err := c.cfg.Snapshot()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "read state: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, c.feed.denials(&snap))
}

func (c *Console) explain(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Explainer == nil {
		writeError(w, http.StatusNotImplemented, "explain is not available in this moat lb")
		return
	}
	q := r.URL.Query()
	from, err := netip.ParseAddr(q.Get("from"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "from: want an IP address")
		return
	}
	to, protocol := q.Get("to"), q.Get("protocol")
	if to == "" {
		writeError(w, http.StatusBadRequest, "to: want a load balancer's DNS name or address, or an instance's address, with :port")
		return
	}
	if protocol == "" {
		protocol = "tcp"
	}
	answer, err := c.cfg.Explainer.Explain(r.Context(), from, to, protocol)
	if err != nil {
		writeError(w, http.StatusBadRequest, "explain: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, answer)
}

// Time between keep-alive comments on an idle event stream, which also finds closed clients.
const keepAlive = 15 * time.Second

// events streams a "changed" event when the state or what the data plane reports of it
// changes, and a "denied" event when denied flows arrive. The page then fetches what changed.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// The metrics server bounds each request's and response's time; a stream lasts as long as
	// its page (a read deadline left in place would end it: the server watches the idle
	// connection for the client closing it).
	for _, lift := range []func(time.Time) error{rc.SetReadDeadline, rc.SetWriteDeadline} {
		if err := lift(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	changes, stopChanges := c.cfg.Changes()
	defer stopChanges()
	denied, stopDenied := c.feed.watch()
	defer stopDenied()
	refresh := time.NewTicker(c.cfg.Refresh)
	defer refresh.Stop()
	idle := time.NewTicker(keepAlive)
	defer idle.Stop()
	last := c.snapshotSum()
	send := func(event string) bool {
		_, err := w.Write([]byte("event: " + event + "\ndata: {}\n\n"))
		return err == nil && rc.Flush() == nil
	}
	if !send("hello") {
		return
	}
	for {
		ok := true
		select {
		case <-r.Context().Done():
			return
		case <-c.done:
			return
		case <-changes:
			last = c.snapshotSum()
			ok = send("changed")
		case <-refresh.C:
			if sum := c.snapshotSum(); sum != last {
				last = sum
				ok = send("changed")
			}
		case <-denied:
			ok = send("denied")
		case <-idle.C:
			_, err := w.Write([]byte(": keep-alive\n\n"))
			ok = err == nil && rc.Flush() == nil
		}
		if !ok {
			return
		}
	}
}

// snapshotSum identifies the snapshot's content (zero when it cannot be read).
func (c *Console) snapshotSum() [sha256.Size]byte {
	snap, err := c.cfg.Snapshot()
	if err != nil {
		return [sha256.Size]byte{}
	}
	data, _ := json.Marshal(snap)
	return sha256.Sum256(data)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]string{"error": message})
}
