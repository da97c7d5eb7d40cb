package component

import (
	"encoding/xml"
	"io"
	"testing"
	"time"

	"presenced/roster"
)

// BenchmarkViewStanza measures what the outbox pays per notification in
// this package: rendering a handle's presence and encoding it as XML, for
// an available presence (show, status, caps) and an unavailable one.
func BenchmarkViewStanza(b *testing.B) {
	c, err := New(Config{Domain: testDomain, Server: "127.0.0.1:1", Secret: "x"}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	views := []roster.View{
		{Available: true, Status: "away", Text: "at lunch"},
		{Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	enc := xml.NewEncoder(io.Discard)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := c.viewStanza("work", "contact@example.net", views[i%2]).TokenReader()
		for {
			tok, err := r.Token()
			if err != nil {
				break
			}
			if err := enc.EncodeToken(tok); err != nil {
				b.Fatal(err)
			}
		}
		if err := enc.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}
