package throughserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"presenced/bench/internal/shared"
)

// nullWriterSize is the null component's one buffered writer.
const nullWriterSize = 64 << 10

// nullConfig describes the null component.
type nullConfig struct {
	server  string // host:port of the XMPP server's component listener
	domain  string // component domain, e.g. presence.localhost
	secret  string
	host    string // the users' domain, e.g. localhost
	owner   string // the owner's bare JID, whose presence triggers a wave
	subs    int
	handles int
	show    string // answer to probes until the owner's presence says otherwise
	// extra is appended inside every available presence (-null-caps: a
	// <c/> element like presenced's, so that the stanzas weigh the same).
	extra string
}

// capsLike is an XEP-0115 element of the size presenced puts in every
// available handle presence (the ver is a made-up SHA-1 in base64).
const capsLike = "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='xmpp:" + componentDomain + "' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>"

// wave is the pre-rendered fan-out of one show value: for each handle j and
// subscriber k (handle-major), the presence from hj to uk.
type wave struct {
	data []byte
	off  []int // stanza i is data[off[i]:off[i+1]]
}

// renderWave renders the wave for show ("" for none); extra goes inside
// each presence, after the show.
func renderWave(domain, host string, handles, subs int, show, extra string) *wave {
	w := &wave{off: make([]int, 0, handles*subs+1)}
	var b []byte
	for j := range handles {
		for k := range subs {
			w.off = append(w.off, len(b))
			b = append(b, "<presence from='h"...)
			b = strconv.AppendInt(b, int64(j), 10)
			b = append(b, '@')
			b = append(b, domain...)
			b = append(b, "/presenced' to='u"...)
			b = strconv.AppendInt(b, int64(k), 10)
			b = append(b, '@')
			b = append(b, host...)
			if show == "" && extra == "" {
				b = append(b, "'/>"...)
				continue
			}
			b = append(b, "'>"...)
			if show != "" {
				b = append(b, "<show>"...)
				b = append(b, show...)
				b = append(b, "</show>"...)
			}
			b = append(b, extra...)
			b = append(b, "</presence>"...)
		}
	}
	w.off = append(w.off, len(b))
	w.data = b
	return w
}

// stanza returns the presence of handle j for subscriber k.
func (w *wave) stanza(j, k, subs int) []byte {
	i := j*subs + k
	return w.data[w.off[i]:w.off[i+1]]
}

// nullComponent is an XEP-0114 component that does no work of its own: it
// writes pre-rendered presences, one flush per wave, and answers probes with
// pre-rendered presence.
type nullComponent struct {
	cfg   nullConfig
	conn  net.Conn
	rd    *reader
	w     *bufio.Writer
	waves map[string]*wave
	show  string
}

// dialNull connects and authenticates the null component (XEP-0114
// handshake) and pre-renders its waves.
func dialNull(ctx context.Context, cfg nullConfig) (*nullComponent, error) {
	n := &nullComponent{cfg: cfg, show: cfg.show, waves: map[string]*wave{}}
	for _, s := range []string{"away", "dnd", cfg.show} {
		if n.waves[s] == nil {
			n.waves[s] = renderWave(cfg.domain, cfg.host, cfg.handles, cfg.subs, s, cfg.extra)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", cfg.server)
	if err != nil {
		return nil, fmt.Errorf("null component: %w", err)
	}
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	n.conn, n.rd, n.w = conn, newReader(conn), bufio.NewWriterSize(conn, nullWriterSize)
	if err := n.handshake(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("null component: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	return n, nil
}

func (n *nullComponent) handshake() error {
	hdr := "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='" + n.cfg.domain + "'>"
	if _, err := n.conn.Write([]byte(hdr)); err != nil {
		return err
	}
	el, kind, err := n.rd.next()
	if err != nil {
		return err
	}
	if kind != kindHeader {
		return fmt.Errorf("no stream header: %s", clip(el, 200))
	}
	id := attr(el, "id")
	if len(id) == 0 {
		return errors.New("stream header without id")
	}
	if _, err := n.conn.Write([]byte("<handshake>" + shared.HandshakeDigest(string(id), n.cfg.secret) + "</handshake>")); err != nil {
		return err
	}
	el, kind, err = n.rd.next()
	if err != nil {
		return err
	}
	if kind != kindStanza || string(tagName(el)) != "handshake" {
		return fmt.Errorf("handshake refused: %s", clip(el, 200))
	}
	return nil
}

// serve reads and answers until the connection fails or ctx ends.
func (n *nullComponent) serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { n.conn.Close() })
	defer stop()
	for {
		for {
			el, kind, k, err := nextElement(n.rd.buf[n.rd.start:n.rd.end])
			if err != nil {
				return err
			}
			if k == 0 {
				break
			}
			n.rd.start += k
			if kind == kindClose {
				return errors.New("null component: server closed the stream")
			}
			if err := n.handle(el); err != nil {
				return err
			}
		}
		// Nothing complete is buffered on the read side: flush.
		if err := n.w.Flush(); err != nil {
			return err
		}
		if err := n.rd.fill(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// handle answers one stanza.
func (n *nullComponent) handle(el []byte) error {
	if string(tagName(el)) != "presence" {
		return nil
	}
	typ, from, to := attr(el, "type"), attr(el, "from"), attr(el, "to")
	switch string(typ) {
	case "":
		if !sameBare(from, n.cfg.owner) || string(to) != n.cfg.domain {
			return nil
		}
		n.show = string(childText(el, "show"))
		return n.writeWave(n.waveFor(n.show))
	case "probe":
		j, k := handleIndex(to, n.cfg.domain), userIndex(from)
		if j < 0 || j >= n.cfg.handles || k < 0 || k >= n.cfg.subs {
			return nil
		}
		_, err := n.w.Write(n.waveFor(n.show).stanza(j, k, n.cfg.subs))
		return err
	case "subscribe":
		// Set-up through the protocol: approve every subscription.
		if len(to) == 0 || len(from) == 0 {
			return nil
		}
		_, err := fmt.Fprintf(n.w, "<presence type='subscribed' from='%s' to='%s'/>", bareOf(to), bareOf(from))
		return err
	}
	return nil
}

// waveFor returns the wave of show, rendering it on first use.
func (n *nullComponent) waveFor(show string) *wave {
	w := n.waves[show]
	if w == nil {
		w = renderWave(n.cfg.domain, n.cfg.host, n.cfg.handles, n.cfg.subs, show, n.cfg.extra)
		n.waves[show] = w
	}
	return w
}

// writeWave writes every stanza of w and flushes once.
func (n *nullComponent) writeWave(w *wave) error {
	for i := 0; i+1 < len(w.off); i++ {
		if _, err := n.w.Write(w.data[w.off[i]:w.off[i+1]]); err != nil {
			return err
		}
	}
	return n.w.Flush()
}

// send writes one stanza now (used during set-up).
func (n *nullComponent) send(s string) error {
	if _, err := n.w.WriteString(s); err != nil {
		return err
	}
	return n.w.Flush()
}

// close ends the stream.
func (n *nullComponent) close() {
	_ = n.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = n.w.WriteString("</stream:stream>")
	_ = n.w.Flush()
	n.conn.Close()
}

// sameBare reports whether jid's bare part is bare.
func sameBare(jid []byte, bare string) bool {
	return string(bareOf(jid)) == bare
}

// bareOf strips the resource of a JID.
func bareOf(jid []byte) []byte {
	for i, c := range jid {
		if c == '/' {
			return jid[:i]
		}
	}
	return jid
}
