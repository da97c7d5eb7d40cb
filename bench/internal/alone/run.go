package alone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"presenced/bench/internal/proc"
	"presenced/bench/internal/shared"
	"presenced/storage"
)

// cpuOf is presenced's CPU time so far.
func cpuOf(c *child) (time.Duration, error) {
	d, err := proc.CPU(c.pid())
	if err != nil {
		return 0, c.failure(fmt.Errorf("read CPU: %w", err))
	}
	return d, nil
}

// selfCPU is the harness's own CPU time so far (0 if unreadable).
func selfCPU() time.Duration {
	d, _ := proc.CPU(os.Getpid())
	return d
}

// session is one presenced process connected to the harness.
type session struct {
	c       *child
	l       *link
	startup time.Duration // process start → handshake received
	hsAt    time.Time
}

// connect starts bin on the database and accepts its stream.
func connect(ctx context.Context, bin, dir, driver, dsn string, limit time.Duration) (*session, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	secret := shared.RandomHex(12)
	c, err := startChild(bin, dir, configText(ln.Addr().String(), secret, driver, dsn))
	if err != nil {
		return nil, err
	}
	l, hsAt, err := acceptLink(ctx, ln, secret, c.exited, limit)
	if err != nil {
		c.kill()
		return nil, c.failure(err)
	}
	return &session{c: c, l: l, startup: hsAt.Sub(c.started), hsAt: hsAt}, nil
}

// exitGrace bounds the wait for presenced to exit once its stream is
// closed, and again after SIGKILL.
const exitGrace = 10 * time.Second

// shutdown sends SIGINT, drains what presenced sends while it withdraws
// (until presenced closes its stream or exits, at most limit), closes the
// harness's side of the stream, and waits at most exitGrace for the exit;
// then it kills presenced (SIGKILL, waited for at most exitGrace). It
// returns the number of stanzas drained. ctx ends every wait at once.
func (s *session) shutdown(ctx context.Context, limit time.Duration) (int64, error) {
	n := &counter{}
	s.l.use(n)
	_ = s.c.cmd.Process.Signal(os.Interrupt)
	err := waitAny(ctx, limit, s.l.ended, s.c.exited)
	s.l.close()
	if err == nil || errors.Is(err, errTimeout) {
		// The drain timing out is not yet a failure: presenced may exit
		// once the harness closes its side.
		err = waitAny(ctx, exitGrace, s.c.exited, nil)
	}
	if err != nil {
		s.c.kill()
		return n.n.Load(), s.c.failure(fmt.Errorf("presenced did not stop within %v of SIGINT (+%v after the stream closed): %w", limit, exitGrace, err))
	}
	if s.c.waitErr != nil {
		return n.n.Load(), s.c.failure(fmt.Errorf("presenced exited with an error"))
	}
	return n.n.Load(), nil
}

// errTimeout is waitAny's error when d passed.
var errTimeout = errors.New("timed out")

// waitAny waits until a or b (nil: never) is closed, d passes (errTimeout)
// or ctx ends (its error).
func waitAny(ctx context.Context, d time.Duration, a, b <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-a:
		return nil
	case <-b:
		return nil
	case <-t.C:
		return errTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// verify reopens the database after presenced exited and checks that it
// holds exactly the H×C subscriptions of the storm.
func verify(ctx context.Context, driver, dsn string, handles, contacts int) (int, error) {
	st, err := storage.Open(ctx, driver, dsn)
	if err != nil {
		return 0, fmt.Errorf("verify: %w", err)
	}
	defer st.Close()
	snap, err := st.Load(ctx)
	if err != nil {
		return 0, fmt.Errorf("verify: %w", err)
	}
	seen := make([]bool, handles*contacts)
	good := 0
	for _, sub := range snap.Subscriptions {
		j, ok1 := jidIndex([]byte(sub.Handle+"@"+domain), 'h', domain, handles)
		k, ok2 := jidIndex([]byte(sub.Contact), 'c', contactDomain, contacts)
		if ok1 && ok2 && !seen[j*contacts+k] {
			seen[j*contacts+k] = true
			good++
		}
	}
	n := len(snap.Subscriptions)
	if n != handles*contacts || good != n {
		return n, fmt.Errorf("verify: database holds %d subscriptions (%d of the storm's), want %d", n, good, handles*contacts)
	}
	return n, nil
}

// runScenarios measures one build: subscribe storm, probe storm and owner
// fan-out on a fresh database, then checks what was stored.
func runScenarios(ctx context.Context, o *options, dbs *databases, bin, tmp string) (*result, error) {
	dir, err := os.MkdirTemp(tmp, "run-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	dsn, drop, err := dbs.fresh(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer drop()
	if err := prepare(ctx, bin, dir, o.store, dsn, o.handles); err != nil {
		return nil, err
	}
	s, err := connect(ctx, bin, dir, o.store, dsn, o.stall)
	if err != nil {
		return nil, err
	}
	defer s.c.kill()
	defer s.l.conn.Close()
	res := &result{Build: bin}
	res.add("start-up", "ms", ms(s.startup))
	// The owner probe and the resync (200 ms) pass before the storms.
	s.l.use(&counter{})
	s.l.waitQuiet(500*time.Millisecond, o.stall)

	sub, err := runStorm(ctx, s.l, s.c, o, "subscribe")
	if err != nil {
		return nil, s.c.failure(err)
	}
	res.addStorm("subscribe", sub)
	res.add("subscribe: presences after", "count", float64(sub.extra))
	res.add("subscribe: all notified", "s", sub.notified.Seconds())

	pr, err := runStorm(ctx, s.l, s.c, o, "probe")
	if err != nil {
		return nil, s.c.failure(err)
	}
	res.addStorm("probe", pr)

	fo, err := runFanout(ctx, s.l, s.c, o)
	if err != nil {
		return nil, s.c.failure(err)
	}
	res.addFanout(fo, o.handles*o.contacts)

	t0 := time.Now()
	drained, err := s.shutdown(ctx, o.stall+time.Duration(o.handles*o.contacts)*50*time.Microsecond)
	if err != nil {
		return nil, err
	}
	res.add("shutdown", "s", time.Since(t0).Seconds())
	res.add("shutdown: stanzas", "count", float64(drained))
	n, err := verify(ctx, o.store, dsn, o.handles, o.contacts)
	if err != nil {
		return nil, err
	}
	res.add("stored subscriptions", "count", float64(n))
	return res, nil
}

// addStorm records a storm's rate, CPU per stanza and wall time.
func (r *result) addStorm(name string, s stormResult) {
	r.add(name+" rate", "/s", float64(s.n)/s.wall.Seconds())
	r.addCPU(name+" CPU", s.cpu, s.n)
	r.addCPU(name+" harness CPU", s.self, s.n)
	r.add(name+" wall", "s", s.wall.Seconds())
	r.add(name+" failed", "count", float64(s.failed))
	r.add(name+" duplicates", "count", float64(s.dups))
}

// addFanout records the fan-out's rate (stanzas per round over the median
// round time), round times, CPU per stanza and faults.
func (r *result) addFanout(f fanoutResult, perRound int) {
	rounds := make([]float64, len(f.rounds))
	for i, d := range f.rounds {
		rounds[i] = ms(d)
	}
	r.Rounds = rounds
	if f.online > 0 {
		r.add("fan-out: on-line round", "ms", ms(f.online))
	}
	// Timed-out rounds have no time: they are counted apart below.
	if len(rounds) > 0 {
		sum := proc.Summarize(rounds)
		if sum.Median > 0 {
			r.add("fan-out rate", "/s", float64(perRound)/(sum.Median/1000))
		}
		r.add("fan-out round median", "ms", sum.Median)
		r.add("fan-out round min", "ms", sum.Min)
		r.add("fan-out round max", "ms", sum.Max)
		r.addCPU("fan-out CPU", f.cpu, perRound*len(f.rounds))
		r.addCPU("fan-out harness CPU", f.self, perRound*len(f.rounds))
	}
	r.add("fan-out missing", "count", float64(f.missing))
	r.add("fan-out duplicates", "count", float64(f.dups))
	r.add("fan-out stray", "count", float64(f.stray))
	r.add("fan-out timed-out rounds", "count", float64(f.timeouts))
	r.add("fan-out completed rounds", "count", float64(len(f.rounds)))
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// perStanza is cpu per stanza in microseconds; 0 when n is 0.
func perStanza(cpu time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu) / float64(time.Microsecond) / float64(n)
}
