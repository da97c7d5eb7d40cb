// Package alone measures presenced by itself: the harness plays the XMPP
// server on 127.0.0.1, accepts presenced's XEP-0114 stream and drives it
// with a subscribe storm, a probe storm and an owner fan-out, or (with
// -million) measures start-up time and memory on 1M stored subscriptions.
// Several builds are measured side by side in interleaved runs.
package alone

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"presenced/bench/internal/shared"
	"presenced/storage"
)

// options are the command-line flags.
type options struct {
	builds       []string
	pairs        int
	store, dsn   string
	contacts     int
	handles      int
	window       int
	rounds       int
	roundTimeout time.Duration
	stall        time.Duration
	settle       time.Duration
	million      bool
	jsonPath     string
}

// parseFlags reads args into options and checks them.
func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench alone", flag.ContinueOnError)
	fs.SetOutput(out)
	bins := fs.String("presenced", "", "presenced binaries to measure, comma-separated (runs interleaved, the order alternating pair by pair: A B, B A, …)")
	fs.IntVar(&o.pairs, "pairs", 3, "runs of each build")
	fs.StringVar(&o.store, "store", storage.DriverSQLite, "storage driver: sqlite or postgres")
	fs.StringVar(&o.dsn, "dsn", "", "postgres: URL of a database on a server where the harness may create and drop databases; empty starts a throwaway PostgreSQL (the highest version in /usr/lib/postgresql/*/bin, as root)")
	fs.IntVar(&o.contacts, "contacts", 20000, "contacts cK@example.net, each subscribing to every handle")
	fs.IntVar(&o.handles, "handles", 8, "handles hJ of owner@example.org")
	fs.IntVar(&o.window, "window", 256, "most requests unanswered at once in the storms")
	fs.IntVar(&o.rounds, "rounds", 5, "owner show changes in the fan-out")
	fs.DurationVar(&o.roundTimeout, "round-timeout", 30*time.Second, "bound of one fan-out round")
	fs.DurationVar(&o.stall, "stall", 30*time.Second, "a phase fails after this long without progress")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "-million: least time after the handshake before RSS is sampled (then 1 s without a stanza)")
	fs.BoolVar(&o.million, "million", false, "run the 1M test (start-up and memory on 1M subscriptions) instead of the storms and fan-out")
	fs.StringVar(&o.jsonPath, "json", "", "also write the raw figures to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, b := range strings.Split(*bins, ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.builds = append(o.builds, b)
		}
	}
	var errs []error
	if len(o.builds) == 0 {
		errs = append(errs, errors.New("-presenced: give at least one presenced binary"))
	}
	for _, b := range o.builds {
		if st, err := os.Stat(b); err != nil {
			errs = append(errs, fmt.Errorf("-presenced: %w", err))
		} else if st.IsDir() || st.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("-presenced: %s is not an executable file", b))
		}
	}
	if o.store != storage.DriverSQLite && o.store != storage.DriverPostgres {
		errs = append(errs, fmt.Errorf("-store %q: use sqlite or postgres", o.store))
	}
	if o.dsn != "" && o.store != storage.DriverPostgres {
		errs = append(errs, errors.New("-dsn is for -store postgres only"))
	} else if o.dsn != "" {
		if err := checkServerURL(o.dsn); err != nil {
			errs = append(errs, err)
		}
	}
	check := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("-%s %d: out of range %d..%d", name, v, lo, hi))
		}
	}
	check("pairs", o.pairs, 1, 100)
	check("contacts", o.contacts, 1, 10_000_000)
	check("handles", o.handles, 1, 10000)
	check("window", o.window, 1, 1_000_000)
	check("rounds", o.rounds, 1, maxRounds)
	if o.handles*o.contacts > 50_000_000 {
		errs = append(errs, errors.New("-handles × -contacts: more than 50M subscriptions"))
	}
	return o, errors.Join(errs...)
}

// Main runs the harness with args and writes its report to out.
func Main(args []string, out io.Writer) error {
	o, err := parseFlags(args, out)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp("", "presenced-alone-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dbs, err := newDatabases(ctx, o.store, o.dsn, tmp)
	if err != nil {
		return err
	}
	defer dbs.close()

	runs, err := runAll(ctx, o, dbs, tmp, out)
	if len(runs) > 0 && len(runs[0]) > 0 {
		report(out, o.builds, runs)
		if o.jsonPath != "" {
			if jerr := writeJSON(o, runs); jerr != nil && err == nil {
				err = jerr
			}
		}
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	return err
}

// runAll runs every build o.pairs times, interleaved, and returns the
// results per build of the pairs that completed.
func runAll(ctx context.Context, o *options, dbs *databases, tmp string, out io.Writer) ([][]*result, error) {
	var m *million
	if o.million {
		var err error
		fmt.Fprintf(out, "filling %s with %s subscriptions (%d accounts × %d handles × %d subscribers of %d contacts)…\n",
			o.store, shared.Thousands(mTotal), mAccounts, mHandles, mSubscribers, mContacts)
		if m, err = prepareMillion(ctx, dbs, o.builds[0], tmp); err != nil {
			return nil, err
		}
		defer m.drop()
		fmt.Fprintf(out, "filled in %.1f s\n", m.fill.Seconds())
	} else {
		fmt.Fprintf(out, "store %s, %d handles × %s contacts = %s subscriptions, window %d, %d fan-out rounds\n",
			o.store, o.handles, shared.Thousands(int64(o.contacts)), shared.Thousands(int64(o.handles*o.contacts)), o.window, o.rounds)
	}
	runs := make([][]*result, len(o.builds))
	for p := 0; p < o.pairs; p++ {
		pair := make([]*result, len(o.builds))
		for _, b := range runOrder(len(o.builds), p) {
			bin := o.builds[b]
			t0 := time.Now()
			var r *result
			var err error
			if o.million {
				r, err = runMillion(ctx, o, dbs, m, bin, tmp)
			} else {
				r, err = runScenarios(ctx, o, dbs, bin, tmp)
			}
			if err != nil {
				return runs, fmt.Errorf("run %d of %s: %w", p+1, label(bin), err)
			}
			r.Pair = p + 1
			pair[b] = r
			fmt.Fprintf(out, "run %d %-24s done in %5.1f s: %s\n", p+1, label(bin), time.Since(t0).Seconds(), headline(r))
		}
		for b, r := range pair {
			runs[b] = append(runs[b], r)
		}
	}
	return runs, nil
}

// runOrder is the order in which pair p runs the n builds: first to last
// in even pairs, last to first in odd ones (A B, B A, A B …), so that a
// drift over the run weighs on every build alike.
func runOrder(n, p int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
		if p%2 == 1 {
			order[i] = n - 1 - i
		}
	}
	return order
}

// headline is a one-line summary of a run for the progress output.
func headline(r *result) string {
	var parts []string
	for _, name := range []string{"subscribe rate", "probe rate", "fan-out rate", "1M start-up", "RSS per subscription"} {
		if v, ok := r.value(name); ok {
			parts = append(parts, name+" "+format(v, unitOf(r, name)))
		}
	}
	return strings.Join(parts, ", ")
}

// unitOf is the unit of the named figure.
func unitOf(r *result, name string) string {
	for _, f := range r.Figures {
		if f.Name == name {
			return f.Unit
		}
	}
	return ""
}

// writeJSON writes the options and every run's figures.
func writeJSON(o *options, runs [][]*result) error {
	doc := map[string]any{
		"store": o.store, "builds": o.builds, "pairs": o.pairs, "million": o.million,
		"contacts": o.contacts, "handles": o.handles, "window": o.window, "rounds": o.rounds,
		"runs": runs,
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(o.jsonPath, append(b, '\n'), 0o644)
}
