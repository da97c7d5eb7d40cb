package web

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
)

// maxConns bounds the connections open at once, idle keep-alives and
// slow headers included, so that no client can use up the process's file
// descriptors (which the XMPP connection and the database share): room
// for every request and stream the server serves at once, twice over.
const maxConns = 2 * (maxConcurrent + maxStreams)

// maxStreamsPerClient bounds the live streams one client (IP address)
// may hold, so that one cannot take them all from everyone else.
const maxStreamsPerClient = 20

// limitListener accepts at most n connections open at once; past it,
// Accept waits for one to close.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func limitedListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// clients counts the live streams of each client.
type clients struct {
	// trusted are the reverse proxies whose X-Forwarded-For is believed
	// (Config.TrustedProxies); read-only once the server starts.
	trusted []netip.Prefix

	mu sync.Mutex
	n  map[netip.Prefix]int // guarded by mu
}

// take counts one more stream of r's client and reports whether it may
// have it; a stream taken is given back with give.
func (c *clients) take(r *http.Request) (netip.Prefix, bool) {
	k := c.key(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[netip.Prefix]int)
	}
	if c.n[k] >= maxStreamsPerClient {
		return k, false
	}
	c.n[k]++
	return k, true
}

func (c *clients) give(k netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[k]--; c.n[k] <= 0 {
		delete(c.n, k)
	}
}

// key returns the client r counts against: its address, or, when it comes
// through a trusted proxy, the address that proxy saw, which is the
// rightmost one in X-Forwarded-For that is not itself a trusted proxy
// (anything left of it the client may have written). An IPv6 client counts
// by its /64, the least a site is given (RFC 6177), so that one cannot
// take every stream with the addresses of its own network.
func (c *clients) key(r *http.Request) netip.Prefix {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Prefix{} // not TCP (a test's fake): one client
	}
	addr := peer.Addr().Unmap()
	if c.isTrusted(addr) {
		addr = c.forwardedFor(r, addr)
	}
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// forwardedFor walks r's X-Forwarded-For from the right, past the trusted
// proxies, and returns the first address that is not one; peer if there
// is none, or a value is not an address.
func (c *clients) forwardedFor(r *http.Request, peer netip.Addr) netip.Addr {
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return peer
		}
		if a = a.Unmap(); !c.isTrusted(a) {
			return a
		}
		peer = a
	}
	return peer
}

func (c *clients) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
