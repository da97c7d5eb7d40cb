package component

import (
	"bufio"
	"io"
	"sync/atomic"
	"time"

	"presenced/roster"
)

// The output path. The engine goroutine renders every stanza the component
// sends (fan-out, probe answers, replies) into one output buffer; one
// writer goroutine per connection writes what it is handed, so exactly one
// goroutine writes to the XMPP server. The engine hands its buffer over
// when it reaches chunkSize, or when it has nothing more to send right
// now: a wave of presences goes out in a few large writes, and a lone
// reply at once.
//
// mellium's Session is not used: it takes its locks and flushes once per
// stanza. The component writes the stream header and the handshake itself
// (stream.go), then only the writer writes, until the component writes the
// closing tag at shutdown, once the writer has stopped.

const (
	// chunkSize is the size at which the engine hands its buffer over.
	chunkSize = 32 << 10
	// chunksQueued is how many chunks may wait for the writer. When they
	// all wait, the engine waits too, and with it the reader.
	chunksQueued = 8
	// maxBuffers is how many output buffers a connection has: those
	// queued, the one the writer writes and the one the engine fills. They
	// go round, so a wave of presences makes no garbage, and the output in
	// memory stays under maxBuffers × (chunkSize plus a stanza).
	maxBuffers = chunksQueued + 2
	// writeBuffer is the writer's buffer: chunks that queued up while it
	// wrote are written together.
	writeBuffer = 64 << 10
	// drainTimeout bounds the wait for the writer at shutdown.
	drainTimeout = 10 * time.Second
)

// output is the component's roster.Sender. It is used on the engine
// goroutine only.
type output struct {
	c   *Component
	buf []byte
	w   *writer // nil while disconnected: everything sent is dropped
	// handed counts the chunks handed to the writers so far, over every
	// connection; a chunk's number is its place in that count.
	handed uint64
	// base is handed when w was attached: w's chunks are numbered from
	// base+1.
	base uint64
	// dropped is the Written of detached writers: nothing sent while
	// disconnected is written, so it stays put then.
	dropped uint64
	// sent counts what was rendered, by kind: plain counts, as only the
	// engine writes them, published to the Component's (Stats) at each
	// Flush, so that the fan-out pays no atomic operation per stanza.
	sent [nKinds]uint64
}

// publish makes the counts of what was rendered those Stats reads.
func (o *output) publish() {
	for k, n := range o.sent {
		o.c.sent[k].Store(n)
	}
}

var _ roster.Sender = (*output)(nil)

// write renders n into the buffer.
func (o *output) write(n *node) {
	if o.w == nil {
		return
	}
	o.sent[kindOf(n.name.Local)]++
	o.buf = n.appendXML(o.buf)
	if len(o.buf) >= chunkSize {
		o.Flush()
	}
}

// Presence renders the presence of handle for contact straight into the
// buffer (appendView): no tree, no allocation.
func (o *output) Presence(handle, contact string, v roster.View) {
	if o.w == nil {
		return
	}
	o.sent[kindPresence]++
	o.buf = o.c.appendView(o.buf, handle, contact, v)
	if len(o.buf) >= chunkSize {
		o.Flush()
	}
}

func (o *output) Unsubscribed(handle, contact string) {
	o.write(presence("unsubscribed", o.c.handleBare(handle), contact))
}

// Flush hands the buffer to the writer. It blocks while the writer's queue
// is full.
func (o *output) Flush() {
	if o.w == nil || len(o.buf) == 0 {
		return
	}
	o.publish()
	o.handed++
	o.w.chunks <- o.buf
	o.buf = o.w.buffer()
}

// Mark is the number of the chunk that holds the last stanza sent.
func (o *output) Mark() uint64 {
	if len(o.buf) > 0 {
		return o.handed + 1
	}
	return o.handed
}

// Written is the number of the last chunk written to the connection.
func (o *output) Written() uint64 {
	if o.w == nil {
		return o.dropped
	}
	return o.base + o.w.written.Load()
}

// attach makes w the writer of the new connection.
func (o *output) attach(w *writer) {
	o.w, o.base = w, o.handed
	o.buf = o.buf[:0]
}

// detach ends the writer of a lost connection; what it did not write is
// dropped.
func (o *output) detach() {
	if o.w == nil {
		return
	}
	o.dropped = o.Written()
	o.publish()
	close(o.w.chunks)
	o.w = nil
	o.buf = o.buf[:0]
}

// drain hands the buffer over and waits until the writer wrote everything
// or failed, or drainTimeout passed. It reports whether all was written.
func (o *output) drain() bool {
	if o.w == nil {
		return false
	}
	o.Flush()
	want := o.handed - o.base
	deadline := time.NewTimer(drainTimeout)
	defer deadline.Stop()
	for o.w.written.Load() < want {
		select {
		case <-o.w.progress:
		case <-o.w.failed:
			return false
		case <-deadline.C:
			return false
		}
	}
	return true
}

// writer is the one goroutine that writes to a connection.
type writer struct {
	dst      io.Writer
	chunks   chan []byte
	free     chan []byte   // written chunks, for the engine to fill again
	made     int           // buffers made so far; the engine's
	progress chan struct{} // a signal after each flush
	failed   chan struct{} // closed when a write failed
	written  atomic.Uint64 // chunks written and flushed
	err      error         // the write error; read after failed is closed
	done     chan struct{} // closed when run returns
}

func newWriter(dst io.Writer) *writer {
	return &writer{
		dst:    dst,
		chunks: make(chan []byte, chunksQueued),
		// The buffers made here and the one the engine brings from before:
		// the writer never waits to give one back.
		free:     make(chan []byte, maxBuffers+1),
		progress: make(chan struct{}, 1),
		failed:   make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// buffer returns an empty buffer for the engine to fill: one the writer
// has written, or a new one while fewer than maxBuffers exist, or else the
// next one the writer gives back. It is called on the engine goroutine.
func (w *writer) buffer() []byte {
	select {
	case b := <-w.free:
		return b[:0]
	default:
	}
	if w.made < maxBuffers {
		w.made++
		return make([]byte, 0, chunkSize+chunkSize/4)
	}
	return (<-w.free)[:0]
}

// run writes the chunks it is handed, flushing whenever none is waiting,
// until the channel is closed. After a failure it goes on taking chunks,
// dropping them, so the engine never waits for a dead connection.
func (w *writer) run() {
	defer close(w.done)
	bw := bufio.NewWriterSize(w.dst, writeBuffer)
	var n uint64
	for chunk := range w.chunks {
		if w.err != nil {
			w.free <- chunk
			continue
		}
		_, err := bw.Write(chunk)
		n++
		w.free <- chunk // never blocks: free holds every buffer there is
		if err == nil && len(w.chunks) == 0 {
			err = bw.Flush()
			if err == nil {
				w.written.Store(n)
				select {
				case w.progress <- struct{}{}:
				default:
				}
			}
		}
		if err != nil {
			w.err = err
			close(w.failed)
		}
	}
}
