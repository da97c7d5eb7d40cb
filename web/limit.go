package web

import (
	"net"
	"net/http"
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
	mu sync.Mutex
	n  map[string]int // guarded by mu
}

// take counts one more stream of r's client and reports whether it may
// have it; a stream taken is given back with give.
func (c *clients) take(r *http.Request) (string, bool) {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	if c.n[ip] >= maxStreamsPerClient {
		return ip, false
	}
	c.n[ip]++
	return ip, true
}

func (c *clients) give(ip string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ip]--; c.n[ip] <= 0 {
		delete(c.n, ip)
	}
}
