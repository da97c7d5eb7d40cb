package component

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"presenced/roster"
	"presenced/storage"
)

// fakeServer is a minimal XEP-0114 server side for unit tests: it accepts
// the component, checks the handshake, and lets the test write raw stanzas
// and read what the component sends. End-to-end tests use real Prosody and
// ejabberd instead.
type fakeServer struct {
	t  testing.TB
	ln net.Listener

	mu      sync.Mutex
	conn    net.Conn
	got     []*node
	changed chan struct{}
}

const testSecret = "unit-secret"

func newFakeServer(t testing.TB) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, changed: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go s.accept()
	return s
}

func (s *fakeServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.serve(c)
	}
}

func (s *fakeServer) serve(c net.Conn) {
	dec := xml.NewDecoder(c)
	// Stream header from the component.
	var to string
	for {
		tok, err := dec.Token()
		if err != nil {
			c.Close()
			return
		}
		if st, ok := tok.(xml.StartElement); ok && st.Name.Local == "stream" {
			for _, a := range st.Attr {
				if a.Name.Local == "to" {
					to = a.Value
				}
			}
			break
		}
	}
	const id = "fake-stream-id"
	fmt.Fprintf(c, `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='%s' id='%s'>`, to, id)
	var hs struct {
		XMLName xml.Name `xml:"handshake"`
		Value   string   `xml:",chardata"`
	}
	if err := dec.Decode(&hs); err != nil {
		c.Close()
		return
	}
	sum := sha1.Sum([]byte(id + testSecret))
	if hs.Value != hex.EncodeToString(sum[:]) {
		fmt.Fprint(c, `<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)
		c.Close()
		return
	}
	fmt.Fprint(c, `<handshake/>`)
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	for {
		tok, err := dec.Token()
		if err != nil {
			c.Close()
			return
		}
		if _, ok := tok.(xml.EndElement); ok {
			// </stream:stream>: answer in kind and hang up, as servers do.
			fmt.Fprint(c, `</stream:stream>`)
			c.Close()
			return
		}
		st, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		n, err := readNode(dec, st)
		if err != nil {
			c.Close()
			return
		}
		s.mu.Lock()
		s.got = append(s.got, n)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

// dropConnection closes the component's connection, as a server restart
// would.
func (s *fakeServer) dropConnection() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// send writes a raw stanza to the component.
func (s *fakeServer) send(format string, args ...any) {
	s.t.Helper()
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		s.t.Fatal("fake server: component not connected")
	}
	if _, err := fmt.Fprintf(c, format, args...); err != nil {
		s.t.Fatalf("fake server: write: %v", err)
	}
}

// expect waits for a stanza matching match, consuming it, and fails the
// test with everything received if none arrives within a few seconds.
func (s *fakeServer) expect(desc string, match func(*node) bool) *node {
	s.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s.mu.Lock()
		for i, n := range s.got {
			if match(n) {
				s.got = append(s.got[:i:i], s.got[i+1:]...)
				s.mu.Unlock()
				return n
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			s.t.Fatalf("fake server: no %s; received:\n%s", desc, s.dump())
			return nil
		}
	}
}

// expectNone fails if a matching stanza arrives within d.
func (s *fakeServer) expectNone(d time.Duration, desc string, match func(*node) bool) {
	s.t.Helper()
	deadline := time.After(d)
	for {
		s.mu.Lock()
		for _, n := range s.got {
			if match(n) {
				s.mu.Unlock()
				s.t.Fatalf("fake server: unexpected %s: %s", desc, n)
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return
		}
	}
}

func (s *fakeServer) dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, n := range s.got {
		b.WriteString(n.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// reset forgets everything received so far.
func (s *fakeServer) reset() {
	s.mu.Lock()
	s.got = nil
	s.mu.Unlock()
}

// testComponent runs a component with a SQLite store against a fake server.
type testComponent struct {
	*fakeServer
	c      *Component
	r      *roster.Service
	store  storage.Store
	cancel context.CancelFunc
	done   chan struct{}
}

const testDomain = "presence.test"

func startTestComponent(t testing.TB, dbPath string) *testComponent {
	t.Helper()
	srv := newFakeServer(t)
	return startComponentOn(t, srv, dbPath)
}

func startComponentOn(t testing.TB, srv *fakeServer, dbPath string) *testComponent {
	t.Helper()
	return startComponentWith(t, srv, dbPath, nil)
}

// startComponentWith starts a component whose roster options and config
// tune may change first (nil: the defaults of the tests).
func startComponentWith(t testing.TB, srv *fakeServer, dbPath string, tune func(*roster.Options, *Config)) *testComponent {
	t.Helper()
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "presence.db")
	}
	ctx, cancel := context.WithCancel(context.Background())
	store, err := storage.OpenSQLite(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	ropts := roster.Options{MaxHandles: 3, Policy: storage.PolicyOpen}
	cfg := Config{Domain: testDomain, Server: srv.ln.Addr().String(), Secret: testSecret, ResyncDelay: 10 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, OwnerDomains: []string{"example.org"}}
	if tune != nil {
		tune(&ropts, &cfg)
	}
	r, err := roster.New(ctx, store, ropts)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(cfg, r, log)
	if err != nil {
		t.Fatal(err)
	}
	connected, synced := c.Connected(), c.Synced()
	tc := &testComponent{fakeServer: srv, c: c, r: r, store: store, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tc.done)
		_ = c.Run(ctx)
	}()
	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		t.Fatal("component did not connect to the fake server")
	}
	// Wait until the server side registered the connection.
	for i := 0; i < 500; i++ {
		srv.mu.Lock()
		ok := srv.conn != nil
		srv.mu.Unlock()
		if ok {
			break
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-synced:
	case <-time.After(5 * time.Second):
		t.Fatal("component did not resync after connecting")
	}
	if err := waitEmpty(tc.r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.stop)
	return tc
}

// stop shuts the component down cleanly and closes its store.
func (tc *testComponent) stop() {
	tc.cancel()
	<-tc.done
	tc.store.Close()
}

// Matchers.

func isStanza(name, typ, from, to string) func(*node) bool {
	return func(n *node) bool {
		return n.name.Local == name && n.get("type") == typ &&
			(from == "" || n.get("from") == from) && (to == "" || n.get("to") == to)
	}
}

func isReplyTo(id string) func(*node) bool {
	return func(n *node) bool { return n.name.Local == "iq" && n.get("id") == id }
}

// errorCondition returns the defined condition of an error stanza.
func errorCondition(n *node) string {
	e := n.child("", "error")
	if e == nil {
		return ""
	}
	for _, c := range e.children {
		if c.ns() == nsStanzas && c.name.Local != "text" {
			return c.name.Local
		}
	}
	return ""
}

// waitEmpty waits until the engine has committed and sent what it had to.
func waitEmpty(r *roster.Service) error {
	for i := 0; i < 5000; i++ {
		idle := make(chan bool, 1)
		if !r.Do(func() { idle <- r.Idle() }) {
			return fmt.Errorf("the engine has stopped")
		}
		if <-idle {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("the engine is still busy")
}

// flagsOf asks the engine for owner's flags.
func flagsOf(r *roster.Service, owner string) (storage.Flags, bool) {
	type answer struct {
		f  storage.Flags
		ok bool
	}
	got := make(chan answer, 1)
	r.Do(func() {
		f, ok := r.Flags(owner)
		got <- answer{f, ok}
	})
	a := <-got
	return a.f, a.ok
}

// isOwner asks the engine whether jid is an account.
func isOwner(r *roster.Service, jid string) bool {
	got := make(chan bool, 1)
	r.Do(func() { got <- r.IsOwner(jid) })
	return <-got
}
