package alone

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"presenced/bench/internal/shared"
)

// Addresses the harness uses.
const (
	domain        = "presence.localhost"
	owner         = "owner@example.org"
	ownerResource = "bench"
	contactDomain = "example.net"
)

// handshakeDigest is the XEP-0114 handshake value.
func handshakeDigest(id, secret string) string { return shared.HandshakeDigest(id, secret) }

// handler receives every top-level element presenced sends once the
// handshake is done. It runs on the link's reader goroutine only.
type handler interface{ stanza(el []byte) }

// link is the harness's end of presenced's XEP-0114 stream: one reader
// goroutine that passes each stanza to the current handler, and a buffered
// writer used by the driving goroutine only.
type link struct {
	conn     net.Conn
	w        *bufio.Writer
	sc       *Scanner
	h        atomic.Pointer[handler]
	received atomic.Int64 // stanzas read since the handshake
	ended    chan struct{}
	err      error // why the reader stopped; read after ended is closed
}

// acceptLink waits for presenced's connection on ln and runs the handshake.
// It returns when the handshake has been received and answered; hsAt is when
// the handshake arrived. exited ends the wait if presenced dies.
func acceptLink(ctx context.Context, ln net.Listener, secret string, exited <-chan struct{}, limit time.Duration) (l *link, hsAt time.Time, err error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	var conn net.Conn
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, time.Time{}, fmt.Errorf("accept: %w", r.err)
		}
		conn = r.c
	case <-exited:
		return nil, time.Time{}, errors.New("presenced exited before connecting")
	case <-ctx.Done():
		return nil, time.Time{}, ctx.Err()
	case <-time.After(limit):
		return nil, time.Time{}, fmt.Errorf("presenced did not connect within %v", limit)
	}
	l = &link{conn: conn, w: bufio.NewWriterSize(conn, 64<<10), sc: NewScanner(conn), ended: make(chan struct{})}
	_ = conn.SetDeadline(time.Now().Add(limit))
	hsAt, err = l.handshake(secret)
	if err != nil {
		conn.Close()
		return nil, time.Time{}, fmt.Errorf("handshake: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	go l.read()
	return l, hsAt, nil
}

// handshake reads the component's stream header, answers with a header
// carrying a fresh id, checks the <handshake/> digest and acknowledges it.
// Nothing separates the declaration, the header and the acknowledgement:
// mellium's negotiator refuses whitespace there.
func (l *link) handshake(secret string) (time.Time, error) {
	kind, el, err := l.sc.Next()
	if err != nil {
		return time.Time{}, fmt.Errorf("reading stream header: %w", err)
	}
	if kind != KindHeader || !bytes.Contains(el, []byte("jabber:component:accept")) {
		return time.Time{}, fmt.Errorf("unexpected stream header %q", el)
	}
	id := shared.RandomHex(8)
	fmt.Fprintf(l.w, `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='%s' from='%s'>`, id, domain)
	if err := l.w.Flush(); err != nil {
		return time.Time{}, err
	}
	kind, el, err = l.sc.Next()
	if err != nil {
		return time.Time{}, fmt.Errorf("reading handshake: %w", err)
	}
	at := time.Now()
	if kind != KindElement || string(elemName(el)) != "handshake" {
		return time.Time{}, fmt.Errorf("expected <handshake>, got %q", el)
	}
	got := string(bytes.TrimSpace(childText(el, "handshake")))
	if want := handshakeDigest(id, secret); got != want {
		l.w.WriteString(`<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)
		l.w.Flush()
		return time.Time{}, fmt.Errorf("wrong handshake digest %q, want %q", got, want)
	}
	l.w.WriteString("<handshake/>")
	return at, l.w.Flush()
}

// read passes every element to the current handler until the stream ends.
func (l *link) read() {
	defer close(l.ended)
	for {
		kind, el, err := l.sc.Next()
		if err != nil {
			l.err = err
			return
		}
		switch kind {
		case KindEnd:
			l.err = errStreamEnd
			return
		case KindElement:
			l.received.Add(1)
			if h := l.h.Load(); h != nil {
				(*h).stanza(el)
			}
		}
	}
}

// errStreamEnd is the reader's error when presenced closed its stream.
var errStreamEnd = errors.New("presenced closed its stream")

// use makes h the handler of the elements read from now on.
func (l *link) use(h handler) { l.h.Store(&h) }

// waitQuiet returns once no stanza arrived for quiet (true), or after limit
// or when the stream ends (false).
func (l *link) waitQuiet(quiet, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	last, since := l.received.Load(), time.Now()
	for time.Now().Before(deadline) {
		select {
		case <-l.ended:
			return false
		case <-time.After(20 * time.Millisecond):
		}
		if n := l.received.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			return true
		}
	}
	return false
}

// presence writes one presence stanza; the caller flushes.
func (l *link) presence(typ, from, to, show string) {
	w := l.w
	w.WriteString("<presence")
	if typ != "" {
		w.WriteString(" type='")
		w.WriteString(typ)
		w.WriteByte('\'')
	}
	w.WriteString(" from='")
	w.WriteString(from)
	w.WriteString("' to='")
	w.WriteString(to)
	if show == "" {
		w.WriteString("'/>")
		return
	}
	w.WriteString("'><show>")
	w.WriteString(show)
	w.WriteString("</show></presence>")
}

// contactPresence writes a typed presence from contact k to handle j without
// building strings: the storms' hot path.
func (l *link) contactPresence(typ string, k, j int) {
	var num [20]byte
	w := l.w
	w.WriteString("<presence type='")
	w.WriteString(typ)
	w.WriteString("' from='c")
	w.Write(strconv.AppendInt(num[:0], int64(k), 10))
	w.WriteString("@" + contactDomain + "' to='h")
	w.Write(strconv.AppendInt(num[:0], int64(j), 10))
	w.WriteString("@" + domain + "'/>")
}

// close ends the harness's side of the stream and the connection.
func (l *link) close() {
	_ = l.conn.SetWriteDeadline(time.Now().Add(time.Second))
	l.w.WriteString("</stream:stream>")
	l.w.Flush()
	l.conn.Close()
}
