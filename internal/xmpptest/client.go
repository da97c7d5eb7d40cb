// Package xmpptest is a small XMPP client for integration tests, written on
// encoding/xml and net.Conn so that tests control every byte they send and
// see every stanza they receive.
//
// It speaks just enough of RFC 6120 for a test server on loopback: no TLS,
// SASL PLAIN, resource binding, and XEP-0077 in-band registration. Stanzas
// are sent as raw XML strings; received ones are parsed into Elements and
// kept until an Expect claims them.
package xmpptest

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	nsClient  = "jabber:client"
	nsSASL    = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind    = "urn:ietf:params:xml:ns:xmpp-bind"
	nsSession = "urn:ietf:params:xml:ns:xmpp-session"
	nsStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"
	nsRoster  = "jabber:iq:roster"
	nsReg     = "jabber:iq:register"
)

// writeTimeout bounds one write to the server.
const writeTimeout = 10 * time.Second

// closeWait is how long Close waits for the server to close its stream.
const closeWait = 2 * time.Second

var idCounter atomic.Uint64

// nextID returns an id unique within the test binary.
func nextID() string {
	return fmt.Sprintf("xt%d", idCounter.Add(1))
}

// stream is one TCP connection during negotiation.
type stream struct {
	conn net.Conn
	br   *bufio.Reader
	dec  *xml.Decoder
}

func dialStream(ctx context.Context, addr string) (*stream, func(), error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	// Negotiation reads block; tie them to ctx.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	s := &stream{conn: conn, br: bufio.NewReader(conn)}
	return s, func() { stop(); _ = conn.SetDeadline(time.Time{}) }, nil
}

// open sends a stream header and returns the server's features.
func (s *stream) open(domain string) (*Element, error) {
	// A new decoder per stream: the restarted stream is a new document.
	// Both share br, so no byte the server sent is lost between them.
	s.dec = xml.NewDecoder(s.br)
	if _, err := fmt.Fprintf(s.conn, "<?xml version='1.0'?><stream:stream to='%s' xmlns='%s' "+
		"xmlns:stream='%s' version='1.0'>", Escape(domain), nsClient, nsStream); err != nil {
		return nil, err
	}
	hdr, err := nextTop(s.dec)
	if err != nil {
		return nil, fmt.Errorf("read stream header: %w", err)
	}
	if hdr.Name.Space != nsStream || hdr.Name.Local != "stream" {
		return nil, fmt.Errorf("want a stream header, got %v", hdr)
	}
	feat, err := s.next()
	if err != nil {
		return nil, fmt.Errorf("read stream features: %w", err)
	}
	if feat.Name.Space != nsStream || feat.Name.Local != "features" {
		return nil, fmt.Errorf("want stream features, got %v", feat)
	}
	return feat, nil
}

// next reads the next element, turning a stream error into an error.
func (s *stream) next() (*Element, error) {
	e, err := nextTop(s.dec)
	if err != nil {
		return nil, err
	}
	if e.Name.Space == nsStream && e.Name.Local == "error" {
		return nil, fmt.Errorf("stream error: %v", e)
	}
	return e, nil
}

// iq sends an IQ and returns the reply with the same id.
func (s *stream) iq(typ, payload string) (*Element, error) {
	id := nextID()
	if _, err := fmt.Fprintf(s.conn, "<iq type='%s' id='%s'>%s</iq>", typ, id, payload); err != nil {
		return nil, err
	}
	for {
		e, err := s.next()
		if err != nil {
			return nil, err
		}
		if e.Name.Local == "iq" && e.Attr("id") == id {
			if e.Attr("type") == "error" {
				return e, fmt.Errorf("iq error: %s (%v)", StanzaErrorCondition(e), e)
			}
			return e, nil
		}
	}
}

// Register creates the account user@domain with XEP-0077 in-band
// registration over a fresh, unencrypted stream to addr. An account that
// exists already is an error whose text contains "conflict".
func Register(ctx context.Context, addr, domain, user, pass string) error {
	s, done, err := dialStream(ctx, addr)
	if err != nil {
		return fmt.Errorf("register %s@%s: %w", user, domain, err)
	}
	defer func() { _ = s.conn.Close() }()
	defer done()
	if _, err := s.open(domain); err != nil {
		return fmt.Errorf("register %s@%s: %w", user, domain, err)
	}
	_, err = s.iq("set", fmt.Sprintf("<query xmlns='%s'><username>%s</username><password>%s</password></query>",
		nsReg, Escape(user), Escape(pass)))
	if err != nil {
		return fmt.Errorf("register %s@%s: %w", user, domain, err)
	}
	_, _ = io.WriteString(s.conn, "</stream:stream>")
	return nil
}

// Client is a logged-in client session. Its methods may be called from many
// goroutines, but Expect and the other methods taking a testing.TB must be
// called from the test's own goroutine, like t.Fatal.
type Client struct {
	conn net.Conn
	jid  string
	wmu  sync.Mutex // serialises writes to conn

	mu       sync.Mutex
	backlog  []*Element    // received and not yet claimed; guarded by mu
	changed  chan struct{} // closed and replaced on each change; guarded by mu
	readErr  error         // why the reader stopped; guarded by mu
	received uint64        // stanzas received so far; guarded by mu

	readerDone chan struct{}
	closeOnce  sync.Once
}

// Dial logs in as user@domain on the client port addr: stream, SASL PLAIN
// without TLS, stream restart, resource binding and, when the server offers
// it, session establishment. It sends no initial presence and does not
// fetch the roster.
func Dial(ctx context.Context, addr, domain, user, pass, resource string) (*Client, error) {
	c, err := dial(ctx, addr, domain, user, pass, resource)
	if err != nil {
		return nil, fmt.Errorf("dial %s@%s/%s at %s: %w", user, domain, resource, addr, err)
	}
	return c, nil
}

func dial(ctx context.Context, addr, domain, user, pass, resource string) (_ *Client, err error) {
	s, done, err := dialStream(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer func() {
		done()
		if err != nil {
			_ = s.conn.Close()
		}
	}()

	feat, err := s.open(domain)
	if err != nil {
		return nil, err
	}
	mechs := feat.ChildNS(nsSASL, "mechanisms")
	plain := false
	for _, m := range mechs.safeChildren() {
		if strings.TrimSpace(m.Text) == "PLAIN" {
			plain = true
		}
	}
	if !plain {
		return nil, fmt.Errorf("server offers no SASL PLAIN: %v", feat)
	}
	cred := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	if _, err := fmt.Fprintf(s.conn, "<auth xmlns='%s' mechanism='PLAIN'>%s</auth>", nsSASL, cred); err != nil {
		return nil, err
	}
	res, err := s.next()
	if err != nil {
		return nil, fmt.Errorf("sasl: %w", err)
	}
	if res.Name.Local != "success" {
		return nil, fmt.Errorf("sasl: authentication failed: %v", res)
	}

	feat, err = s.open(domain)
	if err != nil {
		return nil, fmt.Errorf("after sasl: %w", err)
	}
	if feat.ChildNS(nsBind, "bind") == nil {
		return nil, fmt.Errorf("server offers no resource binding: %v", feat)
	}
	reply, err := s.iq("set", fmt.Sprintf("<bind xmlns='%s'><resource>%s</resource></bind>", nsBind, Escape(resource)))
	if err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	jid := strings.TrimSpace(reply.ChildNS(nsBind, "bind").ChildText("jid"))
	if jid == "" {
		return nil, fmt.Errorf("bind: no jid in %v", reply)
	}
	if sess := feat.ChildNS(nsSession, "session"); sess != nil && sess.Child("optional") == nil {
		if _, err := s.iq("set", fmt.Sprintf("<session xmlns='%s'/>", nsSession)); err != nil {
			return nil, fmt.Errorf("session: %w", err)
		}
	}

	c := &Client{
		conn:       s.conn,
		jid:        jid,
		changed:    make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	go c.read(s.dec)
	return c, nil
}

func (e *Element) safeChildren() []*Element {
	if e == nil {
		return nil
	}
	return e.Children
}

// read is the client's reader goroutine; it ends when the stream does.
func (c *Client) read(dec *xml.Decoder) {
	defer close(c.readerDone)
	for {
		e, err := nextTop(dec)
		c.mu.Lock()
		if err != nil {
			c.readErr = err
		} else {
			c.received++
			e.seq = c.received
			c.backlog = append(c.backlog, e)
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// JID returns the full JID the server bound.
func (c *Client) JID() string { return c.jid }

// Bare returns the bare JID of the session.
func (c *Client) Bare() string { return Bare(c.jid) }

// Send writes one raw stanza (or any XML) to the server.
func (c *Client) Send(raw string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := io.WriteString(c.conn, raw)
	return err
}

// Sendf formats and sends a raw stanza. Arguments are not escaped: use
// Escape for untrusted text.
func (c *Client) Sendf(format string, args ...any) error {
	return c.Send(fmt.Sprintf(format, args...))
}

// MustSend sends a raw stanza and fails the test when it cannot.
func (c *Client) MustSend(t testing.TB, raw string) {
	t.Helper()
	if err := c.Send(raw); err != nil {
		t.Fatalf("%s: send %s: %v", c.jid, raw, err)
	}
}

// take removes and returns the first backlog element that matches, or nil.
// It also returns the channel that is closed on the next change and why the
// reader stopped, if it did.
func (c *Client) take(match func(*Element) bool) (*Element, <-chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.backlog {
		if match(e) {
			c.backlog = append(c.backlog[:i:i], c.backlog[i+1:]...)
			return e, nil, nil
		}
	}
	return nil, c.changed, c.readErr
}

// Expect waits up to timeout for a stanza that matches and returns it,
// failing the test otherwise. Stanzas already received and not yet claimed
// are searched first; those that do not match stay for later calls.
func (c *Client) Expect(t testing.TB, timeout time.Duration, desc string, match func(*Element) bool) *Element {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		e, changed, rerr := c.take(match)
		if e != nil {
			return e
		}
		if rerr != nil {
			t.Fatalf("%s: expected %s, but the stream ended (%v); unclaimed stanzas:\n%s",
				c.jid, desc, rerr, c.describeBacklog())
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("%s: expected %s within %v; unclaimed stanzas:\n%s",
				c.jid, desc, timeout, c.describeBacklog())
		}
	}
}

// Await waits up to timeout for a stanza that matches and returns it, like
// Expect, but returns nil instead of failing the test when none came in
// time or the stream ended. It suits loops that expect failures, such as
// requests sent while the peer is down. It may be called from any
// goroutine.
func (c *Client) Await(timeout time.Duration, match func(*Element) bool) *Element {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		e, changed, rerr := c.take(match)
		if e != nil {
			return e
		}
		if rerr != nil {
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil
		}
	}
}

// TryIQ is IQ without failing the test: it returns the reply, or nil when
// the IQ could not be sent or no reply came within timeout.
func (c *Client) TryIQ(timeout time.Duration, typ, to, payloadXML string) *Element {
	id := nextID()
	toAttr := ""
	if to != "" {
		toAttr = fmt.Sprintf(" to='%s'", Escape(to))
	}
	if err := c.Send(fmt.Sprintf("<iq type='%s' id='%s'%s>%s</iq>", Escape(typ), id, toAttr, payloadXML)); err != nil {
		return nil
	}
	return c.Await(timeout, IsIQReply(id))
}

// ExpectNone waits for d and fails the test if a matching stanza arrived
// by then, counting those received before the call. It claims nothing.
func (c *Client) ExpectNone(t testing.TB, d time.Duration, desc string, match func(*Element) bool) {
	t.Helper()
	time.Sleep(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.backlog {
		if match(e) {
			t.Fatalf("%s: expected no %s, got %v", c.jid, desc, e)
		}
	}
}

// Drain discards every stanza received and not yet claimed.
func (c *Client) Drain() {
	c.mu.Lock()
	c.backlog = nil
	c.mu.Unlock()
}

// Backlog returns a copy of the stanzas received and not yet claimed.
func (c *Client) Backlog() []*Element {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Element(nil), c.backlog...)
}

func (c *Client) describeBacklog() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.backlog) == 0 {
		return "  (none)"
	}
	var b strings.Builder
	for _, e := range c.backlog {
		fmt.Fprintf(&b, "  %v\n", e)
	}
	return b.String()
}

// IQ sends an IQ of type typ (get or set) to to (the user's own account
// when empty) with a fresh id, and returns the reply, result or error.
// payloadXML is inserted as is.
func (c *Client) IQ(t testing.TB, timeout time.Duration, typ, to, payloadXML string) *Element {
	t.Helper()
	id := nextID()
	toAttr := ""
	if to != "" {
		toAttr = fmt.Sprintf(" to='%s'", Escape(to))
	}
	c.MustSend(t, fmt.Sprintf("<iq type='%s' id='%s'%s>%s</iq>", Escape(typ), id, toAttr, payloadXML))
	return c.Expect(t, timeout, fmt.Sprintf("reply to iq %s %s to %q: %s", id, typ, to, payloadXML), IsIQReply(id))
}

// FetchRoster gets the roster, which also tells the server that this
// session is interested in roster pushes and subscription results. It fails
// the test on an error reply and returns the <query/> element.
func (c *Client) FetchRoster(t testing.TB) *Element {
	t.Helper()
	reply := c.IQ(t, 10*time.Second, "get", "", fmt.Sprintf("<query xmlns='%s'/>", nsRoster))
	if reply.Attr("type") != "result" {
		t.Fatalf("%s: roster get: %v", c.jid, reply)
	}
	q := reply.ChildNS(nsRoster, "query")
	if q == nil {
		q = &Element{Name: xml.Name{Space: nsRoster, Local: "query"}}
	}
	return q
}

// Close sends unavailable presence and the closing stream tag, waits a
// little for the server to close its side, and closes the connection. It is
// safe to call more than once (and from t.Cleanup).
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		serr := c.Send("<presence type='unavailable'/></stream:stream>")
		select {
		case <-c.readerDone:
			serr = nil // the server had closed first: nothing to report
		case <-time.After(closeWait):
		}
		err = c.conn.Close()
		<-c.readerDone
		if serr != nil {
			err = serr
		}
	})
	return err
}

// Done is closed when the server's stream has ended.
func (c *Client) Done() <-chan struct{} { return c.readerDone }

// Bare strips the resource from a JID.
func Bare(jid string) string {
	if i := strings.IndexByte(jid, '/'); i >= 0 {
		return jid[:i]
	}
	return jid
}

// StanzaErrorCondition returns the defined condition of an error stanza
// ("item-not-found", …), or "".
func StanzaErrorCondition(e *Element) string {
	for _, c := range e.Child("error").safeChildren() {
		if c.Name.Space == nsStanzas && c.Name.Local != "text" {
			return c.Name.Local
		}
	}
	return ""
}
