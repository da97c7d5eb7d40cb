package component

import (
	"testing"
	"time"

	"presenced/roster"
)

// BenchmarkViewStanza measures what the engine pays per notification in
// this package: building a handle's presence and rendering it into the
// output buffer, for an available presence (show, status, caps) and an
// unavailable one.
func BenchmarkViewStanza(b *testing.B) {
	c, err := New(Config{Domain: testDomain, Server: "127.0.0.1:1", Secret: "x"}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	views := []roster.View{
		{Available: true, Status: "away", Text: "at lunch"},
		{Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	buf := make([]byte, 0, chunkSize)
	// What fan-out and probe answers use.
	b.Run("appendView", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			buf = c.appendView(buf[:0], "work", "contact@example.net", views[i%2])
		}
	})
	// What every other stanza uses: a tree, then rendered.
	b.Run("tree", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			buf = c.viewStanza("work", "contact@example.net", views[i%2]).appendXML(buf[:0])
		}
	})
}
