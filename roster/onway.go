package roster

import "slices"

// onWay tracks the writes of one row (a subscription, or a subscription
// request) on their way to storage. A removal decided meanwhile cancels
// them: none of them takes effect in memory, and the removal, queued after
// them, takes the row away again in storage. The removal itself is moot,
// and left unwritten (so a sender cannot grow the changes to be written
// again while storage fails), once every write it cancelled has failed.
//
// A row takes at most maxWritesOnWay writes at a time. A change asked for
// while it is full is held back (only the last one: each replaces the one
// before) and asked for again once the row's writes have ended, so that
// the sender's last wish is not lost.
type onWay struct {
	writes []*rowWrite
	held   *heldCall
}

// heldCall is a call held back by its row's bound: retry makes it again,
// drop tells its caller that nothing came of it.
type heldCall struct{ retry, drop func() }

// writesOnWay are the writes of one kind of row on their way, by handle
// and contact; an entry lives while a write of its row is on its way.
type writesOnWay map[pendingKey]*onWay

// maxWritesOnWay bounds the writes of one row on their way (cancelled
// ones included), so that a sender repeating a change and its undoing
// while storage commits cannot queue writes without end.
const maxWritesOnWay = 2

// full reports whether key's row takes no more writes for now.
func (m writesOnWay) full(key pendingKey) bool {
	w := m[key]
	return w != nil && len(w.writes) >= maxWritesOnWay
}

// holdBack holds a call back until the writes of key's row, which is
// full, have ended: then retry runs. The call held back before, if any,
// is dropped (memory holds one call per row, whatever a sender repeats).
func (m writesOnWay) holdBack(key pendingKey, retry, drop func()) {
	w := m[key]
	if w.held != nil {
		w.held.drop()
	}
	w.held = &heldCall{retry: retry, drop: drop}
}

// start starts a write of key's row.
func (m writesOnWay) start(key pendingKey) *rowWrite {
	w := m[key]
	if w == nil {
		w = &onWay{}
		m[key] = w
	}
	return w.start()
}

// end ends rw, a write of key's row, stored or not, and reports whether
// it was cancelled. It returns the call held back for the row, to be made
// once the caller has applied rw's outcome (a no-op if none, or if writes
// of the row are still on their way).
func (m writesOnWay) end(key pendingKey, rw *rowWrite, stored bool) (cancelled bool, again func()) {
	w := m[key]
	cancelled = w.end(rw, stored)
	if len(w.writes) > 0 {
		return cancelled, func() {}
	}
	delete(m, key)
	if w.held == nil {
		return cancelled, func() {}
	}
	return cancelled, w.held.retry
}

// rowWrite is one write on its way.
type rowWrite struct {
	// cancel is the removal decided while it was on its way, if any: the
	// first only, since a later one has nothing of it to remove that the
	// first does not.
	cancel *cancelled
}

// cancelled is a removal's account of the writes it cancelled.
type cancelled struct {
	onWay  int  // how many are still on their way
	stored bool // whether one of them was stored
}

func (w *onWay) start() *rowWrite {
	rw := &rowWrite{}
	w.writes = append(w.writes, rw)
	return rw
}

// end ends rw, stored or not, and reports whether it was cancelled.
func (w *onWay) end(rw *rowWrite, stored bool) bool {
	if i := slices.Index(w.writes, rw); i >= 0 {
		w.writes = slices.Delete(w.writes, i, i+1)
	}
	if c := rw.cancel; c != nil {
		c.onWay--
		c.stored = c.stored || stored
	}
	return rw.cancel != nil
}

// live reports whether a write on its way is not cancelled.
func (w *onWay) live() bool {
	return w != nil && slices.ContainsFunc(w.writes, func(rw *rowWrite) bool { return rw.cancel == nil })
}

// cancel cancels the writes on their way not cancelled yet, and drops
// the call held back (the removal is the sender's later wish), and
// returns the account of the removal that does, or nil if there are none.
func (w *onWay) cancel() *cancelled {
	if w != nil && w.held != nil {
		w.held.drop()
		w.held = nil
	}
	if !w.live() {
		return nil
	}
	c := &cancelled{}
	for _, rw := range w.writes {
		if rw.cancel == nil {
			rw.cancel = c
			c.onWay++
		}
	}
	return c
}

// moot reports whether the removal has nothing left to remove: every
// write it cancelled failed.
func (c *cancelled) moot() bool { return c.onWay == 0 && !c.stored }
