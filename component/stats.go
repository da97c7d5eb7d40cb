package component

import "sync/atomic"

// Stats are the component's counters, for monitoring.
type Stats struct {
	// Received counts the stanzas read from the XMPP server, by kind
	// (Other: any other element).
	Received Kinds
	// Sent counts the stanzas rendered for the XMPP server while
	// connected (fan-out, probes, replies), by kind; those rendered when
	// the connection is lost before they are written count too.
	Sent Kinds
	// Reconnects counts the connections established after the first.
	Reconnects uint64
	// Connected reports whether a stream to the XMPP server is
	// established (what Ready reads).
	Connected bool
}

// Kinds are counts of stanzas by kind.
type Kinds struct {
	Message, Presence, IQ, Other uint64
}

// The kinds of stanzas counted.
const (
	kindMessage = iota
	kindPresence
	kindIQ
	kindOther
	nKinds
)

// kindCounts counts stanzas by kind: one goroutine writes, Stats reads.
type kindCounts [nKinds]atomic.Uint64

func kindOf(local string) int {
	switch local {
	case "message":
		return kindMessage
	case "presence":
		return kindPresence
	case "iq":
		return kindIQ
	}
	return kindOther
}

func (k *kindCounts) load() Kinds {
	return Kinds{
		Message:  k[kindMessage].Load(),
		Presence: k[kindPresence].Load(),
		IQ:       k[kindIQ].Load(),
		Other:    k[kindOther].Load(),
	}
}

// Stats returns the component's counters. It may be called from any
// goroutine.
func (c *Component) Stats() Stats {
	st := Stats{
		Received:  c.received.load(),
		Sent:      c.sent.load(),
		Connected: c.up.Load(),
	}
	if n := c.connects.Load(); n > 1 {
		st.Reconnects = n - 1
	}
	return st
}
