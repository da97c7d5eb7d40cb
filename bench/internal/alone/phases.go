package alone

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// watchdog ends a phase that stops making progress: its abort channel is
// closed when progress() has not changed for stall, when ctx ends, when the
// link ends or when presenced exits. why then says which.
type watchdog struct {
	abort chan struct{}
	stop  chan struct{}
	why   atomic.Value // error
}

// watch starts a watchdog; call end when the phase is over.
func watch(ctx context.Context, l *link, c *child, stall time.Duration, progress func() int64) *watchdog {
	w := &watchdog{abort: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		last, since := progress(), time.Now()
		fail := func(err error) {
			w.why.Store(err)
			close(w.abort)
		}
		for {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				fail(ctx.Err())
				return
			case <-l.ended:
				fail(fmt.Errorf("stream ended: %v", l.err))
				return
			case <-c.exited:
				fail(fmt.Errorf("presenced exited"))
				return
			case <-tick.C:
				if n := progress(); n != last {
					last, since = n, time.Now()
				} else if time.Since(since) > stall {
					fail(fmt.Errorf("no progress for %v", stall))
					return
				}
			}
		}
	}()
	return w
}

// err is why the watchdog aborted.
func (w *watchdog) err() error {
	if e, ok := w.why.Load().(error); ok {
		return e
	}
	return fmt.Errorf("aborted")
}

// end stops the watchdog.
func (w *watchdog) end() { close(w.stop) }

// addr is a stanza's handle and contact indexes, when it goes from a handle
// hJ@domain to a contact cK@example.net.
func addr(el []byte, handles, contacts int) (j, k int, ok bool) {
	if !bytes.Equal(elemName(el), []byte("presence")) {
		return 0, 0, false
	}
	j, ok1 := jidIndex(attr(el, "from"), 'h', domain, handles)
	k, ok2 := jidIndex(attr(el, "to"), 'c', contactDomain, contacts)
	return j, k, ok1 && ok2
}

// storm is the handler of the subscribe and probe storms: it counts the
// first answer of each subscription, releases a window slot for it and
// closes done when every subscription has been answered.
type storm struct {
	probe              bool // answers are presences, not 'subscribed'
	handles, contacts  int
	seen               []bool
	slots              chan struct{} // one token per request in flight
	room               chan struct{} // signalled when the window has drained to lowWater
	lowWater           int
	answered, failed   atomic.Int64
	dups, other, extra atomic.Int64 // repeated answers; unrelated stanzas; presences after 'subscribed'
	done               chan struct{}
}

func newStorm(probe bool, handles, contacts, window int) *storm {
	return &storm{
		probe: probe, handles: handles, contacts: contacts,
		seen:     make([]bool, handles*contacts),
		slots:    make(chan struct{}, window),
		room:     make(chan struct{}, 1),
		lowWater: window - max(1, window/8),
		done:     make(chan struct{}),
	}
}

// stanza implements handler.
func (s *storm) stanza(el []byte) {
	j, k, ok := addr(el, s.handles, s.contacts)
	if !ok {
		s.other.Add(1)
		return
	}
	typ := string(attr(el, "type"))
	var fail bool
	switch {
	case typ == "unsubscribed" || typ == "error":
		fail = true
	case s.probe && (typ == "" || typ == "unavailable"):
	case !s.probe && typ == "subscribed":
	case !s.probe && (typ == "" || typ == "unavailable"):
		s.extra.Add(1) // the presence that follows 'subscribed'
		return
	default:
		s.other.Add(1)
		return
	}
	i := j*s.contacts + k
	if s.seen[i] {
		s.dups.Add(1)
		return
	}
	s.seen[i] = true
	if fail {
		s.failed.Add(1)
	}
	select {
	case <-s.slots:
		if len(s.slots) == s.lowWater {
			select {
			case s.room <- struct{}{}:
			default:
			}
		}
	default:
	}
	if s.answered.Add(1) == int64(len(s.seen)) {
		close(s.done)
	}
}

// stormResult is what one storm measured.
type stormResult struct {
	n        int
	wall     time.Duration
	cpu      time.Duration // presenced's
	self     time.Duration // the harness's
	failed   int64
	dups     int64
	extra    int64
	notified time.Duration // until every 'subscribed' was followed by a presence (subscribe storm)
}

// runStorm sends typ from every contact to every handle, contact-major, with
// at most window requests unanswered, and waits for every answer. When the
// window is full it flushes and waits until it has drained by an eighth
// before writing again, so that the harness wakes and writes once per batch
// rather than once per answer.
func runStorm(ctx context.Context, l *link, c *child, o *options, typ string) (stormResult, error) {
	s := newStorm(typ == "probe", o.handles, o.contacts, o.window)
	l.use(s)
	wd := watch(ctx, l, c, o.stall, s.answered.Load)
	defer wd.end()
	cpu0, err := cpuOf(c)
	if err != nil {
		return stormResult{}, err
	}
	self0 := selfCPU()
	t0 := time.Now()
	for k := 0; k < o.contacts; k++ {
		for j := 0; j < o.handles; j++ {
			select {
			case s.slots <- struct{}{}:
			default:
				if err := l.w.Flush(); err != nil {
					return stormResult{}, fmt.Errorf("%s storm: write: %w", typ, err)
				}
				select {
				case <-s.room:
				case <-wd.abort:
					return stormResult{}, fmt.Errorf("%s storm: %d of %d answered: %w", typ, s.answered.Load(), len(s.seen), wd.err())
				}
				select {
				case s.slots <- struct{}{}:
				case <-wd.abort:
					return stormResult{}, fmt.Errorf("%s storm: %d of %d answered: %w", typ, s.answered.Load(), len(s.seen), wd.err())
				}
			}
			l.contactPresence(typ, k, j)
		}
	}
	if err := l.w.Flush(); err != nil {
		return stormResult{}, fmt.Errorf("%s storm: write: %w", typ, err)
	}
	select {
	case <-s.done:
	case <-wd.abort:
		return stormResult{}, fmt.Errorf("%s storm: %d of %d answered: %w", typ, s.answered.Load(), len(s.seen), wd.err())
	}
	r := stormResult{n: len(s.seen), wall: time.Since(t0)}
	if !s.probe {
		// The presence that follows each 'subscribed' is not part of the
		// rate, but it is work presenced does for the subscribe: wait for
		// it (bounded) inside the CPU window.
		for deadline := time.Now().Add(o.stall); s.extra.Load() < int64(r.n) && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		r.notified = time.Since(t0)
	}
	cpu1, err := cpuOf(c)
	if err != nil {
		return stormResult{}, err
	}
	r.cpu, r.self = cpu1-cpu0, selfCPU()-self0
	l.waitQuiet(300*time.Millisecond, o.stall)
	r.failed, r.dups, r.extra = s.failed.Load(), s.dups.Load(), s.extra.Load()
	return r, nil
}

// fanout is the handler of the owner fan-out: it counts, for the current
// round, the presences from a handle to a contact carrying the round's show,
// each subscription once. The round number and its count share one word, so
// that a stanza of the previous round read while the round switches cannot
// count towards the new one.
type fanout struct {
	handles, contacts int
	seen              []uint8      // round+1 that last counted each subscription
	state             atomic.Int64 // round<<32 | this round's distinct presences
	dups, stray       atomic.Int64
	complete          chan struct{}
}

// newFanout is the handler for handles × contacts subscriptions.
func newFanout(handles, contacts int) *fanout {
	return &fanout{handles: handles, contacts: contacts, seen: make([]uint8, handles*contacts), complete: make(chan struct{}, 1)}
}

// begin switches to round, with nothing counted yet.
func (f *fanout) begin(round int) {
	f.state.Store(int64(round) << 32)
	select {
	case <-f.complete: // a timed-out round that completed late
	default:
	}
}

// current is the round and what it has counted so far.
func (f *fanout) current() (round int, count int64) {
	st := f.state.Load()
	return int(st >> 32), st & (1<<32 - 1)
}

// tally counts one presence towards round; false if the round has switched
// since.
func (f *fanout) tally(round int) bool {
	for {
		st := f.state.Load()
		if int(st>>32) != round {
			return false
		}
		if f.state.CompareAndSwap(st, st+1) {
			if st&(1<<32-1)+1 == int64(len(f.seen)) {
				select {
				case f.complete <- struct{}{}:
				default:
				}
			}
			return true
		}
	}
}

// showOf is the show a round's presences carry: none for round 0 (the
// owner comes on-line), then away and dnd in turn.
func showOf(round int) string {
	switch {
	case round == 0:
		return ""
	case round%2 == 1:
		return "away"
	default:
		return "dnd"
	}
}

// stanza implements handler.
func (f *fanout) stanza(el []byte) {
	j, k, ok := addr(el, f.handles, f.contacts)
	if !ok {
		return // the component's own presence to the owner, and the like
	}
	round, _ := f.current()
	if len(attr(el, "type")) != 0 || string(childText(el, "show")) != showOf(round) {
		f.stray.Add(1)
		return
	}
	i := j*f.contacts + k
	if f.seen[i] == uint8(round+1) {
		f.dups.Add(1)
		return
	}
	f.seen[i] = uint8(round + 1)
	if !f.tally(round) {
		f.stray.Add(1) // late: its round ended while it was read
	}
}

// fanoutResult is what the owner fan-out measured.
type fanoutResult struct {
	online   time.Duration   // round 0: the owner comes on-line
	rounds   []time.Duration // show changes that completed
	cpu      time.Duration   // presenced's, over the completed show-change rounds
	self     time.Duration   // the harness's, over the same rounds
	missing  int64
	dups     int64
	stray    int64
	timeouts int // rounds (round 0 included) that timed out, not in rounds
}

// maxRounds keeps round numbers within the fan-out's uint8 marks.
const maxRounds = 250

// runFanout makes the owner available, then changes its show o.rounds
// times, each round bounded by o.roundTimeout. Only completed show-change
// rounds enter the round times and the CPU, whose window per round opens
// just before the trigger and closes when the round is complete.
func runFanout(ctx context.Context, l *link, c *child, o *options) (fanoutResult, error) {
	f := newFanout(o.handles, o.contacts)
	l.use(f)
	var r fanoutResult
	for round := 0; round <= o.rounds; round++ {
		cpu0, err := cpuOf(c)
		if err != nil {
			return r, err
		}
		self0 := selfCPU()
		d, complete, err := fanoutRound(ctx, l, f, round, o.roundTimeout)
		if err != nil {
			return r, err
		}
		cpu1, err := cpuOf(c)
		if err != nil {
			return r, err
		}
		self1 := selfCPU()
		switch {
		case !complete:
			_, got := f.current()
			r.timeouts++
			r.missing += int64(len(f.seen)) - got
			l.waitQuiet(time.Second, o.roundTimeout) // let the late round drain, outside any window
		case round == 0:
			r.online = d
		default:
			r.rounds = append(r.rounds, d)
			r.cpu += cpu1 - cpu0
			r.self += self1 - self0
		}
	}
	l.waitQuiet(300*time.Millisecond, o.stall)
	r.dups, r.stray = f.dups.Load(), f.stray.Load()
	return r, nil
}

// fanoutRound switches f to round, writes the owner's presence of that
// round and waits until every subscription has it or timeout passes
// (complete false).
func fanoutRound(ctx context.Context, l *link, f *fanout, round int, timeout time.Duration) (time.Duration, bool, error) {
	f.begin(round)
	l.presence("", owner+"/"+ownerResource, domain, showOf(round))
	t0 := time.Now()
	if err := l.w.Flush(); err != nil {
		return 0, false, fmt.Errorf("fan-out: write: %w", err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-f.complete:
		return time.Since(t0), true, nil
	case <-timer.C:
		return time.Since(t0), false, nil
	case <-ctx.Done():
		return 0, false, ctx.Err()
	case <-l.ended:
		return 0, false, fmt.Errorf("fan-out round %d: stream ended: %v", round, l.err)
	}
}

// counter is a handler that only counts (start-up and shutdown).
type counter struct{ n atomic.Int64 }

func (c *counter) stanza([]byte) { c.n.Add(1) }
