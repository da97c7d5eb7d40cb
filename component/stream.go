package component

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// The XEP-0114 stream, read by the component itself. mellium's Session
// runs a handler per stanza under its own locks and flushes once per
// stanza; presenced reads on one goroutine, hands each stanza to the
// engine, which writes its answers through its own writer (output.go) once
// nothing more is queued. The handshake is the four steps of XEP-0114 §3,
// done here as mellium's component package does them.

const nsStreams = "http://etherx.jabber.org/streams"

// stream is the reading side of one connection.
type stream struct {
	dec *xml.Decoder
}

// handshake opens the stream to the server on rw and authenticates with
// secret (XEP-0114 §3). The stream it returns reads the stanzas that
// follow.
func handshake(rw io.ReadWriter, domain, secret string) (*stream, error) {
	st := &stream{dec: xml.NewDecoder(bufio.NewReaderSize(rw, 64<<10))}
	if _, err := fmt.Fprintf(rw, "<stream:stream xmlns='%s' xmlns:stream='%s' to='%s'>", nsStream, nsStreams, escapeAttr(domain)); err != nil {
		return nil, err
	}
	start, err := st.nextStart()
	if err != nil {
		return nil, err
	}
	if start.Name.Space != nsStreams || start.Name.Local != "stream" {
		return nil, fmt.Errorf("component: expected a stream header from the server, got <%s>", start.Name.Local)
	}
	id := ""
	for _, a := range start.Attr {
		if a.Name.Space == "" && a.Name.Local == "id" {
			id = a.Value
		}
	}
	if id == "" {
		return nil, errors.New("component: the server's stream header has no id")
	}
	sum := sha1.Sum([]byte(id + secret))
	if _, err := fmt.Fprintf(rw, "<handshake>%s</handshake>", hex.EncodeToString(sum[:])); err != nil {
		return nil, err
	}
	start, err = st.nextStart()
	if err != nil {
		return nil, err
	}
	n, err := readNode(st.dec, start)
	if err != nil {
		return nil, err
	}
	switch {
	case n.name.Local == "handshake" && n.ns() == nsStream:
		return st, nil
	case n.name.Local == "error" && n.ns() == nsStreams:
		return nil, fmt.Errorf("component: handshake refused: %s", streamErrorText(n))
	}
	return nil, fmt.Errorf("component: expected <handshake/> from the server, got <%s>", n.name.Local)
}

// nextStart returns the next start element, skipping the XML declaration
// and whitespace.
func (st *stream) nextStart() (xml.StartElement, error) {
	for {
		tok, err := st.dec.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.ProcInst, xml.CharData:
		case xml.EndElement:
			return xml.StartElement{}, errors.New("component: the server closed the stream")
		default:
			return xml.StartElement{}, fmt.Errorf("component: unexpected %T in the stream", tok)
		}
	}
}

// errStreamClosed is returned by read when the server closed the stream.
var errStreamClosed = errors.New("the server closed the stream")

// read reads stanzas until the stream ends and hands each to handle; one
// over the limits is handed over with errTooBig. Malformed XML or a stream
// error ends the stream.
func (st *stream) read(handle func(parsed)) error {
	for {
		tok, err := st.dec.Token()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n, err := readNode(st.dec, t)
			if err != nil && !errors.Is(err, errTooBig) {
				return err
			}
			if n.name.Local == "error" && n.ns() == nsStreams {
				return fmt.Errorf("stream error from the server: %s", streamErrorText(n))
			}
			handle(parsed{n, err})
		case xml.EndElement:
			return errStreamClosed
		case xml.CharData:
			// Whitespace keepalives between stanzas.
		default:
			return fmt.Errorf("component: unexpected %T in the stream", tok)
		}
	}
}

// parsed is one stanza as read, with errTooBig if it went over the limits.
type parsed struct {
	n      *node
	tooBig error
}

// streamErrorText names the condition of a <stream:error/>, with its text.
func streamErrorText(n *node) string {
	cond, text := "undefined-condition", ""
	for _, c := range n.children {
		switch {
		case c.name.Local == "text":
			text = c.text
		case c.ns() == "urn:ietf:params:xml:ns:xmpp-streams":
			cond = c.name.Local
		}
	}
	if text != "" {
		return cond + ": " + clip(text)
	}
	return cond
}

// escapeAttr escapes s for a single-quoted attribute value.
func escapeAttr(s string) string { return string(appendEscaped(nil, s, true)) }
