package main

// End-to-end scenarios of issue 10, the web side: a public handle's
// status over HTTP follows the owner's presence through the real servers,
// and a hiding owner, a hidden handle, a handle not public and a name
// nobody holds answer byte for byte alike.

import (
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var webScenarios = []scenario{
	{"WebStatus", testWebStatus},
	{"WebListInBrowser", testWebListInBrowser},
}

// webGet returns the status, the headers but Date, and the body of path.
func (w *world) webGet(path string) (int, http.Header, string) {
	w.t.Helper()
	resp, err := http.Get(w.web + path)
	if err != nil {
		w.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatalf("GET %s: %v", path, err)
	}
	resp.Header.Del("Date")
	return resp.StatusCode, resp.Header, string(b)
}

// answer is a response in one string: status, headers but Date, body.
func (w *world) answer(path string) string {
	code, h, body := w.webGet(path)
	var keys []string
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(http.StatusText(code))
	for _, k := range keys {
		b.WriteString("\n" + k + ": " + strings.Join(h[k], ","))
	}
	return b.String() + "\n\n" + body
}

// webStatusIs waits until handle h's JSON says st: the web follows the
// owner within a second (issue 10), polled here.
func (w *world) webStatusIs(h, st, desc string) {
	w.t.Helper()
	want := `{"handle":"` + h + `","status":"` + st + `"}` + "\n"
	deadline := time.Now().Add(wait)
	for {
		_, _, body := w.webGet("/status/" + h + ".json")
		if body == want {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: %s.json says %q, want %q", desc, h, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrape reads /metrics with the Prometheus text parser and returns the
// sum of each family's samples (counters and gauges).
func (w *world) scrape() map[string]float64 {
	w.t.Helper()
	resp, err := http.Get(w.metrics)
	if err != nil {
		w.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		w.t.Fatalf("/metrics does not parse: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			out[name] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}

func testWebStatus(w *world) {
	t := w.t
	// Not on the public side: its counters would tell which names exist.
	if code, _, _ := w.webGet("/metrics"); code != http.StatusNotFound {
		t.Fatalf("/metrics on the public HTTP side: %d, want 404", code)
	}
	before := w.scrape()
	if before["presenced_connected"] != 1 {
		t.Fatalf("presenced_connected = %v while connected", before["presenced_connected"])
	}
	if code, _, body := w.webGet("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, _, body := w.webGet("/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("readyz while connected: %d %q", code, body)
	}
	// Names of one length, so that their answers may be compared byte for
	// byte but for the name.
	h := randomName("webp")
	alice, _ := w.owner("webalice", h)
	hidden := randomName("webh")
	w.mustChatPrefix(alice, "add "+hidden+" open", "Added the handle ")
	off := randomName("webo") // public never
	w.mustChatPrefix(alice, "add "+off+" open", "Added the handle ")
	nobody := randomName("webn")

	w.webStatusIs(h, "offline", "a handle not public yet")
	w.mustChatPrefix(alice, "web "+h+" on", "Public on the web: ")
	w.mustChatPrefix(alice, "web "+hidden+" on", "Public on the web: ")
	w.webStatusIs(h, "available", "public, the owner on-line")
	alice.MustSend(t, `<presence><show>away</show></presence>`)
	w.webStatusIs(h, "away", "the owner away")
	alice.MustSend(t, `<presence><show>dnd</show></presence>`)
	w.webStatusIs(h, "busy", "the owner busy")
	w.mustChatPrefix(alice, "hide "+hidden, "Hidden: ")
	w.webStatusIs(hidden, "offline", "a hidden handle")

	// Off-line answers are one and the same, whatever the reason.
	ref := w.answer("/status/" + nobody + ".svg")
	for _, n := range []string{hidden, off} {
		if got := w.answer("/status/" + n + ".svg"); got != ref {
			t.Fatalf("%s.svg differs from a name nobody holds:\n%s\n---\n%s", n, got, ref)
		}
	}
	w.mustChat(alice, "status hiding", "You are hiding: all of your handles appear off-line.")
	w.webStatusIs(h, "offline", "the owner hiding")
	if got := w.answer("/status/" + h + ".svg"); got != ref {
		t.Fatalf("a hiding owner's badge differs from a name nobody holds:\n%s\n---\n%s", got, ref)
	}
	jsonOf := func(n string) string { return strings.ReplaceAll(w.answer("/status/"+n+".json"), n, "NAME") }
	for _, n := range []string{h, hidden, off} {
		if got, want := jsonOf(n), jsonOf(nobody); got != want {
			t.Fatalf("%s.json tells it from a name nobody holds:\n%s\n---\n%s", n, got, want)
		}
	}
	w.mustChatPrefix(alice, "status visible", "You are visible again")
	w.webStatusIs(h, "busy", "visible again")
	w.mustChatPrefix(alice, "web "+h+" off", "Off the web: ")
	w.webStatusIs(h, "offline", "taken off the web")

	// The counters moved with the stanzas of this scenario.
	after := w.scrape()
	for _, name := range []string{"presenced_stanzas_received_total", "presenced_stanzas_sent_total"} {
		if after[name] <= before[name] {
			t.Errorf("%s did not move: %v, then %v", name, before[name], after[name])
		}
	}
	if after["presenced_handles"] < before["presenced_handles"]+3 {
		t.Errorf("presenced_handles: %v, then %v, after adding three", before["presenced_handles"], after["presenced_handles"])
	}
}
