package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"presenced/component"
	"presenced/metrics"
	"presenced/roster"
	"presenced/storage"
)

// TestStartWebServesMetrics: with [http] metrics_listen set, /metrics is
// served there (and not on the public listener), read from the roster and
// the component, and the storage histogram counts the roster's
// transactions.
func TestStartWebServesMetrics(t *testing.T) {
	ctx := t.Context()
	store, err := storage.OpenSQLite(ctx, filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m := metrics.New()
	r, err := roster.New(ctx, store, roster.Options{ObserveCommit: m.ObserveCommit})
	if err != nil {
		t.Fatal(err)
	}
	comp, err := component.New(component.Config{Domain: "presence.test", Server: "127.0.0.1:1"}, r, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	addr, public := free(), free()
	stop, err := startWeb(ctx, HTTPConfig{Listen: public, MetricsListen: addr}, r, comp, m, func(error) {}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if resp, err := http.Get("http://" + public + "/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the public listener: %v, %v; want 404", resp, err)
	}
	engine := make(chan struct{})
	go func() { defer close(engine); r.Run() }()
	defer func() { r.Stop(); <-engine }()
	added := make(chan error, 1)
	r.Do(func() {
		r.AddHandle("alice@example.org", "h", storage.PolicyOpen, func(err error) { added <- err })
	})
	if err := <-added; err != nil {
		t.Fatal(err)
	}

	var body io.ReadCloser
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /metrics: %s", resp.Status)
			}
			body = resp.Body
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	defer body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(body)
	if err != nil {
		t.Fatal(err)
	}
	gauge := func(name string) float64 {
		f := fams[name]
		if f == nil || len(f.GetMetric()) != 1 {
			t.Fatalf("metric %s: %v", name, f)
		}
		return f.GetMetric()[0].GetGauge().GetValue()
	}
	if got := gauge("presenced_handles"); got != 1 {
		t.Errorf("presenced_handles = %v, want 1", got)
	}
	if got := gauge("presenced_accounts"); got != 1 {
		t.Errorf("presenced_accounts = %v, want 1", got)
	}
	if got := gauge("presenced_connected"); got != 0 {
		t.Errorf("presenced_connected = %v, want 0 (never connected)", got)
	}
	if got := gauge("presenced_web_streams"); got != 0 {
		t.Errorf("presenced_web_streams = %v, want 0", got)
	}
	if f := fams["presenced_storage_seconds"]; f == nil || f.GetMetric()[0].GetHistogram().GetSampleCount() == 0 {
		t.Errorf("presenced_storage_seconds counted no transaction: %v", f)
	}
	if f := fams["presenced_stanzas_received_total"]; f == nil || len(f.GetMetric()) != 4 {
		t.Errorf("presenced_stanzas_received_total: %v", f)
	}
}
