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
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	// maxName bounds a handle name in a URL (a localpart is at most 1023
	// bytes).
	maxName = 1023
	// shutdownTimeout bounds the wait for requests at shutdown.
	shutdownTimeout = 3 * time.Second
)

//go:embed icons/*.svg
var defaultIcons embed.FS

// statuses are the four web statuses, in the order of the icon files.
var statuses = []roster.WebStatus{roster.WebAvailable, roster.WebAway, roster.WebBusy, roster.WebOffline}

// Statuses holds the web status of the public handles not off-line. It is
// a roster.WebSink: the engine writes it, requests read it.
type Statuses struct {
	mu sync.RWMutex
	m  map[string]roster.WebStatus // guarded by mu; off-line handles are absent
}

// NewStatuses returns an empty Statuses: every name off-line.
func NewStatuses() *Statuses { return &Statuses{m: make(map[string]roster.WebStatus)} }

// WebChanged implements roster.WebSink.
func (s *Statuses) WebChanged(handle string, st roster.WebStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == roster.WebOffline {
		delete(s.m, handle)
		return
	}
	s.m[handle] = st
}

// Get returns the web status of handle: off-line unless it is public and
// shown.
func (s *Statuses) Get(handle string) roster.WebStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if st, ok := s.m[handle]; ok {
		return st
	}
	return roster.WebOffline
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
}

// Server is the HTTP side.
type Server struct {
	cfg      Config
	statuses *Statuses
	icons    map[roster.WebStatus]icon
	log      *slog.Logger
	slots    chan struct{}
	srv      *http.Server
}

type icon struct {
	body []byte
	etag string
}

// New returns a Server reading st.
func New(cfg Config, st *Statuses, log *slog.Logger) (*Server, error) {
	s := &Server{cfg: cfg, statuses: st, log: log, slots: make(chan struct{}, maxConcurrent)}
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
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status/{file}", s.status)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	s.srv = &http.Server{
		Handler:           s.bounded(mux),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Handler returns the server's handler, for tests.
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// Run listens and serves until ctx ends, then shuts down.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("web: %w", err)
	}
	s.log.Info("HTTP side listening", "addr", ln.Addr().String())
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("web: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err = s.srv.Shutdown(sctx)
	if e := <-done; !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	return err
}

// bounded answers 503 past maxConcurrent requests at once.
func (s *Server) bounded(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	if len(name) <= maxName {
		if h, ok := s.cfg.Prepare(name); ok {
			st = s.statuses.Get(h)
		}
	}
	hd := w.Header()
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	if kind == "svg" {
		ic := s.icons[st]
		hd.Set("Content-Type", "image/svg+xml")
		hd.Set("ETag", ic.etag)
		if r.Header.Get("If-None-Match") == ic.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = w.Write(ic.body)
		return
	}
	// The name as asked: the one the page already knows.
	body, _ := json.Marshal(struct {
		Handle string           `json:"handle"`
		Status roster.WebStatus `json:"status"`
	}{truncate(name, maxName), st})
	body = append(body, '\n')
	etag := fmt.Sprintf(`"%08x"`, fnv32(body))
	hd.Set("Content-Type", "application/json")
	hd.Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(body)
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

// fnv32 is FNV-1a, for ETags.
func fnv32(b []byte) uint32 {
	h := fnv.New32a()
	_, _ = h.Write(b)
	return h.Sum32()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
