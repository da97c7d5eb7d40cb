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

// maxConnsPerClient bounds the connections one client address may hold
// open, idle keep-alives included, so that one cannot hold every
// connection (and with them /healthz) from everyone else: room for its
// streams and a browser's few connections for the rest, many times over.
// A trusted proxy, which carries everyone's, is not bounded by it.
const maxConnsPerClient = 64

// limitListener accepts at most n connections open at once, and at most
// perClient from one client address (by clientKey); past n, Accept waits
// for one to close; past perClient, the new connection is closed at once.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	perClient int
	trusted   []netip.Prefix // read-only

	mu   sync.Mutex
	open map[netip.Prefix]int // guarded by mu
}

func limitedListener(ln net.Listener, n int, trusted []netip.Prefix) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), perClient: maxConnsPerClient,
		trusted: trusted, open: make(map[netip.Prefix]int)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		l.slots <- struct{}{}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			return nil, err
		}
		k, ok := l.take(c.RemoteAddr())
		if !ok {
			c.Close()
			<-l.slots
			continue
		}
		return &limitConn{Conn: c, release: func() { l.give(k); <-l.slots }}, nil
	}
}

// take counts a connection from addr, unless its client has perClient
// open already. A trusted proxy's are not counted.
func (l *limitListener) take(addr net.Addr) (netip.Prefix, bool) {
	a, ok := addrOf(addr)
	if !ok || inPrefixes(l.trusted, a) {
		return netip.Prefix{}, true
	}
	k := clientKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[k] >= l.perClient {
		return k, false
	}
	l.open[k]++
	return k, true
}

func (l *limitListener) give(k netip.Prefix) {
	if !k.IsValid() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[k]--; l.open[k] <= 0 {
		delete(l.open, k)
	}
}

// addrOf returns the IP address of a TCP peer, IPv4-mapped ones as IPv4.
func addrOf(addr net.Addr) (netip.Addr, bool) {
	if t, ok := addr.(*net.TCPAddr); ok {
		a, ok := netip.AddrFromSlice(t.IP)
		return a.Unmap(), ok
	}
	ap, err := netip.ParseAddrPort(addr.String())
	return ap.Addr().Unmap(), err == nil
}

// clientKey is what one client counts as: its IPv4 address, or its IPv6
// /64, the least a site is given (RFC 6177), so that one cannot pass a
// bound with the addresses of its own network.
func clientKey(a netip.Addr) netip.Prefix {
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
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
// (anything left of it the client may have written); by clientKey.
func (c *clients) key(r *http.Request) netip.Prefix {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Prefix{} // not TCP (a test's fake): one client
	}
	addr := peer.Addr().Unmap()
	if inPrefixes(c.trusted, addr) {
		addr = c.forwardedFor(r, addr)
	}
	return clientKey(addr)
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
		if a = a.Unmap(); !inPrefixes(c.trusted, a) {
			return a
		}
		peer = a
	}
	return peer
}
