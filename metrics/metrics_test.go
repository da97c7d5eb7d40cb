package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"presenced/component"
	"presenced/roster"
	"presenced/storage"
)

// fakes stand for the roster, the component and the web side.
type fakes struct {
	mu      sync.Mutex
	counts  roster.Counts
	stats   component.Stats
	streams int
}

func (f *fakes) Counts() roster.Counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts
}

func (f *fakes) Stats() component.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func (f *fakes) Streams() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams
}

// scrape gets the handler's answer and parses it as Prometheus' text
// format.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type = %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the series of name whose kind label is kind
// ("" for a metric without labels).
func value(t *testing.T, fams map[string]*dto.MetricFamily, name, kind string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.GetMetric() {
		got := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == "kind" {
				got = l.GetValue()
			}
		}
		if got != kind {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no series of %s with kind %q", name, kind)
	return 0
}

var (
	received = []string{"message", "presence", "iq", "other"}
	sent     = []string{"presence", "message", "iq"}
	plain    = []string{
		"presenced_notifications_queued",
		"presenced_storage_seconds",
		"presenced_storage_errors_total",
		"presenced_accounts",
		"presenced_handles",
		"presenced_subscriptions",
		"presenced_pending_requests",
		"presenced_connected",
		"presenced_reconnects_total",
		"presenced_web_streams",
	}
)

func TestMetrics(t *testing.T) {
	f := &fakes{}
	m := New()
	m.Watch(Sources{Roster: f, Component: f, WebStreams: f.Streams})
	h := m.Handler()

	fams := scrape(t, h)
	for _, k := range received {
		if v := value(t, fams, "presenced_stanzas_received_total", k); v != 0 {
			t.Errorf("received %s = %v at start", k, v)
		}
	}
	for _, k := range sent {
		if v := value(t, fams, "presenced_stanzas_sent_total", k); v != 0 {
			t.Errorf("sent %s = %v at start", k, v)
		}
	}
	if n := len(fams["presenced_stanzas_sent_total"].GetMetric()); n != len(sent) {
		t.Errorf("presenced_stanzas_sent_total has %d series, want %d", n, len(sent))
	}
	for _, name := range plain {
		if v := value(t, fams, name, ""); v != 0 {
			t.Errorf("%s = %v at start", name, v)
		}
	}
	if fams["go_goroutines"] == nil || fams["process_cpu_seconds_total"] == nil && fams["process_start_time_seconds"] == nil {
		t.Errorf("the Go and process collectors are missing: %v", names(fams))
	}

	// Bump every source.
	f.mu.Lock()
	f.counts = roster.Counts{Accounts: 2, Handles: 3, Subscriptions: 5, Pending: 7, Queued: 11}
	f.stats = component.Stats{
		Received:   component.Kinds{Message: 1, Presence: 2, IQ: 3, Other: 4},
		Sent:       component.Kinds{Message: 5, Presence: 6, IQ: 7},
		Reconnects: 8,
		Connected:  true,
	}
	f.streams = 9
	f.mu.Unlock()
	m.ObserveCommit(3*time.Millisecond, nil)
	m.ObserveCommit(time.Second, errors.New("database is down"))
	m.ObserveCommit(time.Millisecond, &storage.OpError{Index: 0, Err: storage.ErrExists}) // refused by the rows: no storage error

	fams = scrape(t, h)
	want := map[string]float64{
		"presenced_accounts":             2,
		"presenced_handles":              3,
		"presenced_subscriptions":        5,
		"presenced_pending_requests":     7,
		"presenced_notifications_queued": 11,
		"presenced_connected":            1,
		"presenced_reconnects_total":     8,
		"presenced_web_streams":          9,
		"presenced_storage_seconds":      3, // observations
		"presenced_storage_errors_total": 1,
	}
	for name, v := range want {
		if got := value(t, fams, name, ""); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	for k, v := range map[string]float64{"message": 1, "presence": 2, "iq": 3, "other": 4} {
		if got := value(t, fams, "presenced_stanzas_received_total", k); got != v {
			t.Errorf("received %s = %v, want %v", k, got, v)
		}
	}
	for k, v := range map[string]float64{"message": 5, "presence": 6, "iq": 7} {
		if got := value(t, fams, "presenced_stanzas_sent_total", k); got != v {
			t.Errorf("sent %s = %v, want %v", k, got, v)
		}
	}
	hist := fams["presenced_storage_seconds"].GetMetric()[0].GetHistogram()
	if s := hist.GetSampleSum(); s < 1.003 || s > 1.0041 {
		t.Errorf("presenced_storage_seconds sum = %v, want 1.004", s)
	}

	// No label but kind, and that from a fixed set, on presenced's own
	// metrics; the Go and process collectors keep theirs.
	kinds := map[string]bool{"message": true, "presence": true, "iq": true, "other": true}
	for name, fam := range fams {
		if !strings.HasPrefix(name, "presenced_") {
			if !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
				t.Errorf("metric %s comes from neither presenced nor the Go and process collectors", name)
			}
			continue
		}
		for _, mt := range fam.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() != "kind" || !kinds[l.GetValue()] {
					t.Errorf("%s has label %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	for _, name := range append(plain, "presenced_stanzas_received_total", "presenced_stanzas_sent_total") {
		if fams[name] == nil {
			t.Errorf("no metric %s", name)
		}
	}
}

// TestMetricsUnwatched: before Watch, only the storage metrics and the Go
// and process collectors are served, and they parse.
func TestMetricsUnwatched(t *testing.T) {
	fams := scrape(t, New().Handler())
	for name := range fams {
		if strings.HasPrefix(name, "presenced_") && name != "presenced_storage_seconds" && name != "presenced_storage_errors_total" {
			t.Errorf("unexpected %s before Watch", name)
		}
	}
	if fams["presenced_storage_seconds"] == nil {
		t.Errorf("no presenced_storage_seconds: %v", names(fams))
	}
}

func names(fams map[string]*dto.MetricFamily) string {
	var out []string
	for n := range fams {
		out = append(out, n)
	}
	return fmt.Sprint(out)
}
