package roster

import "slices"

// onWay tracks the writes of one row (a subscription, or a subscription
// request) on their way to storage. A removal decided meanwhile cancels
// them: none of them takes effect in memory, and the removal, queued after
// them, takes the row away again in storage. The removal itself is moot,
// and left unwritten (so a sender cannot grow the changes to be written
// again while storage fails), once every write it cancelled has failed.
type onWay struct {
	writes []*rowWrite
}

// writesOnWay are the writes of one kind of row on their way, by handle
// and contact; an entry lives while a write of its row is on its way.
type writesOnWay map[pendingKey]*onWay

// maxWritesOnWay bounds the writes of one row on their way (cancelled
// ones included), so that a sender repeating a change and its undoing
// while storage commits cannot queue writes without end.
const maxWritesOnWay = 2

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
// it was cancelled.
func (m writesOnWay) end(key pendingKey, rw *rowWrite, stored bool) bool {
	w := m[key]
	cancelled := w.end(rw, stored)
	if len(w.writes) == 0 {
		delete(m, key)
	}
	return cancelled
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

// cancel cancels the writes on their way not cancelled yet and returns
// the account of the removal that does, or nil if there are none.
func (w *onWay) cancel() *cancelled {
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
