package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"presenced/roster"
)

func newTestServer(t *testing.T, icons string) (*Server, *Statuses, *bool) {
	t.Helper()
	st := NewStatuses()
	ready := new(bool)
	s, err := New(Config{
		Icons: icons,
		Ready: func() (bool, string) {
			if *ready {
				return true, ""
			}
			return false, "not connected to the XMPP server"
		},
		Prepare: func(n string) (string, bool) { return strings.ToLower(n), n != "" && !strings.ContainsAny(n, "@/ ") },
	}, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s, st, ready
}

// get returns the status, the headers but Date, and the body.
func get(t *testing.T, s *Server, path string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	h := w.Result().Header.Clone()
	h.Del("Date")
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, h, string(b)
}

func TestOfflineAnswersAreOneAndTheSame(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	st.WebChanged("alice", roster.WebAway)
	st.WebChanged("hidden", roster.WebAway)
	st.WebChanged("hidden", roster.WebOffline) // hidden, or hiding, or taken off the web
	_, _, awayBody := get(t, s, "/status/alice.svg")
	var ref string
	for _, name := range []string{"hidden", "nobody", "not@valid", strings.Repeat("x", 2000)} {
		code, h, body := get(t, s, "/status/"+name+".svg")
		got := h.Get("Content-Type") + "|" + h.Get("ETag") + "|" + h.Get("Cache-Control") + "|" + h.Get("Content-Security-Policy") + "|" + body
		if code != 200 || len(h) != 5 {
			t.Fatalf("%s.svg: %d, headers %v", name, code, h)
		}
		if ref == "" {
			ref = got
		} else if got != ref {
			t.Fatalf("%s.svg differs from another off-line answer:\n%s\n%s", name, got, ref)
		}
		if strings.Contains(body, name) || body == awayBody {
			t.Fatalf("%s.svg: %q", name, body)
		}
	}
	// The JSON names the handle asked for, and nothing else changes.
	code, h, body := get(t, s, "/status/nobody.json")
	if code != 200 || body != `{"handle":"nobody","status":"offline"}`+"\n" || h.Get("Cache-Control") != "no-cache" || h.Get("ETag") == "" {
		t.Fatalf("nobody.json: %d %v %q", code, h, body)
	}
	_, h2, body2 := get(t, s, "/status/hidden.json")
	if body2 != `{"handle":"hidden","status":"offline"}`+"\n" || h2.Get("Content-Type") != h.Get("Content-Type") {
		t.Fatalf("hidden.json: %v %q", h2, body2)
	}
	if _, _, b := get(t, s, "/status/alice.json"); b != `{"handle":"alice","status":"away"}`+"\n" {
		t.Fatalf("alice.json: %q", b)
	}
}

func TestETagAndNotModified(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	st.WebChanged("alice", roster.WebBusy)
	_, h, _ := get(t, s, "/status/alice.svg")
	etag := h.Get("ETag")
	if code, _, body := get(t, s, "/status/alice.svg", "If-None-Match", etag); code != http.StatusNotModified || body != "" {
		t.Fatalf("If-None-Match: %d %q", code, body)
	}
	// Weak comparison, lists and "*" (RFC 9110 section 13.1.2), on both
	// kinds of answer.
	_, hj, _ := get(t, s, "/status/alice.json")
	for _, inm := range []string{"W/" + etag, `"x", ` + etag, "*", `"x",W/` + etag} {
		for path, tag := range map[string]string{"/status/alice.svg": etag, "/status/alice.json": hj.Get("ETag")} {
			v := strings.ReplaceAll(inm, etag, tag)
			if code, _, _ := get(t, s, path, "If-None-Match", v); code != http.StatusNotModified {
				t.Fatalf("%s If-None-Match %s: %d", path, v, code)
			}
		}
	}
	if code, _, _ := get(t, s, "/status/alice.svg", "If-None-Match", `"x", W/"y"`); code != 200 {
		t.Fatalf("If-None-Match of other tags: %d", code)
	}
	st.WebChanged("alice", roster.WebAvailable)
	if code, h, _ := get(t, s, "/status/alice.svg", "If-None-Match", etag); code != 200 || h.Get("ETag") == etag {
		t.Fatalf("after a change: %d, ETag %s (was %s)", code, h.Get("ETag"), etag)
	}
	// Every status has its own icon.
	seen := map[string]string{}
	for _, w := range []roster.WebStatus{roster.WebAvailable, roster.WebAway, roster.WebBusy, roster.WebOffline} {
		st.WebChanged("alice", w)
		_, _, body := get(t, s, "/status/alice.svg")
		if other, dup := seen[body]; dup {
			t.Fatalf("%s and %s share an icon", w, other)
		}
		seen[body] = string(w)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	s, _, ready := newTestServer(t, "")
	if code, _, body := get(t, s, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, _, body := get(t, s, "/readyz"); code != 503 || body != "not connected to the XMPP server\n" {
		t.Fatalf("readyz while not ready: %d %q", code, body)
	}
	*ready = true
	if code, _, _ := get(t, s, "/readyz"); code != 200 {
		t.Fatalf("readyz when ready: %d", code)
	}
	if code, _, _ := get(t, s, "/status/alice.png"); code != 404 {
		t.Fatalf("alice.png: %d, want 404", code)
	}
}

func TestIconsReplaced(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"available", "away", "busy", "offline"} {
		if err := os.WriteFile(filepath.Join(dir, n+".svg"), []byte("<svg>"+n+"</svg>"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, _, _ := newTestServer(t, dir)
	if _, _, body := get(t, s, "/status/x.svg"); body != "<svg>offline</svg>" {
		t.Fatalf("replaced icon: %q", body)
	}
	if err := os.Remove(filepath.Join(dir, "busy.svg")); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Icons: dir}, NewStatuses(), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a folder without busy.svg was taken")
	}
}

func TestStreamsPerClientBounded(t *testing.T) {
	var c clients
	r := httptest.NewRequest("GET", "/events?h=a", nil)
	r.RemoteAddr = "192.0.2.7:4000"
	var ips [][]netip.Prefix
	for i := 0; i < maxStreamsPerClient; i++ {
		ip, ok := c.take(r)
		if !ok {
			t.Fatalf("stream %d of one client refused", i+1)
		}
		ips = append(ips, ip)
	}
	if _, ok := c.take(r); ok {
		t.Fatalf("stream %d of one client taken", maxStreamsPerClient+1)
	}
	other := httptest.NewRequest("GET", "/events?h=a", nil)
	other.RemoteAddr = "192.0.2.8:4000"
	if _, ok := c.take(other); !ok {
		t.Fatal("another client refused")
	}
	c.give(ips[0])
	if _, ok := c.take(r); !ok {
		t.Fatal("a stream given back is not taken again")
	}
}

func TestAddressInUseTakenOnceFree(t *testing.T) {
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := hold.Addr().String()
	s, err := New(Config{Listen: addr, Ready: func() (bool, string) { return true, "" }, Prepare: func(n string) (string, bool) { return n, true }},
		NewStatuses(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); !errors.Is(err, ErrInUse) {
		t.Fatalf("Listen on an address in use = %v, want ErrInUse", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	hold.Close() // the instance it replaces goes
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the address, free again, was not taken")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestAddressHeldTooLongFails: an address still in use after listenWait is
// an error, which stops the daemon (cmd/presenced), not a wait forever.
func TestAddressHeldTooLongFails(t *testing.T) {
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	defer func(w time.Duration) { listenWait = w }(listenWait)
	listenWait = 300 * time.Millisecond
	s, err := New(Config{Listen: hold.Addr().String()}, NewStatuses(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrInUse) {
		t.Fatalf("Run on an address held = %v, want ErrInUse", err)
	}
	o, err := NewOps(hold.Addr().String(), http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Run(context.Background()); !errors.Is(err, ErrInUse) {
		t.Fatalf("metrics Run on an address held = %v, want ErrInUse", err)
	}
}

// TestHealthOutsideTheRequestBounds: with every request slot held, and a
// client past its own bound, the health checks still answer; badges are
// refused.
func TestHealthOutsideTheRequestBounds(t *testing.T) {
	s, _, ready := newTestServer(t, "")
	*ready = true
	for i := 0; i < cap(s.slots); i++ {
		s.slots <- struct{}{}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _, _ := get(t, s, path); code != 200 {
			t.Fatalf("%s with every slot held: %d", path, code)
		}
	}
	if code, _, _ := get(t, s, "/status/alice.svg"); code != http.StatusServiceUnavailable {
		t.Fatalf("a badge with every slot held: %d", code)
	}
}

// TestRequestsPerClientBounded: one client has at most
// maxRequestsPerClient requests served at once; another is served.
func TestRequestsPerClientBounded(t *testing.T) {
	s, _, _ := newTestServer(t, "")
	r := httptest.NewRequest("GET", "/status/alice.svg", nil)
	r.RemoteAddr = "192.0.2.7:4000"
	keys := s.clients.keys(r)
	for i := 0; i < maxRequestsPerClient; i++ {
		if !s.clients.requests.take(keys, maxRequestsPerClient, maxRequestsPerSite) {
			t.Fatalf("request %d refused", i+1)
		}
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("request %d of one client: %d", maxRequestsPerClient+1, w.Code)
	}
	other := httptest.NewRequest("GET", "/status/alice.svg", nil)
	other.RemoteAddr = "192.0.2.8:4000"
	w = httptest.NewRecorder()
	s.Handler().ServeHTTP(w, other)
	if w.Code != 200 {
		t.Fatalf("another client: %d", w.Code)
	}
	if s.clients.requests.n[keys[0]] != maxRequestsPerClient {
		t.Fatalf("a refused request was counted, or a served one not given back: %d", s.clients.requests.n[keys[0]])
	}
}

// TestLongSpellingPrepared: a name asked in a spelling longer than a
// handle name, which prepares to one (a fullwidth form), is prepared, as
// the component would; its echo is cut at a character, never inside one.
func TestLongSpellingPrepared(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	s.cfg.Prepare = func(n string) (string, bool) {
		if strings.HasPrefix(n, "ａ") { // fullwidth a: three bytes for one
			return "alice", true
		}
		return n, true
	}
	st.WebChanged("alice", roster.WebAway)
	long := strings.Repeat("ａ", 600) // 1,800 bytes
	if _, _, body := get(t, s, "/status/"+long+".json"); !strings.Contains(body, `"status":"away"`) {
		t.Fatalf("a long spelling of alice: %s", body)
	}
	huge := strings.Repeat("é", maxAsked) // past maxAsked, with a character cut at the bound
	if _, _, body := get(t, s, "/status/"+huge+".json"); !utf8.ValidString(body) || strings.Contains(body, `\ufffd`) || !strings.Contains(body, `"status":"offline"`) {
		t.Fatalf("a name past the bound: %.80s", body)
	}
}
