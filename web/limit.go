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

// The bounds per client, so that one cannot take from everyone else all
// the streams or all the connections. A client is an IPv4 address or an
// IPv6 /64, the least a site is given (RFC 6177); as a site may be given
// a /48 (and a tunnel broker gives one for free), an IPv6 /48 is bounded
// too, to a few clients' worth.
const (
	// maxStreamsPerClient bounds the live streams of one client.
	maxStreamsPerClient = 20
	// maxStreamsPerSite bounds the live streams of one IPv6 /48.
	maxStreamsPerSite = 100
	// maxConnsPerClient bounds the connections one client holds open,
	// idle keep-alives included: room for its streams and a browser's
	// few connections for the rest, many times over. A trusted proxy,
	// which carries everyone's, is not bounded by it.
	maxConnsPerClient = 64
	// maxConnsPerSite bounds the connections of one IPv6 /48.
	maxConnsPerSite = 256
	// maxRequestsPerClient and maxRequestsPerSite bound the requests one
	// client, and one /48, has served at once, of the maxConcurrent.
	maxRequestsPerClient = 32
	maxRequestsPerSite   = 128
)

// keysOf returns what a's connections and streams count against: its
// client, and for IPv6 its /48 too.
func keysOf(a netip.Addr) []netip.Prefix {
	if !a.Is6() {
		p, _ := a.Prefix(32)
		return []netip.Prefix{p}
	}
	client, _ := a.Prefix(64)
	site, _ := a.Prefix(48)
	return []netip.Prefix{client, site}
}

// counts counts what each client and site holds.
type counts struct {
	mu sync.Mutex
	n  map[netip.Prefix]int // guarded by mu
}

// take counts one more for each of keys (keysOf), unless one of them
// holds its bound already: perClient for the first, perSite for a second.
func (c *counts) take(keys []netip.Prefix, perClient, perSite int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[netip.Prefix]int)
	}
	for i, k := range keys {
		bound := perClient
		if i > 0 {
			bound = perSite
		}
		if c.n[k] >= bound {
			return false
		}
	}
	for _, k := range keys {
		c.n[k]++
	}
	return true
}

// give gives back what take counted for keys.
func (c *counts) give(keys []netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if c.n[k]--; c.n[k] <= 0 {
			delete(c.n, k)
		}
	}
}

// limitListener accepts at most n connections open at once, and from one
// client or site at most their bounds (keysOf); past n, Accept waits for
// one to close (or the listener to be closed); past a client's bound, the
// new connection is closed at once.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	perClient int
	perSite   int
	trusted   []netip.Prefix // read-only
	open      counts

	closeOnce sync.Once
	closed    chan struct{} // closed by Close, so that Accept waits no more

	// pressure, if set, is told when the connections open reach 4/5 of
	// the bound (true) and when they are back to half of it (false); the
	// server then sheds its idle keep-alives and keeps none, so that
	// connections held idle from many addresses cannot take every slot.
	pressure func(high bool)
	pmu      sync.Mutex // guards high
	high     bool
	// amu is held while pressure is told. Telling it runs on a goroutine
	// of its own: shedding idle connections closes them, and their Close
	// comes back here.
	amu  sync.Mutex
	told bool // guarded by amu: what pressure was told last
}

func limitedListener(ln net.Listener, n int, trusted []netip.Prefix) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), perClient: maxConnsPerClient,
		perSite: maxConnsPerSite, trusted: trusted, closed: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		// http.Server's Shutdown waits for Serve, which waits here while
		// every slot is taken: Close must end the wait.
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			return nil, err
		}
		keys, ok := l.take(c.RemoteAddr())
		if !ok {
			c.Close()
			l.release()
			continue
		}
		l.feel()
		return &limitConn{Conn: c, release: func() { l.open.give(keys); l.release() }}, nil
	}
}

// release gives a slot back.
func (l *limitListener) release() {
	<-l.slots
	l.feel()
}

// feel tells pressure when the connections open cross 4/5 of the bound
// upward, or half of it downward.
func (l *limitListener) feel() {
	if l.pressure == nil {
		return
	}
	l.pmu.Lock()
	defer l.pmu.Unlock()
	n, was := len(l.slots), l.high
	switch {
	case !l.high && 5*n >= 4*cap(l.slots):
		l.high = true
	case l.high && 2*n <= cap(l.slots):
		l.high = false
	}
	if l.high != was {
		go l.tell()
	}
}

// tell tells pressure the state of now: of several on their way, the last
// to run tells the latest.
func (l *limitListener) tell() {
	l.amu.Lock()
	defer l.amu.Unlock()
	l.pmu.Lock()
	high := l.high
	l.pmu.Unlock()
	if high != l.told {
		l.told = high
		l.pressure(high)
	}
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// take counts a connection from addr, unless its client or site holds its
// bound. A trusted proxy's are not counted.
func (l *limitListener) take(addr net.Addr) ([]netip.Prefix, bool) {
	a, ok := addrOf(addr)
	if !ok || inPrefixes(l.trusted, a) {
		return nil, true
	}
	keys := keysOf(a)
	return keys, l.open.take(keys, l.perClient, l.perSite)
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

// clients counts the live streams and the requests served of each client
// and site.
type clients struct {
	// trusted are the reverse proxies whose X-Forwarded-For is believed
	// (Config.TrustedProxies); read-only once the server starts.
	trusted  []netip.Prefix
	streams  counts
	requests counts
}

// take counts one more stream of r's client and reports whether it may
// have it; a stream taken is given back with give.
func (c *clients) take(r *http.Request) ([]netip.Prefix, bool) {
	keys := c.keys(r)
	return keys, c.streams.take(keys, maxStreamsPerClient, maxStreamsPerSite)
}

func (c *clients) give(keys []netip.Prefix) { c.streams.give(keys) }

// keys returns what r counts against (keysOf): its peer's, or, when the
// peer is a trusted proxy, those of the address that proxy saw, which is
// the rightmost one in X-Forwarded-For that is not itself a trusted proxy
// (anything left of it the client may have written).
func (c *clients) keys(r *http.Request) []netip.Prefix {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return []netip.Prefix{{}} // not TCP (a test's fake): one client
	}
	addr := peer.Addr().Unmap()
	if inPrefixes(c.trusted, addr) {
		addr = c.forwardedFor(r, addr)
	}
	return keysOf(addr)
}

// forwardedFor walks r's X-Forwarded-For from the right, past the trusted
// proxies, and returns the first address that is not one; peer if there
// is none, or a value is not an address. A hop may carry a port (as some
// proxies write it: 192.0.2.1:5000, [2001:db8::1]:5000).
func (c *clients) forwardedFor(r *http.Request, peer netip.Addr) netip.Addr {
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := hopAddr(strings.TrimSpace(hops[i]))
		if !ok {
			return peer
		}
		if !inPrefixes(c.trusted, a) {
			return a
		}
		peer = a
	}
	return peer
}

// hopAddr reads one X-Forwarded-For hop: an address, or an address and a
// port.
func hopAddr(h string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
