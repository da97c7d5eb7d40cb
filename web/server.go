// Package web is presenced's HTTP side: the status of public handles as
// icons and JSON (the patent's FIG. 9), and health checks. It never asks
// the roster's engine anything while answering: the engine pushes the web
// status of every public handle into a Statuses as it changes (the same
// View its subscribers see, roster/web.go), and requests read it.
//
// Privacy: a hiding account, a hidden handle, a handle that is not public
// and a name that nobody holds all get the off-line answer, byte for byte
// the same, every header included but Date. So a badge shows no name, and
// its ETag depends on the status only.
package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"presenced/roster"
)

// Bounds of the HTTP server.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 8 << 10
	// maxConcurrent bounds the requests served at once; past it, 503.
	maxConcurrent = 256
	// maxAsked bounds a name as asked in a URL before it is prepared: a
	// handle name (a localpart) is at most 1023 bytes once prepared
	// (Config.Prepare checks that), and a spelling that prepares to one,
	// such as its fullwidth form, may take three bytes for each of its bytes.
	maxAsked = 3 * 1023
	// shutdownTimeout bounds the wait for requests at shutdown.
	shutdownTimeout = 3 * time.Second
	// lastWriteTimeout bounds the write of a stream's last events, at
	// shutdown.
	lastWriteTimeout = time.Second
	// maxNames bounds the names of one /events or /list request.
	maxNames = 100
	// maxStreams bounds the live streams (/events) open at once; past
	// it, 503. They do not take one of the maxConcurrent request slots,
	// which would run out with a few hundred open pages.
	maxStreams = 1000
	// keepAlive is how often a stream sends a ping event, so that
	// proxies and browsers keep it open, a page can tell a live stream
	// from a dead one, and a client gone away without a word is found
	// out.
	keepAlive = 25 * time.Second
)

//go:embed icons/*.svg
var defaultIcons embed.FS

// statuses are the four web statuses, in the order of the icon files.
var statuses = []roster.WebStatus{roster.WebAvailable, roster.WebAway, roster.WebBusy, roster.WebOffline}

// Statuses holds the web status of the public handles not off-line. It is
// a roster.WebSink: the engine writes it, requests read it, and live
// streams (/events) subscribe to the handles they show.
type Statuses struct {
	mu   sync.RWMutex
	m    map[string]roster.WebStatus  // guarded by mu; off-line handles are absent
	subs map[string]map[*sub]struct{} // guarded by mu; by handle, the streams showing it
}

// sub is one live stream's view of the changes: the latest status of each
// of its handles that changed since it last looked, and a wake-up. Only
// the latest status of a handle matters, so a stream that falls behind
// holds at most one entry per handle it shows, never a queue, and
// WebChanged, on the engine goroutine, never waits for it.
type sub struct {
	handles []string      // prepared, distinct; read-only once subscribed
	notify  chan struct{} // capacity 1: "pending has something"
	mu      sync.Mutex
	pending map[string]roster.WebStatus // guarded by mu
}

// NewStatuses returns an empty Statuses: every name off-line.
func NewStatuses() *Statuses {
	return &Statuses{m: make(map[string]roster.WebStatus), subs: make(map[string]map[*sub]struct{})}
}

// WebChanged implements roster.WebSink. It never blocks on a stream: it
// records the status in each subscriber's pending map and wakes it
// without waiting.
func (s *Statuses) WebChanged(handle string, st roster.WebStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.m[handle]
	if !ok {
		old = roster.WebOffline
	}
	if st == roster.WebOffline {
		delete(s.m, handle)
	} else {
		s.m[handle] = st
	}
	// The engine tells the sink again of statuses that did not change (as
	// the connection comes back, for one): nothing to send.
	if old == st {
		return
	}
	for b := range s.subs[handle] {
		b.mu.Lock()
		b.pending[handle] = st
		b.mu.Unlock()
		select {
		case b.notify <- struct{}{}:
		default: // already woken; it will read pending in full
		}
	}
}

// Get returns the web status of handle: off-line unless it is public and
// shown.
func (s *Statuses) Get(handle string) roster.WebStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.get(handle)
}

func (s *Statuses) get(handle string) roster.WebStatus {
	if st, ok := s.m[handle]; ok {
		return st
	}
	return roster.WebOffline
}

// subscribe registers a stream for handles (prepared, distinct) and
// returns their statuses now, read under the same lock, so that no change
// falls between what the stream sends first and what it is told after.
func (s *Statuses) subscribe(handles []string) (*sub, []roster.WebStatus) {
	b := &sub{handles: handles, notify: make(chan struct{}, 1), pending: make(map[string]roster.WebStatus, len(handles))}
	now := make([]roster.WebStatus, len(handles))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, h := range handles {
		now[i] = s.get(h)
		set := s.subs[h]
		if set == nil {
			set = make(map[*sub]struct{})
			s.subs[h] = set
		}
		set[b] = struct{}{}
	}
	return b, now
}

// unsubscribe forgets b; WebChanged no longer touches it after.
func (s *Statuses) unsubscribe(b *sub) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range b.handles {
		delete(s.subs[h], b)
		if len(s.subs[h]) == 0 {
			delete(s.subs, h)
		}
	}
}

// take returns and clears what changed since the last take.
func (b *sub) take() map[string]roster.WebStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) == 0 {
		return nil
	}
	p := b.pending
	b.pending = make(map[string]roster.WebStatus, len(b.handles))
	return p
}

// Config is what the HTTP side needs.
type Config struct {
	// Listen is the address to listen on, host:port.
	Listen string
	// Icons is a folder holding available.svg, away.svg, busy.svg and
	// offline.svg in place of the embedded ones; "" keeps those.
	Icons string
	// Ready reports whether presenced serves: connected to the XMPP
	// server with storage answering; else why not, in one line.
	Ready func() (bool, string)
	// Prepare turns a name from a URL into the handle name it stands for
	// (PRECIS, as the component prepares names), or reports that none
	// could be.
	Prepare func(name string) (string, bool)
	// TrustedProxies are the reverse proxies in front of the server, whose
	// X-Forwarded-For names the client that the per-client bounds count;
	// from anywhere else the header is ignored.
	TrustedProxies []netip.Prefix
}

// Server is the HTTP side.
type Server struct {
	cfg      Config
	statuses *Statuses
	icons    map[roster.WebStatus]icon
	log      *slog.Logger
	slots    chan struct{}
	srv      *http.Server
	listCSS  template.CSS // the /list style sheet, icons inlined

	// Live streams: how many are open, at most how many (maxStreams but
	// in tests), how often they keep alive, and quit, closed as the
	// server shuts down: http.Server.Shutdown waits for idle connections
	// only, and a stream is never idle.
	streams    atomic.Int64
	maxStreams int64
	keepAlive  time.Duration
	quit       chan struct{}
	quitOnce   sync.Once
	clients    clients
	ln         net.Listener // set by Listen
}

type icon struct {
	body []byte
	etag string
}

// New returns a Server reading st.
func New(cfg Config, st *Statuses, log *slog.Logger) (*Server, error) {
	s := &Server{cfg: cfg, statuses: st, log: log, slots: make(chan struct{}, maxConcurrent),
		maxStreams: maxStreams, keepAlive: keepAlive, quit: make(chan struct{})}
	s.clients.trusted = cfg.TrustedProxies
	var src fs.FS = defaultIcons
	dir := "icons"
	if cfg.Icons != "" {
		src, dir = os.DirFS(cfg.Icons), "."
	}
	s.icons = make(map[roster.WebStatus]icon, len(statuses))
	for _, st := range statuses {
		b, err := fs.ReadFile(src, filepath.ToSlash(filepath.Join(dir, string(st)+".svg")))
		if err != nil {
			return nil, fmt.Errorf("web: icon %s: %w", st, err)
		}
		s.icons[st] = icon{body: b, etag: fmt.Sprintf(`"%s-%08x"`, st, fnv32(b))}
	}
	s.listCSS = listCSS(s.icons)
	mux := http.NewServeMux()
	mux.Handle("GET /status/{file}", s.bounded(s.status))
	// Health checks cost a constant and allocate nothing: they are not
	// held to the request bounds, so that clients holding every slot
	// cannot make a probe think the process is gone.
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /list", s.bounded(s.list))
	mux.HandleFunc("GET /events", s.events) // bounded by maxStreams
	s.srv = newHTTPServer(mux, log)
	s.srv.RegisterOnShutdown(s.stopStreams)
	return s, nil
}

// Handler returns the server's handler, for tests.
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// Listen takes the address to listen on, so that a daemon that cannot
// serve what it was asked to stops at once. An address in use is not such
// a failure: it is ErrInUse, and Run takes the address once it is free
// (a standby taking over on the same host, while the instance it replaces
// still holds it for a moment).
func (s *Server) Listen() error {
	ln, err := listenTCP("web", s.cfg.Listen)
	if err != nil {
		return err
	}
	l := limitedListener(ln, maxConns, s.cfg.TrustedProxies)
	l.pressure = func(high bool) {
		// Off, it also closes the idle connections at once.
		s.srv.SetKeepAlivesEnabled(!high)
		if high {
			s.log.Warn("HTTP connections near their bound: idle keep-alives shed", "open", len(l.slots), "bound", cap(l.slots))
		}
	}
	s.ln = l
	s.log.Info("HTTP side listening", "addr", ln.Addr().String())
	return nil
}

// listenTCP listens on addr; an address in use is ErrInUse.
func listenTCP(what, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%s: %w: %w", what, ErrInUse, err)
	} else if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ln, nil
}

// newHTTPServer returns an http.Server for h with presenced's bounds.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// ErrInUse is Listen's error when the address is in use.
var ErrInUse = errors.New("address in use")

// retryListen is how often Run tries again an address in use, and
// listenWait how long at most: a standby taking over waits for the
// instance it replaces to let go, which takes a moment; an address held
// for longer is held by something else, and the daemon stops.
const retryListen = 250 * time.Millisecond

var listenWait = 30 * time.Second // a variable for tests

// Run serves until ctx ends, then shuts down. It listens first, if Listen
// did not, trying again an address in use (see listenWait).
func (s *Server) Run(ctx context.Context) error {
	if s.ln == nil {
		if ok, err := listenWhenFree(ctx, s.Listen); !ok {
			return err
		}
	}
	return serveUntil(ctx, s.srv, s.ln)
}

// listenWhenFree calls listen until it takes its address (true), the
// address is refused for another reason than being in use or listenWait
// has passed (an error), or ctx ends (false, nil).
func listenWhenFree(ctx context.Context, listen func() error) (bool, error) {
	t := time.NewTicker(retryListen)
	defer t.Stop()
	end := time.Now().Add(listenWait)
	for {
		err := listen()
		switch {
		case err == nil:
			return true, nil
		case !errors.Is(err, ErrInUse):
			return false, err
		case time.Now().After(end):
			return false, fmt.Errorf("%w, still after %v", err, listenWait)
		}
		select {
		case <-ctx.Done():
			return false, nil
		case <-t.C:
		}
	}
}

// serveUntil serves srv on ln until ctx ends, then shuts it down.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener) error {
	var err error
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("web: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// Past the wait, what is left is closed: a connection that never sent
	// a request (a browser's preconnect) counts as busy for 5 s, which is
	// no reason to hold the daemon's exit up, or to fail it.
	if err = srv.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	if e := <-done; !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	return err
}

// Streams returns the number of live streams open, for metrics.
func (s *Server) Streams() int { return int(s.streams.Load()) }

// stopStreams ends every live stream, now and to come.
func (s *Server) stopStreams() { s.quitOnce.Do(func() { close(s.quit) }) }

// bounded answers 503 past maxConcurrent requests at once, or past a
// client's own bounds (an answer larger than the socket's buffers holds
// its slot while a client that does not read lets it wait).
func (s *Server) bounded(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys := s.clients.keys(r)
		if !s.clients.requests.take(keys, maxRequestsPerClient, maxRequestsPerSite) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		defer s.clients.requests.give(keys)
		select {
		case s.slots <- struct{}{}:
			defer func() { <-s.slots }()
			h.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	})
}

// status answers /status/NAME.svg and /status/NAME.json.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	var name, kind string
	switch {
	case strings.HasSuffix(file, ".svg"):
		name, kind = strings.TrimSuffix(file, ".svg"), "svg"
	case strings.HasSuffix(file, ".json"):
		name, kind = strings.TrimSuffix(file, ".json"), "json"
	default:
		http.NotFound(w, r)
		return
	}
	st := roster.WebOffline
	if h := s.prepare(name); h != "" {
		st = s.statuses.Get(h)
	}
	hd := w.Header()
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	if kind == "svg" {
		ic := s.icons[st]
		hd.Set("Content-Type", "image/svg+xml")
		// An icon opened as a page runs no script in this origin (an
		// operator's own SVG may hold some).
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		hd.Set("ETag", ic.etag)
		if noneMatch(r, ic.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = w.Write(ic.body)
		return
	}
	body := append(statusJSON(name, st), '\n')
	// By status alone, as the badge's: an ETag is per URL, and one made of
	// the body would differ for nothing but the name.
	etag := `"json-` + string(st) + `"`
	hd.Set("Content-Type", "application/json")
	hd.Set("ETag", etag)
	if noneMatch(r, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(body)
}

// noneMatch reports whether r's If-None-Match names etag, by the weak
// comparison RFC 9110 section 13.1.2 asks for (a proxy that compresses
// makes a strong tag weak), or is "*": then the answer is 304.
func noneMatch(r *http.Request, etag string) bool {
	for _, v := range r.Header.Values("If-None-Match") {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
			if t == etag || t == "*" {
				return true
			}
		}
	}
	return false
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ok, why := s.cfg.Ready()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(why + "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// statusJSON is the JSON of /status/NAME.json, and of each /events event,
// for name as asked: the one the page already knows.
func statusJSON(name string, st roster.WebStatus) []byte {
	b, _ := json.Marshal(struct {
		Handle string           `json:"handle"`
		Status roster.WebStatus `json:"status"`
	}{truncate(name, maxAsked), st})
	return b
}

// prepare returns the handle name asks for, or "" if none: such a name
// stays off-line.
func (s *Server) prepare(name string) string {
	if len(name) > maxAsked {
		return ""
	}
	h, ok := s.cfg.Prepare(name)
	if !ok {
		return ""
	}
	return h
}

// fnv32 is FNV-1a, for ETags.
func fnv32(b []byte) uint32 {
	h := fnv.New32a()
	_, _ = h.Write(b)
	return h.Sum32()
}

// truncate cuts s to at most n bytes, and a character cut in two with it.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// OpsServer serves what only operators may see (/metrics) on an address
// of its own: counters that move with every stanza would tell a stranger
// which handle names exist and when a hiding owner is active.
type OpsServer struct {
	addr string
	log  *slog.Logger
	srv  *http.Server
	ln   net.Listener // nil until listening
}

// NewOps listens on addr for h at GET /metrics: at once, or, if the
// address is in use, in Run once it is free (as Server.Listen).
func NewOps(addr string, h http.Handler, log *slog.Logger) (*OpsServer, error) {
	o := &OpsServer{addr: addr, log: log}
	if err := o.listen(); err != nil && !errors.Is(err, ErrInUse) {
		return nil, err
	} else if err != nil {
		log.Warn("metrics address in use; taking it once free, or stopping if it stays in use", "addr", addr)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	o.srv = newHTTPServer(mux, log)
	return o, nil
}

func (o *OpsServer) listen() error {
	ln, err := listenTCP("web: metrics", o.addr)
	if err != nil {
		return err
	}
	o.ln = limitedListener(ln, 64, nil)
	o.log.Info("metrics listening", "addr", ln.Addr().String())
	return nil
}

// Run serves until ctx ends, then shuts down.
func (o *OpsServer) Run(ctx context.Context) error {
	if o.ln == nil {
		if ok, err := listenWhenFree(ctx, o.listen); !ok {
			return err
		}
	}
	return serveUntil(ctx, o.srv, o.ln)
}
