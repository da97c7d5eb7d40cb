// Package throughserver measures presenced through a real XMPP server
// (Prosody 0.12 or ejabberd 23.01) against a null component: an XEP-0114
// component on the same domain that does no work and writes pre-rendered
// stanzas, the physical limit of the component link plus the server's
// routing.
//
// One run starts a private server on 127.0.0.1 in a temporary folder, logs
// in S subscriber clients (whose rosters hold H handles with subscription
// "to") and one owner (whose roster lets its presence reach the component),
// then alternates turns of presenced and of the null component (only one is
// connected at a time). Each turn runs closed-loop fan-out rounds, triggered
// by the owner changing its show, and login storms, triggered by every
// subscriber re-sending its initial presence. Everything stops by itself;
// servers and folders are removed even on error or interrupt.
package throughserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"presenced/bench/internal/proc"
	"presenced/bench/internal/shared"
)

// options are the command-line flags.
type options struct {
	XMPP      string        `json:"xmpp"`
	Subs      int           `json:"subs"`
	Handles   int           `json:"handles"`
	Pairs     int           `json:"pairs"`
	Rounds    int           `json:"rounds"`
	Storms    int           `json:"storms"`
	Presenced string        `json:"presenced"`
	Timeout   time.Duration `json:"round_timeout_ns"`
	GC        string        `json:"prosody_gc"`
	JSON      string        `json:"-"`
	Keep      bool          `json:"-"`
	Verbose   bool          `json:"-"`
	NullCaps  bool          `json:"null_caps"`

	nullChild            bool
	nullServer, nullShow string
}

// secretEnv passes the component secret to the null component's process.
const secretEnv = "BENCH_NULL_COMPONENT_SECRET"

// parseFlags reads args.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.XMPP, "xmpp", "prosody", "XMPP server to run: prosody or ejabberd")
	fs.IntVar(&o.Subs, "subs", 200, "subscriber clients")
	fs.IntVar(&o.Handles, "handles", 64, "handles of the owner, each in every subscriber's roster")
	fs.IntVar(&o.Pairs, "pairs", 3, "interleaved pairs of turns (presenced, null)")
	fs.IntVar(&o.Rounds, "rounds", 5, "fan-out rounds per turn")
	fs.IntVar(&o.Storms, "storms", 1, "login storms per turn, after the rounds")
	fs.StringVar(&o.Presenced, "presenced", "", "presenced binary (default: go build ./cmd/presenced into the temporary folder)")
	fs.DurationVar(&o.Timeout, "timeout", 15*time.Second, "bound of each round; what is missing then is reported")
	fs.StringVar(&o.GC, "prosody-gc", "generational", "Prosody's Lua GC mode (gc = { mode = … }); empty for Prosody's default")
	fs.StringVar(&o.JSON, "json", "", "also write the raw figures to this file")
	fs.BoolVar(&o.Keep, "keep", false, "keep the temporary folder (configurations, logs) and print its path")
	fs.BoolVar(&o.Verbose, "v", false, "print every round as it ends")
	fs.BoolVar(&o.NullCaps, "null-caps", true, "the null component writes the XEP-0115 <c/> element presenced puts in every available presence, so both sides write stanzas of the same size (false: bare stanzas)")
	fs.BoolVar(&o.nullChild, "null-child", false, "internal: run only the null component (the harness starts itself so)")
	fs.StringVar(&o.nullServer, "null-server", "", "internal: component listener for -null-child")
	fs.StringVar(&o.nullShow, "null-show", "away", "internal: initial show for -null-child")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch {
	case o.XMPP != "prosody" && o.XMPP != "ejabberd":
		return o, fmt.Errorf("-xmpp %q: want prosody or ejabberd", o.XMPP)
	case o.Subs < 1 || o.Subs > 5000:
		return o, fmt.Errorf("-subs %d: want 1..5000", o.Subs)
	case o.Handles < 1 || o.Handles > 10000:
		return o, fmt.Errorf("-handles %d: want 1..10000", o.Handles)
	case o.Pairs < 1 || o.Rounds < 1 || o.Storms < 0:
		return o, errors.New("-pairs and -rounds must be at least 1, -storms at least 0")
	case o.Timeout < time.Second:
		return o, errors.New("-timeout must be at least 1s")
	case o.Subs*o.Handles > maxSubscriptions:
		return o, fmt.Errorf("-subs × -handles = %d: at most %d subscriptions (the null component pre-renders three waves of S×H stanzas, some 250 bytes each)",
			o.Subs*o.Handles, maxSubscriptions)
	}
	return o, nil
}

// maxSubscriptions caps -subs × -handles: the null component holds three
// pre-rendered waves of that many stanzas (about 375 MB at the cap).
const maxSubscriptions = 500_000

// Main runs the harness with args and writes its report to out.
func Main(args []string, out io.Writer) error {
	o, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.nullChild {
		return runNullChild(ctx, o, out)
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the XMPP server is started under its own system user " +
			"(go build -o /tmp/bench ./bench as yourself, then sudo /tmp/bench server …)")
	}
	rep, err := run(ctx, o, out)
	if rep != nil && measuredAny(rep.Turns) {
		rep.Rows = summarizeRows(rep.Turns)
		writeTable(out, rep)
		if o.JSON != "" {
			if jerr := writeJSON(o.JSON, rep); jerr != nil && err == nil {
				err = jerr
			}
		}
	}
	return err
}

// measuredAny reports whether any turn got as far as a round.
func measuredAny(turns []turnResult) bool {
	for _, t := range turns {
		if len(t.Rounds) > 0 {
			return true
		}
	}
	return false
}

// report is everything a run measured; -json writes it.
type report struct {
	Options options      `json:"options"`
	Setup   setupTimes   `json:"setup"`
	Turns   []turnResult `json:"turns"` // complete turns only
	// FailedTurns counts the turns that did not complete (failed,
	// interrupted or never started); none of their figures is reported.
	FailedTurns int   `json:"failed_turns"`
	Rows        []row `json:"summary"`
}

// setupTimes says how long each step of the set-up took.
type setupTimes struct {
	Prepare       time.Duration `json:"prepare_ns"` // server data files and presenced's database
	Build         time.Duration `json:"build_ns"`   // go build of presenced (0 with -presenced)
	ServerStart   time.Duration `json:"server_start_ns"`
	Logins        time.Duration `json:"logins_ns"`        // all clients logged in (and registered)
	Subscriptions time.Duration `json:"subscriptions_ns"` // through the protocol (ejabberd only)
}

func (s setupTimes) String() string {
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	t := fmt.Sprintf("files and database %s, build %s, server start %s, logins %s", r(s.Prepare), r(s.Build), r(s.ServerStart), r(s.Logins))
	if s.Subscriptions > 0 {
		t += ", subscriptions " + r(s.Subscriptions)
	}
	return t
}

func writeJSON(path string, rep *report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// xmppServer is Prosody or ejabberd as the harness runs it.
type xmppServer interface {
	name() string
	// check says what is missing on this machine to run the server.
	check() error
	prepare(ctx context.Context, subs, handles int, secret string) error
	start(ctx context.Context) error
	stop() error
	pid() int
	logs() []string
}

// harness holds one run's world.
type harness struct {
	o      options
	out    io.Writer
	dir    string
	p      ports
	secret string
	server xmppServer
	bin    string // presenced
	pcfg   string // presenced's configuration file
	plog   string // presenced's output

	owner *client
	subs  []*client
	show  string // the owner's current show
}

// run sets everything up, runs the turns and tears everything down.
func run(ctx context.Context, o options, out io.Writer) (rep *report, err error) {
	rep = &report{Options: o}
	h := &harness{o: o, out: out, secret: randomSecret(), show: "away"}
	h.dir, err = os.MkdirTemp("", "bench-server-")
	if err != nil {
		return rep, err
	}
	defer func() {
		if o.Keep {
			fmt.Fprintln(out, "kept", h.dir)
			return
		}
		os.RemoveAll(h.dir)
	}()
	// The servers' users must reach their folders inside.
	if err := os.Chmod(h.dir, 0o755); err != nil {
		return rep, err
	}
	ps, err := shared.FreePorts(3)
	if err != nil {
		return rep, err
	}
	h.p = ports{c2s: ps[0], component: ps[1], dist: ps[2]}
	sdir := filepath.Join(h.dir, o.XMPP)
	if o.XMPP == "prosody" {
		h.server = &prosody{dir: sdir, p: h.p, gc: o.GC}
	} else {
		h.server = &ejabberd{dir: sdir, p: h.p, node: fmt.Sprintf("bench%d@localhost", os.Getpid())}
	}

	if err := h.setup(ctx, &rep.Setup); err != nil {
		return rep, err
	}
	rep.Options.Presenced = h.bin
	defer func() {
		for _, c := range append([]*client{h.owner}, h.subs...) {
			if c != nil {
				c.close()
			}
		}
		if serr := h.server.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	fmt.Fprintf(out, "set-up: %s\n", rep.Setup)
	for pair := range o.Pairs {
		for _, side := range turnOrder(pair) {
			t, err := h.turn(ctx, side, pair)
			if err != nil {
				// Its figures are partial: only complete turns are reported.
				rep.FailedTurns = 2*o.Pairs - len(rep.Turns)
				return rep, fmt.Errorf("pair %d, %s: %w", pair+1, side, err)
			}
			rep.Turns = append(rep.Turns, t)
		}
	}
	return rep, nil
}

// turnOrder is the order of the sides in pair: presenced first in even
// pairs, the null component first in odd ones, so that a drift over the run
// weighs on both sides alike.
func turnOrder(pair int) []string {
	if pair%2 == 1 {
		return []string{sideNull, sidePresenced}
	}
	return []string{sidePresenced, sideNull}
}

// setup prepares the files, builds presenced, starts the server and logs
// every client in.
func (h *harness) setup(ctx context.Context, st *setupTimes) (err error) {
	t := time.Now()
	if err := os.MkdirAll(filepath.Join(h.dir, "presenced"), 0o755); err != nil {
		return err
	}
	if err := h.server.check(); err != nil {
		return err
	}
	if err := h.server.prepare(ctx, h.o.Subs, h.o.Handles, h.secret); err != nil {
		_ = h.server.stop() // removes what prepare made outside h.dir
		return fmt.Errorf("%s files: %w", h.server.name(), err)
	}
	db := filepath.Join(h.dir, "presenced", "presence.db")
	if err := prefillDB(ctx, db, h.o.Subs, h.o.Handles); err != nil {
		return fmt.Errorf("presenced database: %w", err)
	}
	h.pcfg = filepath.Join(h.dir, "presenced", "presenced.toml")
	h.plog = filepath.Join(h.dir, "presenced", "presenced.log")
	if err := os.WriteFile(h.pcfg, []byte(presencedConfig(addr(h.p.component), h.secret, db, h.o.Handles)), 0o600); err != nil {
		return err
	}
	st.Prepare = time.Since(t)

	t = time.Now()
	h.bin = h.o.Presenced
	if h.bin == "" {
		if h.bin, err = buildPresenced(ctx, h.dir); err != nil {
			return err
		}
		st.Build = time.Since(t)
	} else if _, err := os.Stat(h.bin); err != nil {
		return fmt.Errorf("-presenced: %w", err)
	}

	t = time.Now()
	if err := h.server.start(ctx); err != nil {
		h.server.stop()
		return err
	}
	st.ServerStart = time.Since(t)
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, tailFiles(h.server.logs()...))
			h.server.stop()
		}
	}()

	t = time.Now()
	if err := h.login(ctx); err != nil {
		return err
	}
	st.Logins = time.Since(t)
	if _, ok := h.server.(*ejabberd); ok {
		t = time.Now()
		if err := h.subscribeThroughProtocol(ctx); err != nil {
			return fmt.Errorf("subscriptions: %w", err)
		}
		st.Subscriptions = time.Since(t)
	} else if err := h.checkRosters(); err != nil {
		return err
	}
	return nil
}

// login logs in the owner (show away) and the subscribers, 16 at a time,
// and starts their readers.
func (h *harness) login(ctx context.Context) error {
	_, register := h.server.(*ejabberd)
	opts := func(user, presence string) loginOptions {
		return loginOptions{addr: addr(h.p.c2s), domain: userHost, user: user, password: password(user),
			register: register, presence: presence}
	}
	var err error
	h.owner, err = dialClient(ctx, opts(ownerUser, "<presence><show>"+h.show+"</show></presence>"))
	if err != nil {
		return err
	}
	h.owner.startReader(componentDomain)
	h.subs = make([]*client, h.o.Subs)
	errs := make([]error, h.o.Subs)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for k := range h.subs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h.subs[k], errs[k] = dialClient(ctx, opts(subUser(k), "<presence/>"))
		}()
	}
	wg.Wait()
	failed := 0
	for k, c := range h.subs {
		if errs[k] != nil {
			failed++
			continue
		}
		c.startReader(componentDomain)
	}
	if err := errors.Join(errs...); err != nil {
		// Keep only the clients that exist for the cleanup.
		kept := h.subs[:0]
		for _, c := range h.subs {
			if c != nil {
				kept = append(kept, c)
			}
		}
		h.subs = kept
		return fmt.Errorf("%d of %d logins failed: %w", failed, h.o.Subs, err)
	}
	return nil
}

// checkRosters verifies that Prosody read the roster files written for it.
func (h *harness) checkRosters() error {
	if h.owner.rosterItems != 1 {
		return fmt.Errorf("prosody: the owner's roster has %d items, want 1 (the data files were not read)", h.owner.rosterItems)
	}
	for _, c := range h.subs {
		if c.rosterItems != h.o.Handles {
			return fmt.Errorf("prosody: %s's roster has %d items, want %d (the data files were not read)", c.user, c.rosterItems, h.o.Handles)
		}
	}
	return nil
}

// subscribeThroughProtocol makes the subscriptions with a null component
// connected in-process that approves them: each subscriber sends subscribe
// to every handle and waits for every 'subscribed'; the component asks the
// owner for its presence, which the owner approves.
func (h *harness) subscribeThroughProtocol(ctx context.Context) error {
	n, err := dialNull(ctx, h.nullConfig(h.show))
	if err != nil {
		return err
	}
	defer n.close()
	ownerOK := make(chan struct{})
	var once sync.Once
	approve := func(from string) {
		if string(bareOf([]byte(from))) != componentDomain {
			return
		}
		_ = h.owner.write("<presence type='subscribed' to='" + componentDomain + "'/>")
		once.Do(func() { close(ownerOK) })
	}
	h.owner.onSubscribe.Store(&approve)
	defer h.owner.onSubscribe.Store(nil)
	if err := n.send("<presence type='subscribe' from='" + componentDomain + "' to='" + ownerJID + "'/>"); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- n.serve(sctx) }()

	var b strings.Builder
	for j := range h.o.Handles {
		b.WriteString("<presence type='subscribe' to='" + handleJID(j) + "'/>")
	}
	req := b.String()
	r := newRound(modeSubscribed, "", h.o.Handles, len(h.subs))
	o, err := runRound(ctx, h.subs, r, 2*time.Minute, func() (time.Time, error) {
		t0 := time.Now()
		for _, c := range h.subs {
			if err := c.write(req); err != nil {
				return t0, err
			}
		}
		return t0, nil
	})
	if err != nil {
		return err
	}
	if !o.Complete {
		return fmt.Errorf("%d of %d subscriptions not approved within 2 minutes", o.Missing, o.Expected)
	}
	wait := time.NewTimer(30 * time.Second)
	defer wait.Stop()
	select {
	case <-ownerOK:
	case <-wait.C:
		return errors.New("the owner was never asked to let the component see its presence (30 s)")
	case <-ctx.Done():
		return ctx.Err()
	}
	// The ping proves the server has processed the owner's 'subscribed'.
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	if err := h.owner.ping(pctx); err != nil {
		return err
	}
	cancel()
	<-served
	return nil
}

// nullConfig is the null component of this run, whose probe answers carry
// show until the owner's presence says otherwise.
func (h *harness) nullConfig(show string) nullConfig {
	return nullConfig{server: addr(h.p.component), domain: componentDomain, secret: h.secret, host: userHost,
		owner: ownerJID, subs: h.o.Subs, handles: h.o.Handles, show: show, extra: extraOf(h.o.NullCaps)}
}

// extraOf is the null component's extra child for -null-caps.
func extraOf(caps bool) string {
	if caps {
		return capsLike
	}
	return ""
}

// turn runs one side's turn of pair: connect, measure, disconnect.
func (h *harness) turn(ctx context.Context, side string, pair int) (t turnResult, err error) {
	t = turnResult{Side: side, Pair: pair}
	var comp *process
	if side == sidePresenced {
		p, settle, err := h.startPresenced(ctx)
		if p != nil {
			defer func() {
				if p.alive() {
					p.stop(30 * time.Second)
				}
			}()
		}
		t.Settle = settle
		if err != nil {
			return t, err
		}
		comp = p.process
	} else {
		p, err := h.startNull(ctx)
		if err != nil {
			return t, err
		}
		defer p.stop(10 * time.Second)
		comp = p
	}
	if err := h.measure(ctx, comp, &t); err != nil {
		return t, err
	}
	if t.ServerRSS, err = proc.RSS(h.server.pid()); err != nil {
		return t, fmt.Errorf("%s RSS: %w", h.server.name(), err)
	}
	if t.ComponentRSS, err = proc.RSS(comp.pid()); err != nil {
		return t, fmt.Errorf("%s RSS: %w", side, err)
	}
	if side == sidePresenced {
		w, err := h.stopPresenced(ctx, comp)
		t.Withdraw = w
		if err != nil {
			return t, err
		}
	} else if err := comp.stop(10 * time.Second); err != nil {
		return t, err
	}
	return t, nil
}

// startPresenced starts presenced and waits until every subscriber has the
// owner's current show from every handle (presenced probes the owner, then
// fans out after resync_delay).
func (h *harness) startPresenced(ctx context.Context) (*presencedProc, *outcome, error) {
	var p *presencedProc
	r := newRound(modeShow, h.show, h.o.Handles, len(h.subs))
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o, err := runRound(pctx, h.subs, r, time.Minute, func() (time.Time, error) {
		t0 := time.Now()
		var err error
		p, err = startPresenced(h.bin, h.pcfg, h.plog)
		if err == nil {
			go func() {
				select {
				case <-p.exited:
					cancel()
				case <-pctx.Done():
				}
			}()
		}
		return t0, err
	})
	if p != nil && !p.alive() {
		return p, nil, fmt.Errorf("presenced exited: %v\n%s", p.err, tailFiles(h.plog))
	}
	if err != nil {
		return p, nil, err
	}
	if !o.Complete {
		return p, &o, fmt.Errorf("presenced did not show the owner's state (%s) within a minute: %d of %d presences missing\n%s",
			h.show, o.Missing, o.Expected, tailFiles(h.plog))
	}
	return p, &o, nil
}

// stopPresenced sends SIGTERM, waits for presenced to exit and for its
// withdrawal (unavailable from every handle) to reach every subscriber, all
// within one -timeout (presenced is killed if it has not exited by then).
func (h *harness) stopPresenced(ctx context.Context, p *process) (*outcome, error) {
	r := newRound(modeUnavailable, "", h.o.Handles, len(h.subs))
	var stopErr error
	o, err := runRound(ctx, h.subs, r, h.o.Timeout, func() (time.Time, error) {
		t0 := time.Now()
		stopErr = p.stop(h.o.Timeout)
		return t0, nil
	})
	if err != nil {
		return nil, err
	}
	return &o, stopErr
}

// startNull starts the null component as a child process (so that its CPU
// is counted apart from the clients') and waits until it is connected.
func (h *harness) startNull(ctx context.Context) (*process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "server", "-null-child", "-null-server", addr(h.p.component),
		"-subs", strconv.Itoa(h.o.Subs), "-handles", strconv.Itoa(h.o.Handles), "-null-show", h.show,
		"-null-caps="+strconv.FormatBool(h.o.NullCaps))
	cmd.Env = append(os.Environ(), secretEnv+"="+h.secret)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, n: 4096}
	p, err := startProcess(cmd, "null component", true)
	if err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err = <-ready:
	case <-time.After(30 * time.Second):
		err = errors.New("not connected after 30 s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		p.stop(5 * time.Second)
		return nil, fmt.Errorf("null component: %v %s", err, stderr.String())
	}
	return p, nil
}

// runNullChild is the null component's own process: it connects, says
// "ready" on out and serves until SIGTERM.
func runNullChild(ctx context.Context, o options, out io.Writer) error {
	n, err := dialNull(ctx, nullConfig{server: o.nullServer, domain: componentDomain, secret: os.Getenv(secretEnv),
		host: userHost, owner: ownerJID, subs: o.Subs, handles: o.Handles, show: o.nullShow, extra: extraOf(o.NullCaps)})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "ready")
	err = n.serve(ctx)
	n.close()
	return err
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	mu sync.Mutex
	w  io.Writer
	n  int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 {
		k := min(len(b), l.n)
		_, _ = l.w.Write(b[:k])
		l.n -= k
	}
	return len(b), nil
}

// cpuNow samples the CPU time of the server, the component and the harness.
func (h *harness) cpuNow(comp *process) (cpuUse, error) {
	var u cpuUse
	var err1, err2, err3 error
	u.Server, err1 = proc.CPU(h.server.pid())
	u.Component, err2 = proc.CPU(comp.pid())
	u.Harness, err3 = proc.CPU(os.Getpid())
	return u, errors.Join(err1, err2, err3)
}

func (u cpuUse) sub(v cpuUse) cpuUse {
	return cpuUse{Server: u.Server - v.Server, Component: u.Component - v.Component, Harness: u.Harness - v.Harness}
}

// measure runs the turn's fan-out rounds, then its login storms. CPU is
// summed over the rounds (and over the storms) only: each window opens
// after the quiet pause, just before the trigger, and closes as soon as the
// round has ended.
func (h *harness) measure(ctx context.Context, comp *process, t *turnResult) error {
	for i := range h.o.Rounds {
		o, cpu, err := h.fanoutRound(ctx, comp)
		if err != nil {
			return err
		}
		t.RoundsCPU = t.RoundsCPU.add(cpu)
		t.Rounds = append(t.Rounds, o)
		h.verbose("pair %d %-9s round %d (%s): %s", t.Pair+1, t.Side, i+1, h.show, o)
		if !comp.alive() {
			return errors.New("the component exited during the rounds")
		}
	}
	for i := range h.o.Storms {
		o, cpu, err := h.storm(ctx, comp)
		if err != nil {
			return fmt.Errorf("login storm: %w", err)
		}
		t.StormCPU = t.StormCPU.add(cpu)
		t.Storms = append(t.Storms, o)
		h.verbose("pair %d %-9s storm %d: %s", t.Pair+1, t.Side, i+1, o)
	}
	return nil
}

// fanoutRound pauses, then has the owner switch its show between away and
// dnd and waits until every subscriber has it from every handle. It returns
// the round and the CPU used from just before the trigger to its end.
func (h *harness) fanoutRound(ctx context.Context, comp *process) (outcome, cpuUse, error) {
	show := "dnd"
	if h.show == "dnd" {
		show = "away"
	}
	if err := quiet(ctx); err != nil {
		return outcome{}, cpuUse{}, err
	}
	c0, err := h.cpuNow(comp)
	if err != nil {
		return outcome{}, cpuUse{}, err
	}
	r := newRound(modeShow, show, h.o.Handles, len(h.subs))
	stanza := "<presence><show>" + show + "</show></presence>"
	o, err := runRound(ctx, h.subs, r, h.o.Timeout, func() (time.Time, error) {
		t0 := time.Now()
		return t0, h.owner.write(stanza)
	})
	if err != nil {
		return o, cpuUse{}, err
	}
	c1, err := h.cpuNow(comp)
	if err != nil {
		return o, cpuUse{}, err
	}
	// The owner's show changed even if the round is incomplete.
	h.show = show
	return o, c1.sub(c0), nil
}

func (u cpuUse) add(v cpuUse) cpuUse {
	return cpuUse{Server: u.Server + v.Server, Component: u.Component + v.Component, Harness: u.Harness + v.Harness}
}

// storm makes every subscriber unavailable (and waits until the server has
// processed it), then has every subscriber send initial presence again: the
// server probes every handle for every subscriber (S×H probes) and the
// round ends when every subscriber has every handle's available presence.
func (h *harness) storm(ctx context.Context, comp *process) (outcome, cpuUse, error) {
	for _, c := range h.subs {
		if err := c.write("<presence type='unavailable'/>"); err != nil {
			return outcome{}, cpuUse{}, err
		}
	}
	if err := pingAll(ctx, h.subs); err != nil {
		return outcome{}, cpuUse{}, err
	}
	if err := quiet(ctx); err != nil {
		return outcome{}, cpuUse{}, err
	}
	c0, err := h.cpuNow(comp)
	if err != nil {
		return outcome{}, cpuUse{}, err
	}
	r := newRound(modeAvailable, "", h.o.Handles, len(h.subs))
	o, err := runRound(ctx, h.subs, r, h.o.Timeout, func() (time.Time, error) {
		t0 := time.Now()
		for _, c := range h.subs {
			if err := c.write("<presence/>"); err != nil {
				return t0, err
			}
		}
		return t0, nil
	})
	if err != nil {
		return o, cpuUse{}, err
	}
	c1, err := h.cpuNow(comp)
	return o, c1.sub(c0), err
}

// quietGap is the pause before every trigger. The servers leave Nagle's
// algorithm on: a stanza written while an earlier one is not yet
// acknowledged waits for the peer's delayed ACK (40 ms or more on Linux).
// Without the pause a trigger sent right after the previous round, or right
// after a connection, measured ~45 ms more on either side.
const quietGap = 250 * time.Millisecond

// quiet waits quietGap, or until ctx ends.
func quiet(ctx context.Context) error {
	select {
	case <-time.After(quietGap):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pingAll pings every client at once and waits for every answer.
func pingAll(ctx context.Context, cs []*client) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.ping(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (h *harness) verbose(format string, args ...any) {
	if h.o.Verbose {
		fmt.Fprintf(h.out, format+"\n", args...)
	}
}

// String summarises an outcome on one line.
func (o outcome) String() string {
	return fmt.Sprintf("%d/%d in %.1f ms (first %.1f ms, %.0f stanzas/s), missing %d, duplicates %d, other %d",
		o.Delivered, o.Expected, ms(o.Duration), ms(o.First), rate(o), o.Missing, o.Duplicates, o.Other)
}
