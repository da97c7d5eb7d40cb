package component

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

// scripted is a connection whose server side is a fixed script.
type scripted struct {
	in  io.Reader
	out bytes.Buffer
}

func (s *scripted) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s *scripted) Write(p []byte) (int, error) { return s.out.Write(p) }

const serverHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='presence.test' id='stream-1'>`

// TestHandshakeAndStanzas: the handshake answers the server's stream id
// with hex(sha1(id + secret)) (XEP-0114 §3); then the stanzas come in
// order, whitespace between them is skipped, and the server's closing tag
// ends the stream.
func TestHandshakeAndStanzas(t *testing.T) {
	conn := &scripted{in: strings.NewReader(serverHeader + `<handshake/>` +
		`<presence from='a@example.org/x' to='h@presence.test'/> ` + "\n" +
		`<iq type='get' id='1' from='a@example.org/x' to='presence.test'><ping xmlns='urn:xmpp:ping'/></iq>` +
		`</stream:stream>`)}
	st, err := handshake(conn, "presence.test", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum([]byte("stream-1s3cret"))
	want := "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='presence.test'>" +
		"<handshake>" + hex.EncodeToString(sum[:]) + "</handshake>"
	if got := conn.out.String(); got != want {
		t.Fatalf("the component wrote\n%s\nwant\n%s", got, want)
	}
	var got []parsed
	err = st.read(func(p parsed) { got = append(got, p) })
	if !errors.Is(err, errStreamClosed) {
		t.Fatalf("read ended with %v, want errStreamClosed", err)
	}
	if len(got) != 2 || got[0].n.name.Local != "presence" {
		t.Fatalf("got %d stanzas (%v), want the presence and the iq", len(got), got)
	}
	if n := got[1].n; n.name.Local != "iq" || n.name.Space != nsStream || n.child(nsPing, "ping") == nil {
		t.Fatalf("second stanza read as %s", n)
	}
}

// TestHandshakeRefused: a stream error instead of <handshake/> fails the
// handshake with its condition.
func TestHandshakeRefused(t *testing.T) {
	conn := &scripted{in: strings.NewReader(serverHeader +
		`<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)}
	_, err := handshake(conn, "presence.test", "wrong")
	if err == nil || !strings.Contains(err.Error(), "not-authorized") {
		t.Fatalf("handshake = %v, want a refusal naming not-authorized", err)
	}
}

// TestStreamErrorEndsReading: a stream error after the handshake ends the
// stream with its condition; malformed XML ends it too, never reaching
// the engine.
func TestStreamErrorEndsReading(t *testing.T) {
	for _, tt := range []struct{ name, script, want string }{
		{"stream error", `<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>bye</text></stream:error>`, "system-shutdown: bye"},
		{"malformed", `<presence from='a@b' to='c'><show>away</presence>`, "syntax"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn := &scripted{in: strings.NewReader(serverHeader + `<handshake/>` + tt.script)}
			st, err := handshake(conn, "presence.test", "x")
			if err != nil {
				t.Fatal(err)
			}
			handed := 0
			err = st.read(func(parsed) { handed++ })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("read = %v, want an error containing %q", err, tt.want)
			}
			if handed != 0 {
				t.Fatalf("%d stanzas handed to the engine", handed)
			}
		})
	}
}
