package web

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestClientKey(t *testing.T) {
	c := clients{trusted: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("10.0.0.0/8"),
	}}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"direct IPv4", "192.0.2.7:4000", nil, "192.0.2.7/32"},
		{"a stranger's header is ignored", "192.0.2.7:4000", []string{"198.51.100.1"}, "192.0.2.7/32"},
		{"IPv6 counts by its /64", "[2001:db8:1:2:3:4:5:6]:4000", nil, "2001:db8:1:2::/64"},
		{"IPv4-mapped IPv6 is IPv4", "[::ffff:192.0.2.7]:4000", nil, "192.0.2.7/32"},
		{"through the proxy", "127.0.0.1:4000", []string{"198.51.100.1"}, "198.51.100.1/32"},
		{"what the client wrote is left of what the proxy saw", "127.0.0.1:4000", []string{"203.0.113.9, 198.51.100.1"}, "198.51.100.1/32"},
		{"past a chain of trusted proxies", "127.0.0.1:4000", []string{"198.51.100.1, 10.1.2.3", "10.0.0.1"}, "198.51.100.1/32"},
		{"through the proxy, IPv6", "127.0.0.1:4000", []string{"2001:db8::1"}, "2001:db8::/64"},
		{"the proxy with no header is the client", "127.0.0.1:4000", nil, "127.0.0.1/32"},
		{"garbage in the header stops the walk", "127.0.0.1:4000", []string{"198.51.100.1, junk"}, "127.0.0.1/32"},
		{"only trusted proxies: the last one", "127.0.0.1:4000", []string{"10.0.0.2"}, "10.0.0.2/32"},
		{"a hop with a port", "127.0.0.1:4000", []string{"198.51.100.1:51234"}, "198.51.100.1/32"},
		{"an IPv6 hop with a port", "127.0.0.1:4000", []string{"[2001:db8::1]:51234"}, "2001:db8::/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/events?h=a", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := c.keys(r)[0]; got != netip.MustParsePrefix(tc.want) {
				t.Fatalf("key = %v, want %s", got, tc.want)
			}
		})
	}
}

// TestOneIPv6NetworkIsOneClient: addresses of one /64 share the bound.
func TestOneIPv6NetworkIsOneClient(t *testing.T) {
	var c clients
	for i := 0; i < maxStreamsPerClient; i++ {
		r := httptest.NewRequest("GET", "/events?h=a", nil)
		r.RemoteAddr = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}), 4000).String()
		if _, ok := c.take(r); !ok {
			t.Fatalf("stream %d refused", i+1)
		}
	}
	r := httptest.NewRequest("GET", "/events?h=a", nil)
	r.RemoteAddr = "[2001:db8::ff]:4000"
	if _, ok := c.take(r); ok {
		t.Fatal("another address of the same /64 took a stream past the bound")
	}
	r.RemoteAddr = "[2001:db8:0:1::ff]:4000"
	if _, ok := c.take(r); !ok {
		t.Fatal("another /64 refused")
	}
}

// dialFrom connects to addr from the loopback address from.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// healthy sends GET /healthz on c and reports whether 200 came back.
func healthy(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200
}

// TestOneClientCannotHoldEveryConnection: past its own bound, a client's
// new connections are closed at once, and another client is served; a
// trusted proxy is not bounded so.
func TestOneClientCannotHoldEveryConnection(t *testing.T) {
	s, _, _ := newTestServer(t, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := limitedListener(ln, 8, []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")})
	l.perClient = 3
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = serveUntil(ctx, s.srv, l) }()
	addr := ln.Addr().String()
	for i := 0; i < l.perClient; i++ { // held open, idle, after one request
		if !healthy(dialFrom(t, "127.0.0.2", addr)) {
			t.Fatalf("connection %d of a client not served", i+1)
		}
	}
	if healthy(dialFrom(t, "127.0.0.2", addr)) {
		t.Fatalf("connection %d of one client served", l.perClient+1)
	}
	if !healthy(dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("another client not served while one holds its bound")
	}
	for i := 0; i < l.perClient+1; i++ {
		if !healthy(dialFrom(t, "127.0.0.3", addr)) {
			t.Fatalf("connection %d of a trusted proxy not served", i+1)
		}
	}
}

// TestOneIPv6SiteIsBounded: the /64s of one /48 together hold at most
// maxStreamsPerSite streams and maxConnsPerSite connections.
func TestOneIPv6SiteIsBounded(t *testing.T) {
	addr := func(sub, host int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, byte(sub >> 8), byte(sub), 15: byte(host)})
	}
	var c clients
	taken := 0
	for sub := 0; sub < 2*maxStreamsPerSite/maxStreamsPerClient; sub++ {
		for h := 1; h <= maxStreamsPerClient; h++ {
			r := httptest.NewRequest("GET", "/events?h=a", nil)
			r.RemoteAddr = netip.AddrPortFrom(addr(sub, h), 4000).String()
			if _, ok := c.take(r); ok {
				taken++
			}
		}
	}
	if taken != maxStreamsPerSite {
		t.Fatalf("one /48 took %d streams, want %d", taken, maxStreamsPerSite)
	}
	r := httptest.NewRequest("GET", "/events?h=a", nil)
	r.RemoteAddr = "[2001:db8:2::1]:4000"
	if _, ok := c.take(r); !ok {
		t.Fatal("another /48 refused")
	}

	l := limitedListener(nil, maxConns, nil)
	taken = 0
	for sub := 0; sub < 2*maxConnsPerSite/maxConnsPerClient; sub++ {
		for h := 1; h <= maxConnsPerClient; h++ {
			if _, ok := l.take(&net.TCPAddr{IP: addr(sub, h).AsSlice(), Port: 4000}); ok {
				taken++
			}
		}
	}
	if taken != maxConnsPerSite {
		t.Fatalf("one /48 holds %d connections, want %d", taken, maxConnsPerSite)
	}
}

// TestShutdownWithEverySlotTaken: with every connection slot held by idle
// keep-alives, Serve waits in Accept for a slot; closing the listener
// (Shutdown does) must end that wait, or Shutdown waits for Serve until a
// connection idles out.
func TestShutdownWithEverySlotTaken(t *testing.T) {
	s, _, _ := newTestServer(t, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	l := limitedListener(ln, n, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveUntil(ctx, s.srv, l) }()
	for i := 0; i < n; i++ {
		if !healthy(dialFrom(t, "127.0.0.1", ln.Addr().String())) {
			t.Fatalf("connection %d not served", i+1)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serveUntil: %v", err)
		}
	case <-time.After(shutdownTimeout + 2*time.Second):
		t.Fatal("the server did not shut down with every slot held")
	}
}

// TestIdleKeepAlivesShedNearTheBound: once the connections open reach 4/5
// of the bound, the server sheds its idle keep-alives (so that idle
// connections from many addresses cannot hold every slot) and keeps none,
// until they are back to half of it.
func TestIdleKeepAlivesShedNearTheBound(t *testing.T) {
	s, _, _ := newTestServer(t, "")
	s.cfg.Listen = "127.0.0.1:0"
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	l := s.ln.(*limitListener)
	ln := l.Listener
	// Five slots: the fourth connection is 4/5 of them.
	l.slots = make(chan struct{}, 5)
	told := make(chan bool, 10)
	inner := l.pressure
	l.pressure = func(high bool) { inner(high); told <- high }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = serveUntil(ctx, s.srv, l) }()
	addr := ln.Addr().String()
	var idle []net.Conn
	for i := 0; i < 3; i++ { // from three addresses: no client bound in play
		c := dialFrom(t, fmt.Sprintf("127.0.0.%d", i+2), addr)
		if !healthy(c) {
			t.Fatalf("connection %d not served", i+1)
		}
		idle = append(idle, c)
	}
	select {
	case h := <-told:
		t.Fatalf("pressure told %v with 3 of 5 open", h)
	case <-time.After(100 * time.Millisecond):
	}
	fourth := dialFrom(t, "127.0.0.9", addr)
	if !healthy(fourth) {
		t.Fatal("the fourth connection not served")
	}
	select {
	case h := <-told:
		if !h {
			t.Fatal("pressure told false at 4 of 5")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pressure not told at 4 of 5")
	}
	// The idle ones are closed by the server: a read sees the end.
	for i, c := range idle {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("idle connection %d still open", i+1)
		}
	}
	select {
	case h := <-told:
		if h {
			t.Fatal("pressure told true again")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pressure not told false once the idle connections were shed")
	}
}
