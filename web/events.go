package web

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"time"

	"presenced/roster"
)

// names returns the names of ?h=NAME,NAME,… as asked, without repeats, in
// the order asked, or a one-line reason to answer 400. Empty names (a
// trailing comma) are dropped; a name that cannot be prepared is kept: it
// stays off-line, like one nobody holds.
func names(r *http.Request) ([]string, string) {
	var out []string
	seen := make(map[string]bool)
	n := 0
	for _, v := range r.URL.Query()["h"] {
		for _, name := range strings.Split(v, ",") {
			if name == "" {
				continue
			}
			if n++; n > maxNames {
				return nil, "too many names: at most 100"
			}
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	if len(out) == 0 {
		return nil, "no names: ?h=NAME,NAME,…"
	}
	return out, ""
}

// stream is what one /events request shows: the names asked, and for each
// prepared handle the names asking for it (two spellings may prepare to
// the same handle; each gets its events, under its own name).
type stream struct {
	asked   []string            // the names asked, in order
	handle  []string            // handle[i]: asked[i] prepared, or "" if none
	handles []string            // distinct, prepared
	byName  map[string][]string // handle → names asked
}

func (s *Server) newStream(asked []string) *stream {
	st := &stream{asked: asked, handle: make([]string, len(asked)), byName: make(map[string][]string)}
	for i, n := range asked {
		h := s.prepare(n)
		st.handle[i] = h
		if h == "" {
			continue
		}
		if _, ok := st.byName[h]; !ok {
			st.handles = append(st.handles, h)
		}
		st.byName[h] = append(st.byName[h], n)
	}
	return st
}

// pingEvent is what a stream sends when nothing changed for a while: an
// event of its own type, which a page sees (a comment it would not), so
// that it can tell a stream that went quiet from one that died without a
// word (its server's host gone); proxies and browsers keep it open too.
const pingEvent = "event: ping\ndata: {}\n\n"

// event appends one Server-Sent Event: the JSON of /status/NAME.json, as
// one data line (JSON holds no raw newline), of the default type.
func event(buf *bytes.Buffer, name string, st roster.WebStatus) {
	buf.WriteString("data: ")
	buf.Write(statusJSON(name, st))
	buf.WriteString("\n\n")
}

// events answers /events?h=NAME,NAME,…: the status of each name now, then
// each change, as Server-Sent Events, until the client goes away or the
// server shuts down.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	asked, why := names(r)
	if why != "" {
		http.Error(w, why, http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodHead {
		// The headers say all a HEAD asks; a stream that writes nothing
		// would hold its slot until the client closed the connection.
		streamHeaders(w.Header())
		w.WriteHeader(http.StatusOK)
		return
	}
	client, ok := s.clients.take(r)
	if !ok {
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many live streams from one client", http.StatusServiceUnavailable)
		return
	}
	defer s.clients.give(client)
	if s.streams.Add(1) > s.maxStreams {
		s.streams.Add(-1)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many live streams", http.StatusServiceUnavailable)
		return
	}
	defer s.streams.Add(-1)

	st := s.newStream(asked)
	b, now := s.statuses.subscribe(st.handles)
	defer s.statuses.unsubscribe(b)
	// What the client was last sent of each handle: a status that went
	// away and came back between two wake-ups is not sent again.
	sent := make(map[string]roster.WebStatus, len(st.handles))
	for i, h := range st.handles {
		sent[h] = now[i]
	}

	// The server's ReadTimeout does not cut the stream: net/http clears
	// the read deadline for its background read of a request without a
	// body (which is how the request's context learns that the client
	// went away). Its WriteTimeout would: send sets a deadline per write.
	rc := http.NewResponseController(w)
	streamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)

	var buf bytes.Buffer
	for i, n := range st.asked {
		stat := roster.WebOffline
		if h := st.handle[i]; h != "" {
			stat = sent[h]
		}
		event(&buf, n, stat)
	}
	if !s.send(w, rc, &buf, writeTimeout) {
		return
	}
	ka := time.NewTicker(s.keepAlive)
	defer ka.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.quit:
			s.sayOffline(w, rc, &buf, st, sent)
			return
		case <-ka.C:
			buf.WriteString(pingEvent)
		case <-b.notify:
			changed := b.take()
			for _, h := range st.handles { // in the order asked
				stat, ok := changed[h]
				if !ok || stat == sent[h] {
					continue
				}
				sent[h] = stat
				for _, n := range st.byName[h] {
					event(&buf, n, stat)
				}
			}
			if buf.Len() == 0 {
				continue
			}
		}
		if !s.send(w, rc, &buf, writeTimeout) {
			return
		}
	}
}

func streamHeaders(hd http.Header) {
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
	hd.Set("X-Content-Type-Options", "nosniff")
}

// sayOffline ends a stream as the server shuts down: each name not
// already shown off-line is sent off-line, since nothing vouches for its
// status once the server is gone (the page would otherwise keep showing
// the last one). The write has a short deadline of its own, so that a
// client that does not read cannot hold the shutdown up.
func (s *Server) sayOffline(w http.ResponseWriter, rc *http.ResponseController, buf *bytes.Buffer, st *stream, sent map[string]roster.WebStatus) {
	for _, h := range st.handles {
		if sent[h] == roster.WebOffline {
			continue
		}
		for _, n := range st.byName[h] {
			event(buf, n, roster.WebOffline)
		}
	}
	if buf.Len() > 0 {
		s.send(w, rc, buf, lastWriteTimeout)
	}
}

// maxKeptBuffer is the most a stream keeps of its buffer between writes:
// its first events may take 100 names' worth, a change a few.
const maxKeptBuffer = 4 << 10

// emptied empties buf, and lets go of its memory if it grew past
// maxKeptBuffer, so that 1,000 streams do not each hold their largest.
func emptied(buf *bytes.Buffer) {
	if buf.Cap() > maxKeptBuffer {
		*buf = bytes.Buffer{}
		return
	}
	buf.Reset()
}

// send writes and flushes buf, then empties it. Each write gets its own
// deadline in place of the server's WriteTimeout, which counts from the
// start of the request and would cut every stream after it; a client
// that does not read for that long is dropped. It reports whether the
// stream may go on.
func (s *Server) send(w http.ResponseWriter, rc *http.ResponseController, buf *bytes.Buffer, timeout time.Duration) bool {
	defer emptied(buf)
	if err := rc.SetWriteDeadline(time.Now().Add(timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return false
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return false
	}
	return rc.Flush() == nil
}
