package throughserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// readBufSize is the initial read buffer of a connection; it grows when a
// single element is larger.
const readBufSize = 64 << 10

// loginTimeout bounds one client's whole log-in.
const loginTimeout = 60 * time.Second

// reader splits what a connection sends into top-level elements.
type reader struct {
	conn       net.Conn
	buf        []byte
	start, end int
}

func newReader(conn net.Conn) *reader {
	return &reader{conn: conn, buf: make([]byte, readBufSize)}
}

// next returns the next unit of the stream, reading as needed. The element
// is valid until the following call.
func (r *reader) next() (el []byte, kind int, err error) {
	for {
		if r.end > r.start {
			el, kind, n, err := nextElement(r.buf[r.start:r.end])
			if err != nil {
				return nil, 0, fmt.Errorf("%w near %q", err, clip(r.buf[r.start:r.end], 80))
			}
			if n > 0 {
				r.start += n
				return el, kind, nil
			}
		}
		if err := r.fill(); err != nil {
			return nil, 0, err
		}
	}
}

// fill reads once more from the connection, compacting or growing the buffer
// first.
func (r *reader) fill() error {
	if r.start > 0 {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	if r.end == len(r.buf) {
		if len(r.buf) >= 64<<20 {
			return errors.New("throughserver: an element larger than 64 MiB")
		}
		nb := make([]byte, 2*len(r.buf))
		copy(nb, r.buf[:r.end])
		r.buf = nb
	}
	n, err := r.conn.Read(r.buf[r.end:])
	r.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// clip returns at most n bytes of b, for error messages.
func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// client is one c2s connection of the harness: a subscriber or the owner.
type client struct {
	user   string // localpart
	domain string
	conn   net.Conn
	rd     *reader

	wmu sync.Mutex

	// rosterItems is the number of items in the roster fetched at log-in.
	rosterItems int

	t tally

	pong     chan struct{} // a ping answered, after the reader started
	readDone chan struct{} // closed when the reader goroutine returns
	readErr  error         // why it returned, once readDone is closed

	// onSubscribe, if set, is called by the reader for a 'subscribe'
	// presence with its 'from'. Set from another goroutine than the
	// reader's, hence atomic.
	onSubscribe atomic.Pointer[func(from string)]
}

// loginOptions say how a client logs in.
type loginOptions struct {
	addr, domain   string
	user, password string
	register       bool   // in-band registration first (XEP-0077); "exists" is fine
	presence       string // initial presence stanza
}

// dialClient connects and logs in: optional registration, SASL PLAIN, bind,
// session, roster get, initial presence, then a ping whose answer proves the
// presence was processed. The reader goroutine is not started.
func dialClient(ctx context.Context, o loginOptions) (*client, error) {
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	c := &client{user: o.user, domain: o.domain, conn: conn, rd: newReader(conn),
		pong: make(chan struct{}, 1), readDone: make(chan struct{})}
	if err := c.login(o); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s@%s: %w", o.user, o.domain, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

func (c *client) login(o loginOptions) error {
	features, err := c.openStream()
	if err != nil {
		return err
	}
	if o.register {
		q := fmt.Sprintf("<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>%s</username><password>%s</password></query></iq>", o.user, o.password)
		el, err := c.request(q, "reg")
		if err != nil {
			return fmt.Errorf("register: %w", err)
		}
		if string(attr(el, "type")) != "result" && !bytes.Contains(el, []byte("conflict")) {
			return fmt.Errorf("register refused: %s", clip(el, 300))
		}
		if err := c.closeAndReopen(o.addr); err != nil {
			return err
		}
		if features, err = c.openStream(); err != nil {
			return err
		}
	}
	if !bytes.Contains(features, []byte(">PLAIN<")) {
		return fmt.Errorf("server offers no SASL PLAIN: %s", clip(features, 300))
	}
	cred := base64.StdEncoding.EncodeToString([]byte("\x00" + o.user + "\x00" + o.password))
	if err := c.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + cred + "</auth>"); err != nil {
		return err
	}
	el, _, err := c.rd.next()
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if string(tagName(el)) != "success" {
		return fmt.Errorf("authentication failed: %s", clip(el, 300))
	}
	if features, err = c.openStream(); err != nil {
		return err
	}
	el, err = c.request("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>", "bind")
	if err != nil || string(attr(el, "type")) != "result" {
		return fmt.Errorf("bind: %v %s", err, clip(el, 300))
	}
	if bytes.Contains(features, []byte("urn:ietf:params:xml:ns:xmpp-session")) {
		if _, err := c.request("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>", "sess"); err != nil {
			return fmt.Errorf("session: %w", err)
		}
	}
	el, err = c.request("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>", "roster")
	if err != nil || string(attr(el, "type")) != "result" {
		return fmt.Errorf("roster get: %v %s", err, clip(el, 300))
	}
	c.rosterItems = bytes.Count(el, []byte("<item "))
	_, err = c.request(o.presence+pingStanza(c.domain, "login"), "login")
	if err != nil {
		return fmt.Errorf("initial presence and ping: %w", err)
	}
	return nil
}

// openStream sends a stream header and reads the server's header and
// features.
func (c *client) openStream() (features []byte, err error) {
	hdr := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='" + c.domain + "' version='1.0'>"
	if err := c.write(hdr); err != nil {
		return nil, err
	}
	for {
		el, kind, err := c.rd.next()
		if err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
		switch {
		case kind == kindClose:
			return nil, errors.New("server closed the stream")
		case kind == kindHeader:
			continue
		case bytes.HasSuffix(tagName(el), []byte("features")):
			return append([]byte(nil), el...), nil
		case bytes.HasSuffix(tagName(el), []byte("error")):
			return nil, fmt.Errorf("stream error: %s", clip(el, 300))
		}
	}
}

// closeAndReopen replaces the connection with a new one (after in-band
// registration, which leaves the stream unauthenticated but used).
func (c *client) closeAndReopen(addr string) error {
	deadline := time.Now().Add(loginTimeout)
	_ = c.write("</stream:stream>")
	c.conn.Close()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(deadline)
	c.conn, c.rd = conn, newReader(conn)
	return nil
}

// request writes s and returns the first element whose id is id, skipping
// others (presences, roster pushes) during log-in.
func (c *client) request(s, id string) ([]byte, error) {
	if err := c.write(s); err != nil {
		return nil, err
	}
	for {
		el, kind, err := c.rd.next()
		if err != nil {
			return nil, err
		}
		if kind == kindClose {
			return nil, errors.New("server closed the stream")
		}
		if kind == kindStanza && string(attr(el, "id")) == id {
			return append([]byte(nil), el...), nil
		}
	}
}

// write sends s whole. It is safe to call from any goroutine.
func (c *client) write(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := io.WriteString(c.conn, s)
	return err
}

// pingStanza is an XEP-0199 ping of the server.
func pingStanza(domain, id string) string {
	return "<iq type='get' id='" + id + "' to='" + domain + "'><ping xmlns='urn:xmpp:ping'/></iq>"
}

// startReader starts the goroutine that reads the connection until it
// closes, counting presences into c.t.
func (c *client) startReader(componentDomain string) {
	go func() {
		defer close(c.readDone)
		c.readErr = c.readLoop(componentDomain)
	}()
}

func (c *client) readLoop(componentDomain string) error {
	var elems [][]byte
	for {
		for {
			el, kind, n, err := nextElement(c.rd.buf[c.rd.start:c.rd.end])
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			c.rd.start += n
			if kind == kindClose {
				return errors.New("server closed the stream")
			}
			elems = append(elems, el)
		}
		if len(elems) > 0 {
			c.dispatch(elems, componentDomain, time.Now())
			elems = elems[:0]
		}
		if err := c.rd.fill(); err != nil {
			return err
		}
	}
}

// dispatch handles one read's worth of elements: presences go to the tally,
// ping answers to c.pong, subscription requests to onSubscribe.
func (c *client) dispatch(elems [][]byte, componentDomain string, now time.Time) {
	c.t.mu.Lock()
	for _, el := range elems {
		switch string(tagName(el)) {
		case "presence":
			typ := attr(el, "type")
			if f := c.onSubscribe.Load(); f != nil && string(typ) == "subscribe" {
				from := string(attr(el, "from"))
				c.t.mu.Unlock()
				(*f)(from)
				c.t.mu.Lock()
				continue
			}
			j := handleIndex(attr(el, "from"), componentDomain)
			if j < 0 {
				continue
			}
			c.t.count(j, typ, childText(el, "show"), now)
		case "iq":
			if bytes.HasPrefix(attr(el, "id"), []byte("ping")) {
				select {
				case c.pong <- struct{}{}:
				default:
				}
			}
		}
	}
	c.t.mu.Unlock()
}

// ping sends a ping and waits for its answer, proving that the server has
// processed everything this client sent before.
func (c *client) ping(ctx context.Context) error {
	select {
	case <-c.pong: // a stale answer
	default:
	}
	if err := c.write(pingStanza(c.domain, "ping")); err != nil {
		return err
	}
	select {
	case <-c.pong:
		return nil
	case <-c.readDone:
		return fmt.Errorf("%s: connection lost: %v", c.user, c.readErr)
	case <-ctx.Done():
		return fmt.Errorf("%s: no answer to a ping: %w", c.user, ctx.Err())
	}
}

// close ends the stream and the connection.
func (c *client) close() {
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.write("<presence type='unavailable'/></stream:stream>")
	c.conn.Close()
}
