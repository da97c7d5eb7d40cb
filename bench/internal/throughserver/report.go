package throughserver

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"presenced/bench/internal/proc"
	"presenced/bench/internal/shared"
)

// Sides of a comparison.
const (
	sidePresenced = "presenced"
	sideNull      = "null"
)

// turnResult is what one side measured in one turn.
type turnResult struct {
	Side   string    `json:"side"`
	Pair   int       `json:"pair"`
	Rounds []outcome `json:"rounds"`
	Storms []outcome `json:"storms"`

	// CPU over the measured fan-out rounds and over the storms.
	RoundsCPU cpuUse `json:"rounds_cpu"`
	StormCPU  cpuUse `json:"storm_cpu"`

	// presenced only: settling after it connected, and its withdrawal at
	// shutdown.
	Settle   *outcome `json:"settle,omitempty"`
	Withdraw *outcome `json:"withdraw,omitempty"`

	ServerRSS    int64 `json:"server_rss_bytes"`
	ComponentRSS int64 `json:"component_rss_bytes"`
}

// cpuUse is the CPU time used by each process over a stretch.
type cpuUse struct {
	Server    time.Duration `json:"server_ns"`
	Component time.Duration `json:"component_ns"`
	Harness   time.Duration `json:"harness_ns"` // the tool itself: the clients
}

// delivered sums the distinct stanzas delivered in os.
func delivered(os []outcome) int {
	n := 0
	for _, o := range os {
		n += o.Delivered
	}
	return n
}

// perThousand is CPU milliseconds per 1,000 stanzas; NaN without stanzas
// or when cpu is under minRatioCPU (5 ticks of /proc), too coarse to show.
func perThousand(cpu time.Duration, stanzas int) float64 {
	if stanzas == 0 || cpu < minRatioCPU {
		return math.NaN()
	}
	return float64(cpu) / float64(time.Millisecond) / (float64(stanzas) / 1000)
}

// rate is stanzas per second of one round; NaN if it lasted no time.
func rate(o outcome) float64 {
	if o.Duration <= 0 {
		return math.NaN()
	}
	return float64(o.Delivered) / o.Duration.Seconds()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// metric is one row of the report: the values one turn gives for it (one
// per round, or one for the turn).
type metric struct {
	name  string
	unit  string
	turn  func(t turnResult) []float64
	ratio bool // whether presenced/null is meaningful
	// cpu, for CPU rows, is the CPU time behind a turn's figure: a ratio
	// needs at least minRatioCPU on both sides.
	cpu func(t turnResult) time.Duration
}

// minRatioCPU is the least CPU time a ratio is computed from: /proc counts
// in 10 ms ticks.
const minRatioCPU = 50 * time.Millisecond

// eachOutcome applies f to every complete outcome of os: a round or storm
// that timed out has no round time, first stanza or rate (its missing
// presences are counted in the delivery table instead).
func eachOutcome(os []outcome, f func(outcome) float64) []float64 {
	v := make([]float64, 0, len(os))
	for _, o := range os {
		if o.Complete {
			v = append(v, f(o))
		}
	}
	return v
}

// metrics are the report's rows.
var metrics = []metric{
	{"fan-out rate", "stanzas/s", func(t turnResult) []float64 { return eachOutcome(t.Rounds, rate) }, true, nil},
	{"round time", "ms", func(t turnResult) []float64 {
		return eachOutcome(t.Rounds, func(o outcome) float64 { return ms(o.Duration) })
	}, true, nil},
	{"first stanza", "ms", func(t turnResult) []float64 {
		return eachOutcome(t.Rounds, func(o outcome) float64 { return ms(o.First) })
	}, true, nil},
	{"server CPU per 1k", "ms", func(t turnResult) []float64 {
		return []float64{perThousand(t.RoundsCPU.Server, delivered(t.Rounds))}
	}, true, func(t turnResult) time.Duration { return t.RoundsCPU.Server }},
	{"component CPU per 1k", "ms", func(t turnResult) []float64 {
		return []float64{perThousand(t.RoundsCPU.Component, delivered(t.Rounds))}
	}, true, func(t turnResult) time.Duration { return t.RoundsCPU.Component }},
	{"harness CPU per 1k", "ms", func(t turnResult) []float64 {
		return []float64{perThousand(t.RoundsCPU.Harness, delivered(t.Rounds))}
	}, true, func(t turnResult) time.Duration { return t.RoundsCPU.Harness }},
	{"login storm time", "ms", func(t turnResult) []float64 {
		return eachOutcome(t.Storms, func(o outcome) float64 { return ms(o.Duration) })
	}, true, nil},
	{"login storm rate", "stanzas/s", func(t turnResult) []float64 { return eachOutcome(t.Storms, rate) }, true, nil},
	{"storm first stanza", "ms", func(t turnResult) []float64 {
		return eachOutcome(t.Storms, func(o outcome) float64 { return ms(o.First) })
	}, true, nil},
	{"storm server CPU per 1k", "ms", func(t turnResult) []float64 {
		return []float64{perThousand(t.StormCPU.Server, delivered(t.Storms))}
	}, true, func(t turnResult) time.Duration { return t.StormCPU.Server }},
	{"storm component CPU per 1k", "ms", func(t turnResult) []float64 {
		return []float64{perThousand(t.StormCPU.Component, delivered(t.Storms))}
	}, true, func(t turnResult) time.Duration { return t.StormCPU.Component }},
	{"server RSS at turn end", "MiB", func(t turnResult) []float64 { return []float64{float64(t.ServerRSS) / (1 << 20)} }, false, nil},
	{"component RSS at turn end", "MiB", func(t turnResult) []float64 { return []float64{float64(t.ComponentRSS) / (1 << 20)} }, false, nil},
}

// row is one metric summarised for both sides and their ratio.
type row struct {
	Name      string       `json:"name"`
	Unit      string       `json:"unit"`
	Presenced proc.Summary `json:"presenced"`
	Null      proc.Summary `json:"null"`
	// Ratio summarises, over the pairs, presenced's turn median divided by
	// the null component's turn median in the same pair.
	Ratio  proc.Summary `json:"ratio"`
	Ratios []float64    `json:"ratios"`
	// PresencedN and NullN count the figures behind each side's summary.
	PresencedN int `json:"presenced_n"`
	NullN      int `json:"null_n"`
}

// finite drops NaN and infinite values.
func finite(xs []float64) []float64 {
	out := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			out = append(out, x)
		}
	}
	return out
}

// summarizeRows computes every metric over turns. Pairs are matched by
// their Pair number; a pair missing one side gives no ratio.
func summarizeRows(turns []turnResult) []row {
	var rows []row
	for _, m := range metrics {
		r := row{Name: m.name, Unit: m.unit}
		var pv, nv []float64
		pm, nm := map[int]float64{}, map[int]float64{}
		for _, t := range turns {
			v := finite(m.turn(t))
			if len(v) == 0 {
				continue
			}
			med := proc.Summarize(v).Median
			side, ratios := &nv, nm
			if t.Side == sidePresenced {
				side, ratios = &pv, pm
			}
			*side = append(*side, v...)
			if m.cpu == nil || m.cpu(t) >= minRatioCPU {
				ratios[t.Pair] = med
			}
		}
		r.Presenced, r.Null = proc.Summarize(pv), proc.Summarize(nv)
		r.PresencedN, r.NullN = len(pv), len(nv)
		if m.ratio {
			for pair := 0; pair < len(turns); pair++ {
				p, ok1 := pm[pair]
				n, ok2 := nm[pair]
				if ok1 && ok2 && n != 0 {
					r.Ratios = append(r.Ratios, p/n)
				}
			}
			r.Ratio = proc.Summarize(r.Ratios)
		}
		rows = append(rows, r)
	}
	return rows
}

// deliveryTotals sums the outcomes of one side.
type deliveryTotals struct {
	Expected, Delivered, Missing, Duplicates, Other, Incomplete int
}

func (d *deliveryTotals) add(os []outcome) {
	for _, o := range os {
		d.Expected += o.Expected
		d.Delivered += o.Delivered
		d.Missing += o.Missing
		d.Duplicates += o.Duplicates
		d.Other += o.Other
		if !o.Complete {
			d.Incomplete++
		}
	}
}

// totals returns the delivery totals of side's rounds and storms.
func totals(turns []turnResult, side string) (rounds, storms deliveryTotals) {
	for _, t := range turns {
		if t.Side == side {
			rounds.add(t.Rounds)
			storms.add(t.Storms)
		}
	}
	return rounds, storms
}

// formatSummary prints "median [min–max]" with a precision fit for the
// magnitude; "-" when there are no figures.
func formatSummary(s proc.Summary, n int) string {
	if n == 0 {
		return "-"
	}
	if s.Min == s.Max {
		return num(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", num(s.Median), num(s.Min), num(s.Max))
}

// num formats x with three significant figures at most, thousands grouped.
func num(x float64) string {
	switch ax := math.Abs(x); {
	case ax >= 1000:
		return shared.Thousands(int64(math.Round(x)))
	case ax >= 100:
		return fmt.Sprintf("%.0f", x)
	case ax >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

// writeTable prints the comparison.
func writeTable(out io.Writer, rep *report) {
	fmt.Fprintf(out, "\npresenced vs null component through %s: %d subscribers × %d handles, %d pairs × %d rounds (+%d login storm each)\n",
		rep.Options.XMPP, rep.Options.Subs, rep.Options.Handles, rep.Options.Pairs, rep.Options.Rounds, rep.Options.Storms)
	fmt.Fprintf(out, "presenced binary: %s\n", rep.Options.Presenced)
	fmt.Fprintf(out, "figures: median [min–max]; ratio: median [min–max] over pairs of presenced/null turn medians\n\n")
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tunit\tpresenced\tnull\tpresenced/null\t")
	for _, r := range rep.Rows {
		ratio := "n/a"
		if len(r.Ratios) > 0 {
			ratio = formatSummary(r.Ratio, len(r.Ratios))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.Name, r.Unit,
			formatSummary(r.Presenced, r.PresencedN), formatSummary(r.Null, r.NullN), ratio)
	}
	tw.Flush()
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "delivery\texpected\tdelivered\tmissing\tduplicates\tother\tincomplete rounds\t")
	for _, side := range []string{sidePresenced, sideNull} {
		rd, st := totals(rep.Turns, side)
		fmt.Fprintf(tw, "%s fan-out\t%d\t%d\t%d\t%d\t%d\t%d\t\n", side, rd.Expected, rd.Delivered, rd.Missing, rd.Duplicates, rd.Other, rd.Incomplete)
		fmt.Fprintf(tw, "%s storm\t%d\t%d\t%d\t%d\t%d\t%d\t\n", side, st.Expected, st.Delivered, st.Missing, st.Duplicates, st.Other, st.Incomplete)
	}
	tw.Flush()
	fmt.Fprintln(out, "Incomplete rounds and storms (timed out) are left out of round time, first stanza and rate; their deliveries count in the CPU per 1k.")
	if rep.FailedTurns > 0 {
		fmt.Fprintf(out, "%d of %d turns did not complete (failed or interrupted): none of their figures is above.\n",
			rep.FailedTurns, 2*rep.Options.Pairs)
	}
	fmt.Fprintln(out)
	for _, t := range rep.Turns {
		if t.Side != sidePresenced {
			continue
		}
		line := fmt.Sprintf("pair %d: presenced settled", t.Pair+1)
		if t.Settle != nil {
			line += fmt.Sprintf(" in %.0f ms (%d/%d)", ms(t.Settle.Duration), t.Settle.Delivered, t.Settle.Expected)
		}
		if t.Withdraw != nil {
			line += fmt.Sprintf("; withdrew %d/%d handle presences in %.0f ms after SIGTERM", t.Withdraw.Delivered, t.Withdraw.Expected, ms(t.Withdraw.Duration))
		}
		fmt.Fprintln(out, line)
	}
	fmt.Fprintf(out, "\nset-up: %s\n", rep.Setup)
	fmt.Fprintln(out, "CPU from /proc utime+stime, summed over each measured round (or storm): sampled after the quiet pause just before its trigger "+
		"and again just after it ended; the null component runs as a child process of the harness, "+
		"so its CPU is its own; \"harness\" is the tool's own process (the clients). "+
		"A CPU figure is left out (\"-\") and a CPU ratio is n/a when the turn used under 50 ms (/proc counts 10 ms ticks).")
}
