// Package metrics is presenced's Prometheus metrics, served by Handler in
// the text format: presenced's own names start with presenced_, and their
// only label, kind, takes its values from small fixed sets; the Go
// runtime's and the process's standard collectors keep their standard
// go_ and process_ names. Nothing is labelled by account, handle or
// contact.
//
// The metrics are read when scraped from what the parts of presenced keep
// for them: the roster's Counts and the component's Stats are atomics
// that their owners update as things happen, so a scrape never touches
// the roster's engine or walks its state. Only the storage latency is
// pushed here, by ObserveCommit, which the roster calls after each
// transaction.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"presenced/component"
	"presenced/roster"
	"presenced/storage"
)

// Roster is what the metrics read of the roster (*roster.Service).
type Roster interface{ Counts() roster.Counts }

// Component is what the metrics read of the component
// (*component.Component).
type Component interface{ Stats() component.Stats }

// Sources are what the metrics read when scraped; each may be called from
// any goroutine. A nil one is left out.
type Sources struct {
	Roster    Roster
	Component Component
	// WebStreams returns the number of event streams the web side holds
	// open.
	WebStreams func() int
}

// Metrics is presenced's registry of metrics.
type Metrics struct {
	reg           *prometheus.Registry
	storage       prometheus.Histogram
	storageErrors prometheus.Counter
}

// storageBuckets are the bounds of the storage latency histogram, in
// seconds: from half a millisecond to the store's own deadline (10 s).
var storageBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New returns the metrics of presenced, in a registry of their own (not
// Prometheus' default one) with the Go runtime's and the process's. The
// roster and component metrics join it with Watch.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		storage: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "presenced_storage_seconds",
			Help:    "Duration of the storage transactions (Store.Apply), failed ones included.",
			Buckets: storageBuckets,
		}),
		storageErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presenced_storage_errors_total",
			Help: "Storage transactions that failed through the database (not a change refused by the rows, such as a name taken).",
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.storage,
		m.storageErrors,
	)
	return m
}

// ObserveCommit records one storage transaction: its duration, and
// whether it failed through the database. It is roster.Options'
// ObserveCommit, and safe for concurrent use.
func (m *Metrics) ObserveCommit(d time.Duration, err error) {
	m.storage.Observe(d.Seconds())
	if err != nil && !storage.IsRowError(err) {
		m.storageErrors.Inc()
	}
}

// Watch adds the metrics read from src. It is called once, when the
// sources exist.
func (m *Metrics) Watch(src Sources) {
	m.reg.MustRegister(&state{src: src})
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// The kinds of stanzas, the values of the kind label.
const (
	kindMessage  = "message"
	kindPresence = "presence"
	kindIQ       = "iq"
	kindOther    = "other"
)

var (
	descReceived = prometheus.NewDesc("presenced_stanzas_received_total",
		"Stanzas read from the XMPP server, by kind (message, presence, iq, other).", []string{"kind"}, nil)
	descSent = prometheus.NewDesc("presenced_stanzas_sent_total",
		"Stanzas sent to the XMPP server (fan-out, probes, replies), by kind (presence, message, iq).", []string{"kind"}, nil)
	descConnected = prometheus.NewDesc("presenced_connected",
		"1 while a stream to the XMPP server is established, else 0.", nil, nil)
	descReconnects = prometheus.NewDesc("presenced_reconnects_total",
		"Connections to the XMPP server established after the first.", nil, nil)
	descQueued = prometheus.NewDesc("presenced_notifications_queued",
		"Fan-out jobs queued: an account's pass over its subscribers, or a removed handle's notices.", nil, nil)
	descAccounts = prometheus.NewDesc("presenced_accounts",
		"Accounts.", nil, nil)
	descHandles = prometheus.NewDesc("presenced_handles",
		"Handles, over every account.", nil, nil)
	descSubscriptions = prometheus.NewDesc("presenced_subscriptions",
		"Subscriptions, over every handle.", nil, nil)
	descPending = prometheus.NewDesc("presenced_pending_requests",
		"Subscription requests waiting for their owners.", nil, nil)
	descWebStreams = prometheus.NewDesc("presenced_web_streams",
		"Event streams the web side holds open.", nil, nil)
)

// state collects the metrics read from Sources, each source once per
// scrape.
type state struct{ src Sources }

func (s *state) Describe(ch chan<- *prometheus.Desc) {
	if s.src.Component != nil {
		ch <- descReceived
		ch <- descSent
		ch <- descConnected
		ch <- descReconnects
	}
	if s.src.Roster != nil {
		ch <- descQueued
		ch <- descAccounts
		ch <- descHandles
		ch <- descSubscriptions
		ch <- descPending
	}
	if s.src.WebStreams != nil {
		ch <- descWebStreams
	}
}

func (s *state) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	if c := s.src.Component; c != nil {
		st := c.Stats()
		counter(descReceived, st.Received.Message, kindMessage)
		counter(descReceived, st.Received.Presence, kindPresence)
		counter(descReceived, st.Received.IQ, kindIQ)
		counter(descReceived, st.Received.Other, kindOther)
		counter(descSent, st.Sent.Presence, kindPresence)
		counter(descSent, st.Sent.Message, kindMessage)
		counter(descSent, st.Sent.IQ, kindIQ)
		connected := 0
		if st.Connected {
			connected = 1
		}
		gauge(descConnected, connected)
		counter(descReconnects, st.Reconnects)
	}
	if r := s.src.Roster; r != nil {
		n := r.Counts()
		gauge(descQueued, n.Queued)
		gauge(descAccounts, n.Accounts)
		gauge(descHandles, n.Handles)
		gauge(descSubscriptions, n.Subscriptions)
		gauge(descPending, n.Pending)
	}
	if f := s.src.WebStreams; f != nil {
		gauge(descWebStreams, f())
	}
}
