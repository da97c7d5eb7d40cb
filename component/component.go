// Package component connects presenced to an XMPP server as an external
// component (XEP-0114) and speaks XMPP for the roster logic: it turns the
// owners' presence and commands into roster calls, answers probes, disco,
// ping, version and last activity, and renders what the roster's engine
// sends. It reads and writes the XEP-0114 stream itself (stream.go,
// output.go); mellium gives it JIDs and the XEP-0115 hash.
//
// It is the only package that reads or writes XML.
package component

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"

	"presenced/internal/logonce"
	"presenced/roster"
)

// Config is what the component needs to connect.
type Config struct {
	// Domain is the component's JID, e.g. presence.example.org.
	Domain string
	// Server is the host:port of the XMPP server's component listener.
	Server string
	// Secret is the XEP-0114 shared secret.
	Secret string
	// Resource is the resourcepart of the full JIDs from which the
	// component (domain/Resource) and every handle (handle@domain/Resource)
	// send their presence: clients such as Gajim show a contact on-line
	// only from a full JID. The same one serves every state, so off-line
	// and hiding look the same. Empty means DefaultResource.
	Resource string
	// ResyncDelay is how long to wait for owners to answer the probes sent
	// after each connection before telling subscribers the resulting state.
	ResyncDelay time.Duration
	// MinBackoff and MaxBackoff bound the wait between connection attempts.
	MinBackoff, MaxBackoff time.Duration
	// Version is reported by XEP-0092.
	Version string
	// TraceXML logs every byte read and written at debug level.
	TraceXML bool
	// OwnerDomains are the domains whose users may own handles, matched
	// exactly; "*" matches any. Empty means the parent of Domain.
	OwnerDomains []string
	// MaxStatusText is how many bytes of an owner's <status/> are kept;
	// 0 means DefaultMaxStatusText.
	MaxStatusText int
	// MaxCommandSessions is how many command sessions one user (a bare
	// JID, whatever the resource) may have open; opening one more ends its
	// oldest. 0 means DefaultMaxCommandSessions.
	MaxCommandSessions int
}

// DefaultResource is the resource of Config.Resource when none is set.
const DefaultResource = "presenced"

const (
	dialTimeout      = 10 * time.Second
	handshakeTimeout = 10 * time.Second
	sendTimeout      = 10 * time.Second
	storageTimeout   = 10 * time.Second
	closeTimeout     = 3 * time.Second
	// stableAfter is how long a connection must last for the backoff to
	// start again from MinBackoff.
	stableAfter = 30 * time.Second
)

// Component is a running presenced component.
type Component struct {
	cfg    Config
	domain jid.JID
	self   string // the component's full JID, domain/resource
	// What every stanza of the component repeats, built once: the domain
	// as a string, the XEP-0115 node, and the <c/> elements of handle and
	// component presence (shared, never modified).
	domainStr            string
	fullSuffix           string // "@domain/resource", for handle full JIDs
	capsNode             string
	handleCaps, selfCaps *node
	// The same, pre-rendered for appendView: the handles' <c/>, and the
	// start of a <delay/> up to its stamp.
	handleCapsXML, delayPrefix []byte
	roster                     *roster.Service
	log                        *slog.Logger
	cmds                       *commandSessions
	// out is where every stanza goes; gen counts the connections begun and
	// ended. Both belong to the engine goroutine.
	out *output
	gen uint64

	// stopping is set when shutdown starts withdrawing: the component
	// then shows itself off-line to everyone, as it is about to be.
	stopping  atomic.Bool
	connected signal // fired at every successful handshake
	// up is set while a stream to the XMPP server is established.
	up     atomic.Bool
	synced signal // fired after every resync
	// abandon is closed by Abandon: Run stops serving at once.
	abandon     chan struct{}
	abandonOnce sync.Once
	// logs keeps what remote senders cause from filling the log; told
	// remembers which requests their owners were told of lately. Both
	// belong to the engine goroutine.
	logs *logonce.Limiter
	told *told
	// chatShown is the request list each owner was last shown by the
	// chat command requests, which approve N and deny N number for
	// shownFor; it belongs to the engine goroutine, and holds owners with
	// requests only, forgetting lists past shownFor.
	chatShown map[string]shownList
	// chatAnswers bounds the chat answers each user gets (chat.go).
	chatAnswers chatAllowance

	// received and sent count the stanzas by kind (Stats): the reader
	// adds to received, the output publishes sent at each flush
	// (output.publish), any goroutine reads.
	received, sent kindCounts
	// connects counts the streams established.
	connects atomic.Uint64
}

// ErrAbandoned is what Run returns after Abandon.
var ErrAbandoned = errors.New("component: stopped serving: another instance took over")

// Abandon makes Run stop serving at once, without withdrawing anything:
// another instance of presenced took the database over and serves in its
// place, so what this one would say no longer counts.
func (c *Component) Abandon() {
	c.abandonOnce.Do(func() { close(c.abandon) })
}

// signal lets waiters learn that something happened (again): Wait returns
// a channel that the next Fire closes.
type signal struct {
	mu sync.Mutex
	ch chan struct{} // guarded by mu; nil until first used
}

func (s *signal) Wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) Fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
	}
	s.ch = make(chan struct{})
}

// New returns a component for r.
func New(cfg Config, r *roster.Service, log *slog.Logger) (*Component, error) {
	d, err := jid.Parse(cfg.Domain)
	if err != nil || d.Localpart() != "" || d.Resourcepart() != "" {
		return nil, fmt.Errorf("component: domain %q is not a bare domain JID", cfg.Domain)
	}
	if cfg.Resource == "" {
		cfg.Resource = DefaultResource
	}
	self, err := d.WithResource(cfg.Resource)
	if err != nil {
		return nil, fmt.Errorf("component: resource %q is not a valid resourcepart", cfg.Resource)
	}
	cfg.Resource = self.Resourcepart()
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.ResyncDelay < 0 {
		cfg.ResyncDelay = 0
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if len(cfg.OwnerDomains) == 0 {
		cfg.OwnerDomains = []string{ParentDomain(d.String())}
	}
	if cfg.MaxStatusText <= 0 {
		cfg.MaxStatusText = DefaultMaxStatusText
	}
	if cfg.MaxCommandSessions <= 0 {
		cfg.MaxCommandSessions = DefaultMaxCommandSessions
	}
	c := &Component{
		cfg:        cfg,
		domain:     d,
		self:       self.String(),
		domainStr:  d.String(),
		fullSuffix: "@" + self.String(),
		capsNode:   capsNode(d.String()),
		handleCaps: handleInfo.caps(capsNode(d.String())),
		selfCaps:   componentInfo.caps(capsNode(d.String())),
		roster:     r,
		log:        log,
		cmds:       newCommandSessions(cfg.MaxCommandSessions),
		abandon:    make(chan struct{}),
		logs:       logonce.New(time.Minute),
		told:       newTold(),
		chatShown:  make(map[string]shownList),
	}
	c.handleCapsXML = c.handleCaps.appendIn(nil, nsStream)
	c.delayPrefix = el(qname(nsDelay, "delay"), "from", c.domainStr).appendIn(nil, nsStream)
	c.delayPrefix = append(c.delayPrefix[:len(c.delayPrefix)-2], " stamp='"...)
	c.out = &output{c: c}
	if r != nil {
		r.SetSender(c.out)
	}
	return c, nil
}

// Run connects to the XMPP server and serves until ctx ends, reconnecting
// with capped exponential backoff whenever the connection fails or is lost.
// It runs the roster's engine, on whose goroutine every stanza is handled.
// When ctx ends it withdraws the presence of every visible handle, stops the
// engine and closes the stream.
func (c *Component) Run(ctx context.Context) error {
	engineDone := make(chan struct{})
	go func() {
		defer close(engineDone)
		c.roster.Run()
	}()
	backoff := c.cfg.MinBackoff
	for !c.abandoned() && ctx.Err() == nil {
		began := time.Now()
		err := c.serveOnce(ctx)
		if c.abandoned() || ctx.Err() != nil {
			break
		}
		if time.Since(began) > stableAfter {
			backoff = c.cfg.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.log.Warn("not connected to the XMPP server; retrying", "server", c.cfg.Server, "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-c.abandon:
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
	// If not connected, there was nothing to withdraw, and the flags on
	// record are read as off-line at the next start.
	c.roster.Stop()
	<-engineDone
	if c.abandoned() {
		return ErrAbandoned
	}
	return nil
}

func (c *Component) abandoned() bool {
	select {
	case <-c.abandon:
		return true
	default:
		return false
	}
}

// Synced returns a channel that is closed when the next resync after a
// connection has queued the resulting state for every subscriber.
func (c *Component) Synced() <-chan struct{} { return c.synced.Wait() }

// Connected returns a channel that is closed at the next successful
// handshake.
func (c *Component) Connected() <-chan struct{} { return c.connected.Wait() }

func (c *Component) serveOnce(ctx context.Context) error {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", c.cfg.Server)
	if err != nil {
		return err
	}
	// Every write through the wire has its own deadline.
	rw := &wire{conn: conn, log: c.log, trace: c.cfg.TraceXML}
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	st, err := handshake(rw, c.domainStr, c.cfg.Secret)
	if err != nil {
		conn.Close()
		return fmt.Errorf("handshake: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	c.log.Info("connected to the XMPP server", "server", c.cfg.Server, "domain", c.domainStr)
	c.connects.Add(1)
	c.up.Store(true)
	defer c.up.Store(false)
	c.connected.Fire()

	w := newWriter(rw)
	go w.run()
	// Before anything is read on the new stream: what subscribers were
	// told over the last one no longer counts.
	c.roster.Do(func() { c.connect(w) })
	served := make(chan error, 1)
	go func() { served <- c.readStream(st) }()

	select {
	case err := <-served:
		c.roster.Do(c.disconnect)
		<-w.done
		conn.Close()
		return fmt.Errorf("connection lost: %w", err)
	case <-c.abandon:
		// Nothing more leaves: the instance that took over speaks now.
		conn.Close()
		c.roster.Do(c.disconnect)
		<-w.done
		<-served
		c.log.Error("stopped serving at once: another instance took the database over")
		return ErrAbandoned
	case <-ctx.Done():
		c.roster.Shutdown(c.withdraw)
		<-w.done
		// The writer has stopped: close the stream, and read what the
		// server still sends (unsubscriptions are stored) until it closes
		// its own.
		_ = conn.SetWriteDeadline(time.Now().Add(closeTimeout))
		_, _ = io.WriteString(rw, "</stream:stream>")
		_ = conn.SetReadDeadline(time.Now().Add(closeTimeout))
		<-served
		conn.Close()
		c.log.Info("disconnected from the XMPP server")
		return nil
	}
}

// connect starts a connection's life on the engine goroutine: output goes
// to w from now on, and the resync begins.
func (c *Component) connect(w *writer) {
	c.gen++
	c.out.attach(w)
	c.roster.MarkStale()
	c.resync(c.gen)
}

// disconnect ends a lost connection on the engine goroutine.
func (c *Component) disconnect() {
	c.gen++
	c.out.detach()
	c.roster.Discard()
}

// resync shows the component on-line to every owner and probes them, waits
// for their servers to answer, then settles the flags and tells every
// subscriber the resulting state, unless connection gen ended meanwhile.
func (c *Component) resync(gen uint64) {
	owners := c.roster.Owners()
	for _, owner := range owners {
		c.out.write(c.selfPresence("", owner))
		c.out.write(presence("probe", c.domainStr, owner))
	}
	time.AfterFunc(c.cfg.ResyncDelay, func() {
		c.roster.Do(func() {
			if gen != c.gen || c.stopping.Load() {
				return
			}
			c.roster.DropStale(func() {
				c.log.Info("resynchronised subscribers", "owners", len(owners))
				c.synced.Fire()
				c.probeOffLine()
			})
		})
	})
}

// probeOffLine probes once more, after a resync, the owners it found
// off-line: the answer to the first probe may have been lost, and then an
// on-line owner shows off-line until their next presence. (ejabberd, which
// accepts a second stream for a component domain, may route the answers
// of a standby that took over to the instance it replaced, still
// connected for a moment.) An answer updates the flags as any presence.
func (c *Component) probeOffLine() {
	for _, owner := range c.roster.Owners() {
		if f, _ := c.roster.Flags(owner); !f.Online {
			c.out.write(presence("probe", c.domainStr, owner))
		}
	}
}

// withdraw runs on the engine goroutine at shutdown, once every change is
// committed and no other can be made: it tells every subscriber of a
// visible handle that it is unavailable, since the component can no longer
// vouch for it, sends the notices of removed handles still due, shows the
// component off-line to its owners, and stores the accounts as off-line.
func (c *Component) withdraw() {
	// Whatever happens, the writer ends: serveOnce waits for it.
	defer c.out.detach()
	c.stopping.Store(true)
	if c.abandoned() {
		return // another instance speaks for the handles now
	}
	// First what was already on its way, so that the withdrawals know
	// which removal notices went out.
	c.out.drain()
	at := time.Now()
	n := 0
	for _, wd := range c.roster.Withdrawals(at) {
		for _, contact := range wd.Contacts {
			c.out.Presence(wd.Handle, contact, wd.View)
			if wd.Removed {
				c.out.Unsubscribed(wd.Handle, contact)
			}
			n++
		}
	}
	for _, owner := range c.roster.Owners() {
		c.out.write(c.selfPresence("unavailable", owner))
		n++
	}
	written := c.out.drain()
	if !written {
		c.log.Warn("not everything withdrawn at shutdown")
	}
	c.log.Info("withdrew presence of visible handles", "stanzas", n)
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	if err := c.roster.GoOffline(ctx, at, written); err != nil {
		c.log.Error("off-line flags not stored at shutdown", "err", err)
	}
}

// Ready reports whether the component serves: connected to the XMPP
// server, with storage answering; else why not, in one line. It may be
// called from any goroutine.
func (c *Component) Ready() (bool, string) {
	switch {
	case c.stopping.Load():
		return false, "stopping"
	case !c.up.Load():
		return false, "not connected to the XMPP server"
	case !c.roster.StorageOK():
		return false, "storage is failing"
	}
	return true, ""
}

// PrepareHandle returns the handle name that name stands for, as the
// commands prepare it (PRECIS), or false if it is none. It may be called
// from any goroutine.
func (c *Component) PrepareHandle(name string) (string, bool) {
	h, err := prepareHandle(c, name)
	return h, err == nil
}

// ParentDomain is the default of Config.OwnerDomains: the domain with its
// first label taken off (presence.example.org → example.org), or the
// domain itself when it has a single label.
func ParentDomain(domain string) string {
	if i := strings.IndexByte(domain, '.'); i >= 0 && i < len(domain)-1 {
		return domain[i+1:]
	}
	return domain
}

// mayOwn reports whether the sender may own handles: it is a user (it has
// a localpart) of one of the owner domains, or an account already (a
// domain taken off owner_domains does not take an owner's control of its
// handles away, hiding included).
func (c *Component) mayOwn(from addr) bool {
	if from.local == "" {
		return false
	}
	if c.roster.IsOwner(from.bare()) {
		return true
	}
	for _, d := range c.cfg.OwnerDomains {
		if d == "*" || d == from.domain {
			return true
		}
	}
	return false
}

// handleBare is the bare JID of handle, from which subscription answers
// come (RFC 6121 §3).
func (c *Component) handleBare(handle string) string {
	return handle + "@" + c.domainStr
}

// appendView renders v as the presence of handle for contact, from the
// handle's full JID, straight into b. Hiding and off-line accounts render
// identically: an unavailable presence whose <delay/> is the moment the
// account stopped being visible. Available presence carries the handles'
// capabilities (XEP-0115), the same for every handle and every status. It
// builds no tree: it is most of what presenced writes (presence_test.go
// holds it to the tree the rest of the component would build).
func (c *Component) appendView(b []byte, handle, contact string, v roster.View) []byte {
	b = append(b, "<presence"...)
	if !v.Available {
		b = append(b, " type='unavailable'"...)
	}
	b = append(b, " from='"...)
	b = appendEscaped(b, handle, true)
	b = appendEscaped(b, c.fullSuffix, true)
	b = append(b, "' to='"...)
	b = appendEscaped(b, contact, true)
	b = append(b, "'>"...)
	if !v.Available {
		b = append(b, c.delayPrefix...)
		b = v.Since.UTC().AppendFormat(b, stampLayout)
		return append(b, "'/></presence>"...)
	}
	switch v.Status {
	case "away":
		b = append(b, "<show>away</show>"...)
	case "busy":
		b = append(b, "<show>dnd</show>"...)
	}
	if v.Text != "" {
		b = append(b, "<status>"...)
		b = appendEscaped(b, v.Text, false)
		b = append(b, "</status>"...)
	}
	b = append(b, c.handleCapsXML...)
	return append(b, "</presence>"...)
}

// selfPresenceFor is the component's presence for to, a JID of bare: on-line
// to an owner while the component serves, off-line to anyone else and once
// shutdown has begun, so nothing can show it on-line after it withdrew.
func (c *Component) selfPresenceFor(bare, to string) *node {
	if c.stopping.Load() || !c.roster.IsOwner(bare) {
		return c.selfPresence("unavailable", to)
	}
	return c.selfPresence("", to)
}

// selfPresence is the component's own presence (typ "" or "unavailable")
// for one of its owners, from its full JID, so that it shows on-line in
// their rosters while it serves them.
func (c *Component) selfPresence(typ, to string) *node {
	p := presence(typ, c.self, to)
	if typ == "" {
		p.add(c.selfCaps)
	}
	return p
}

// stampLayout is the XEP-0082 form of <delay/> stamps, to the second.
const stampLayout = "2006-01-02T15:04:05Z"

// readStream is the reader goroutine of a connection. It parses each
// stanza and hands it to the engine, which handles it; it never waits for
// storage or for the network, only for room in the engine's queue.
func (c *Component) readStream(st *stream) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic", "where", "reader", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("component: panic in the reader: %v", r)
		}
	}()
	return st.read(func(p parsed) {
		c.roster.Do(func() { c.handle(p) })
	})
}

// handle handles one stanza on the engine goroutine; a panic ends that
// stanza only.
func (c *Component) handle(p parsed) {
	defer c.recoverLog("handler")
	c.dispatch(&replier{c: c}, p.n, p.tooBig)
}

// dispatch handles one parsed stanza on the engine goroutine; tooBig is
// errTooBig when the stanza went over the limits.
func (c *Component) dispatch(w *replier, n *node, tooBig error) {
	c.received[kindOf(n.name.Local)].Add(1)
	start := n
	if tooBig != nil {
		// A sender can repeat it at will: logged once a minute.
		c.logs.Log(c.log, slog.LevelWarn, time.Now(), "too-big", "stanza over limits refused", "name", start.name.Local, "from", n.get("from"))
		if n.name.Local == "presence" && n.get("type") == "unavailable" {
			// What it says about the resource holds, whatever it carried.
			c.tooBigUnavailable(w, n)
			return
		}
		w.refuse(n, condPolicy("The stanza is too large."))
		return
	}
	switch n.name.Local {
	case "iq":
		c.handleIQ(w, n)
	case "presence":
		c.handlePresence(w, n)
	case "message":
		c.handleMessage(w, n)
	default:
		c.log.Debug("ignored element", "name", n.name.Local)
	}
}

func (c *Component) recoverLog(where string) {
	if r := recover(); r != nil {
		c.log.Error("panic", "where", where, "panic", r, "stack", string(debug.Stack()))
	}
}

// replier writes the replies to the stanza being handled into the output.
type replier struct {
	c *Component
}

func (r *replier) write(n *node) { r.c.out.write(n) }

// refuse answers stanza n with an error of condition e, unless n is itself
// an error, has no usable 'from', or is an IQ without an id (whose answer
// could not be matched to it, RFC 6120 §8.1.3: it is dropped).
func (r *replier) refuse(n *node, e stanzaError) {
	if n.get("type") == "error" || n.get("from") == "" || (n.name.Local == "iq" && n.get("id") == "") {
		return
	}
	// Answer from the address the stanza was sent to when it is one of ours;
	// servers close the stream of a component that sends from elsewhere.
	from := r.c.domainStr
	if to, err := parseAddr(n.get("to")); err == nil && to.domain == r.c.domainStr {
		from = to.String()
	}
	reply := el(local(n.name.Local), "type", "error", "id", n.get("id"), "from", from, "to", n.get("from"))
	reply.add(e.node())
	r.write(reply)
}

// wire is the connection as the component reads and writes it. Every write has a deadline; a
// write that fails closes the connection, since a stanza cut short leaves
// the stream unusable, and the reconnect loop takes over. With trace set it
// logs the raw XML at debug level.
type wire struct {
	conn  net.Conn
	log   *slog.Logger
	trace bool
}

func (w *wire) Read(p []byte) (int, error) {
	n, err := w.conn.Read(p)
	if w.trace && n > 0 {
		w.log.Debug("xml in", "data", string(p[:n]))
	}
	return n, err
}

func (w *wire) Write(p []byte) (int, error) {
	if w.trace {
		w.log.Debug("xml out", "data", string(p))
	}
	_ = w.conn.SetWriteDeadline(time.Now().Add(sendTimeout))
	n, err := w.conn.Write(p)
	if err != nil {
		w.conn.Close()
	}
	return n, err
}
