package component

import (
	"testing"
	"time"
)

// TestStats: the counters move as stanzas flow and the connection comes
// and goes.
func TestStats(t *testing.T) {
	tc := startTestComponent(t, "")
	before := tc.c.Stats()
	if !before.Connected || before.Reconnects != 0 {
		t.Fatalf("Stats after connecting = %+v", before)
	}
	id := nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><ping xmlns='%s'/></iq>`, id, alice, testDomain, nsPing)
	tc.expect("ping", isReplyTo(id))
	tc.send(`<message from='%s/pc' to='h@%s'><body>hi</body></message>`, carol, testDomain)
	tc.expect("message error", isStanza("message", "error", "", carol+"/pc"))
	tc.send(`<presence from='%s/pc' to='%s' type='probe'/>`, carol, testDomain)
	tc.send(`<other xmlns='jabber:component:accept'/>`)
	id = nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><ping xmlns='%s'/></iq>`, id, alice, testDomain, nsPing)
	tc.expect("ping", isReplyTo(id))
	st := tc.c.Stats()
	got := st.Received
	got.IQ -= before.Received.IQ
	got.Message -= before.Received.Message
	got.Presence -= before.Received.Presence
	got.Other -= before.Received.Other
	if got != (Kinds{IQ: 2, Message: 1, Presence: 1, Other: 1}) {
		t.Fatalf("received since = %+v, want 2 iq, 1 message, 1 presence, 1 other", got)
	}
	if st.Sent.IQ-before.Sent.IQ != 2 || st.Sent.Message-before.Sent.Message != 1 {
		t.Fatalf("sent = %+v, before %+v: want 2 iq and 1 message more", st.Sent, before.Sent)
	}

	connected := tc.c.Connected()
	tc.dropConnection()
	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		t.Fatal("no reconnection")
	}
	deadline := time.Now().Add(5 * time.Second)
	for st = tc.c.Stats(); !st.Connected && time.Now().Before(deadline); st = tc.c.Stats() {
		time.Sleep(time.Millisecond)
	}
	if !st.Connected || st.Reconnects != 1 {
		t.Fatalf("Stats after a reconnection = %+v, want connected, 1 reconnect", st)
	}
	tc.stop()
	if st := tc.c.Stats(); st.Connected {
		t.Fatalf("Stats after stopping = %+v, want not connected", st)
	}
}
