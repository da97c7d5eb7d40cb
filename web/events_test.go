package web

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"presenced/roster"
)

// serve runs s as a real HTTP server (its own http.Server, so its
// timeouts and shutdown hook apply).
func serve(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = s.srv
	ts.Start()
	t.Cleanup(ts.Close) // runs after the streams' own cleanups
	return ts
}

// client reads one stream: its status events' data, and counts its pings.
type client struct {
	resp     *http.Response
	cancel   context.CancelFunc
	lines    chan string
	comments atomic.Int32 // ping events
}

func open(t *testing.T, ts *httptest.Server, query string) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/events?"+query, nil)
	resp, err := ts.Client().Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &client{resp: resp, cancel: cancel, lines: make(chan string, 1000)}
	t.Cleanup(c.close)
	if resp.StatusCode != 200 {
		close(c.lines)
		return c
	}
	go func() {
		defer close(c.lines)
		r := bufio.NewReader(resp.Body)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			l = strings.TrimSuffix(l, "\n")
			switch {
			case strings.HasPrefix(l, "data: "):
				c.lines <- strings.TrimPrefix(l, "data: ")
			case l == "event: ping":
				// Its data line must follow, or the page never sees it.
				if d, err := r.ReadString('\n'); err != nil || d != "data: {}\n" {
					c.lines <- "ping without its data: " + d
					return
				}
				c.comments.Add(1)
			case l == "":
			default:
				c.lines <- "unexpected line " + l
			}
		}
	}()
	return c
}

func (c *client) close() {
	c.cancel()
	_ = c.resp.Body.Close()
}

// next returns the next event's data; "" once the stream ended.
func (c *client) next(t *testing.T) string {
	t.Helper()
	select {
	case l := <-c.lines:
		return l
	case <-time.After(5 * time.Second):
		t.Fatal("no event in 5 s")
	}
	return ""
}

// subscribed returns the number of handles streams are subscribed to.
func subscribed(st *Statuses) int {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return len(st.subs)
}

func ev(name, st string) string { return fmt.Sprintf(`{"handle":%q,"status":%q}`, name, st) }

// eventually waits for cond, for at most 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal(what)
		}
	}
}

func TestEventsFirstNowThenChanges(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	ts := serve(t, s)
	st.WebChanged("alice", roster.WebAway)
	st.WebChanged("hidden", roster.WebAway)
	st.WebChanged("hidden", roster.WebOffline)
	c := open(t, ts, "h="+url.QueryEscape("Alice,hidden,nobody,bad@x,alice,Alice,"))
	h := c.resp.Header
	if c.resp.StatusCode != 200 || h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" || h.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("%d %v", c.resp.StatusCode, h)
	}
	// One event per name, as asked and in that order, repeats dropped.
	for _, want := range []string{ev("Alice", "away"), ev("hidden", "offline"), ev("nobody", "offline"), ev("bad@x", "offline"), ev("alice", "away")} {
		if got := c.next(t); got != want {
			t.Fatalf("first events: %s, want %s", got, want)
		}
	}
	if s.Streams() != 1 {
		t.Fatalf("Streams() = %d", s.Streams())
	}
	// Each change, once per name asking for that handle; a handle not
	// asked for, and a status told again unchanged, send nothing.
	st.WebChanged("bob", roster.WebBusy)
	st.WebChanged("alice", roster.WebAway)
	st.WebChanged("alice", roster.WebBusy)
	if a, b := c.next(t), c.next(t); a != ev("Alice", "busy") || b != ev("alice", "busy") {
		t.Fatalf("after a change: %s %s", a, b)
	}
	st.WebChanged("hidden", roster.WebAvailable) // made public again, say
	if got := c.next(t); got != ev("hidden", "available") {
		t.Fatalf("after a change: %s", got)
	}
	st.WebChanged("alice", roster.WebOffline)
	if a, b := c.next(t), c.next(t); a != ev("Alice", "offline") || b != ev("alice", "offline") {
		t.Fatalf("going off-line: %s %s", a, b)
	}
	// The event is the JSON of /status/NAME.json.
	if _, _, body := get(t, s, "/status/hidden.json"); body != ev("hidden", "available")+"\n" {
		t.Fatalf("hidden.json: %q", body)
	}
}

// stalled is a ResponseWriter whose first Write waits for release: a
// client that does not read.
type stalled struct {
	hdr     http.Header
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	out     strings.Builder
}

func (w *stalled) Header() http.Header { return w.hdr }
func (w *stalled) WriteHeader(int)     {}
func (w *stalled) Flush()              {}
func (w *stalled) Write(b []byte) (int, error) {
	w.once.Do(func() { <-w.release })
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(b)
}

func TestEventsCoalesceAndNeverBlockTheEngine(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	w := &stalled{hdr: make(http.Header), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.events(w, httptest.NewRequest("GET", "/events?h=alice,bob", nil).WithContext(ctx))
	}()
	eventually(t, "no stream", func() bool { return subscribed(st) == 2 })
	// The stream is stuck writing its first events: the engine goes on.
	changed := make(chan struct{})
	go func() {
		defer close(changed)
		for i := range 10000 {
			st.WebChanged("alice", statuses[i%4])
			st.WebChanged("bob", statuses[(i+1)%4])
		}
		st.WebChanged("alice", roster.WebBusy)
	}()
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("WebChanged blocked behind a stalled stream")
	}
	close(w.release)
	// Then only the latest status of each handle is sent.
	want := "data: " + ev("alice", "offline") + "\n\n" + "data: " + ev("bob", "offline") + "\n\n" +
		"data: " + ev("alice", "busy") + "\n\n" + "data: " + ev("bob", "available") + "\n\n"
	got := func() string { w.mu.Lock(); defer w.mu.Unlock(); return w.out.String() }
	eventually(t, "the latest statuses did not come", func() bool { return len(got()) >= len(want) })
	time.Sleep(20 * time.Millisecond)
	if got() != want {
		t.Fatalf("stream:\n%s\nwant:\n%s", got(), want)
	}
	cancel()
	<-done
	if s.Streams() != 0 || subscribed(st) != 0 {
		t.Fatalf("after the stream: %d streams, %d handles subscribed", s.Streams(), len(st.subs))
	}
}

func TestSubscriberHoldsOneStatusPerHandle(t *testing.T) {
	st := NewStatuses()
	b, now := st.subscribe([]string{"alice"})
	if now[0] != roster.WebOffline {
		t.Fatal(now)
	}
	for i := range 1000 {
		st.WebChanged("alice", statuses[i%4])
	}
	st.WebChanged("alice", roster.WebAway)
	if len(b.notify) != 1 || len(b.pending) != 1 {
		t.Fatalf("notify %d, pending %v", len(b.notify), b.pending)
	}
	if p := b.take(); p["alice"] != roster.WebAway {
		t.Fatalf("take: %v", p)
	}
	st.unsubscribe(b)
	st.WebChanged("alice", roster.WebBusy)
	if len(b.pending) != 0 || len(st.subs) != 0 {
		t.Fatal("told after unsubscribe")
	}
}

func TestNamesBound(t *testing.T) {
	s, _, _ := newTestServer(t, "")
	ts := serve(t, s)
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf("n%d", i)
	}
	for _, path := range []string{"/events", "/list"} {
		for _, q := range []string{"", "h=", "h=,,", "h=" + strings.Join(many, ","), "h=" + strings.Join(many[:60], ",") + "&h=" + strings.Join(many[60:], ",")} {
			code, h, body := get(t, s, path+"?"+q)
			if code != 400 || strings.Count(body, "\n") != 1 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
				t.Fatalf("%s?%.20s: %d %q", path, q, code, body)
			}
		}
	}
	c := open(t, ts, "h="+strings.Join(many[:100], ","))
	if c.resp.StatusCode != 200 {
		t.Fatalf("100 names: %d", c.resp.StatusCode)
	}
	for i := range 100 {
		if got := c.next(t); got != ev(many[i], "offline") {
			t.Fatalf("event %d: %s", i, got)
		}
	}
	if code, _, _ := get(t, s, "/list?h="+strings.Join(many[:100], ",")); code != 200 {
		t.Fatalf("/list with 100 names: %d", code)
	}
}

func TestStreamLimit(t *testing.T) {
	s, _, _ := newTestServer(t, "")
	s.maxStreams = 2
	ts := serve(t, s)
	a, _ := open(t, ts, "h=a"), open(t, ts, "h=b")
	a.next(t)
	c := open(t, ts, "h=c")
	if c.resp.StatusCode != 503 || c.resp.Header.Get("Retry-After") == "" {
		t.Fatalf("past the limit: %d", c.resp.StatusCode)
	}
	if s.Streams() != 2 {
		t.Fatalf("Streams() = %d", s.Streams())
	}
	// Streams take no request slot: the rest still answers.
	if code, _, _ := get(t, s, "/healthz"); code != 200 {
		t.Fatalf("healthz with streams open: %d", code)
	}
	a.close()
	eventually(t, "a stream closed still counts", func() bool { return s.Streams() == 1 })
	if d := open(t, ts, "h=d"); d.resp.StatusCode != 200 || d.next(t) != ev("d", "offline") {
		t.Fatalf("after one closed: %d", d.resp.StatusCode)
	}
}

func TestStreamEndsWithTheClientAndTheServer(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	ts := serve(t, s)
	a := open(t, ts, "h=alice")
	a.next(t)
	a.cancel()
	eventually(t, "the stream outlived its client", func() bool { return s.Streams() == 0 && subscribed(st) == 0 })
	// At shutdown, every stream ends, and Shutdown does not wait for them.
	b := open(t, ts, "h=alice")
	b.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := ts.Config.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := b.next(t); got != "" {
		t.Fatalf("after shutdown: %s", got)
	}
	if s.Streams() != 0 {
		t.Fatalf("Streams() = %d after shutdown", s.Streams())
	}
}

func TestStreamOutlivesServerTimeouts(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	s.keepAlive = 50 * time.Millisecond
	s.srv.ReadTimeout, s.srv.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	ts := serve(t, s)
	c := open(t, ts, "h=alice")
	c.next(t)
	time.Sleep(700 * time.Millisecond)
	st.WebChanged("alice", roster.WebAvailable)
	if got := c.next(t); got != ev("alice", "available") {
		t.Fatalf("after the server's timeouts: %q", got)
	}
	if n := c.comments.Load(); n < 5 {
		t.Fatalf("%d keep-alives in 700 ms, one each 50 ms", n)
	}
}

// TestShutdownSaysOffline: a stream that ends with the server says first
// that every handle it showed on-line is off-line, once, under each name
// asked for it; the page would otherwise keep the last status.
func TestShutdownSaysOffline(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	ts := serve(t, s)
	st.WebChanged("alice", roster.WebAvailable)
	st.WebChanged("bob", roster.WebBusy)
	c := open(t, ts, "h=alice,bob,carol")
	for _, want := range []string{ev("alice", "available"), ev("bob", "busy"), ev("carol", "offline")} {
		if got := c.next(t); got != want {
			t.Fatalf("first events: %s, want %s", got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := ts.Config.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	var rest []string
	for l := range c.lines {
		rest = append(rest, l)
	}
	if want := []string{ev("alice", "offline"), ev("bob", "offline")}; strings.Join(rest, " ") != strings.Join(want, " ") {
		t.Fatalf("at shutdown: %v, want %v", rest, want)
	}
}

// TestHeadEventsHoldsNothing: HEAD /events answers the headers of a stream
// and ends, holding no stream slot and no subscription.
func TestHeadEventsHoldsNothing(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	ts := serve(t, s)
	st.WebChanged("alice", roster.WebAvailable)
	req, _ := http.NewRequest("HEAD", ts.URL+"/events?h=alice", nil)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("HEAD /events: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if s.Streams() != 0 || subscribed(st) != 0 {
		t.Fatalf("after HEAD /events: %d streams, %d handles subscribed", s.Streams(), subscribed(st))
	}
	// A HEAD asking too much is refused like a GET.
	req, _ = http.NewRequest("HEAD", ts.URL+"/events?h="+strings.Repeat("a,", maxNames+1), nil)
	if resp, err = ts.Client().Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("HEAD /events with too many names: %d", resp.StatusCode)
	}
}

// BenchmarkWebChanged measures what the engine pays to tell the web of one
// change of a handle that 1,000 live streams show (ns/op), and per stream
// (ns/stream): it never waits on them, but wakes each.
func BenchmarkWebChanged(b *testing.B) {
	st := NewStatuses()
	const streams = 1000
	subs := make([]*sub, streams)
	for i := range subs {
		subs[i], _ = st.subscribe([]string{"alice"})
	}
	sts := []roster.WebStatus{roster.WebAvailable, roster.WebAway}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.WebChanged("alice", sts[i%2])
		if i%64 == 63 { // the streams read now and then, as they would
			for _, s := range subs {
				<-s.notify
				s.take()
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*streams), "ns/stream")
}
