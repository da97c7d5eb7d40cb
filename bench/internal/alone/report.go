package alone

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"presenced/bench/internal/proc"
	"presenced/bench/internal/shared"
)

// figure is one measured value.
type figure struct {
	Name  string  `json:"name"`
	Unit  string  `json:"unit"`
	Value float64 `json:"value"`
	// NA marks a CPU figure computed from under minCPU of CPU time: /proc
	// counts 10 ms ticks, too coarse to show. It is shown as n/a and left
	// out of medians and ratios.
	NA bool `json:"na,omitempty"`
}

// minCPU is the least CPU time a CPU figure is shown for: 5 ticks.
const minCPU = 50 * time.Millisecond

// result is what one run of one build measured, figures in report order.
type result struct {
	Build   string    `json:"build"`
	Pair    int       `json:"pair"`
	Figures []figure  `json:"figures"`
	Rounds  []float64 `json:"fanout_rounds_ms,omitempty"`
	// Settled (-million only) is false when either RSS sample was taken
	// after waiting settleLimit without 1 s free of stanzas.
	Settled *bool `json:"settled,omitempty"`
}

// add appends a figure.
func (r *result) add(name, unit string, v float64) {
	r.Figures = append(r.Figures, figure{Name: name, Unit: unit, Value: v})
}

// addCPU appends a CPU figure in µs per stanza, n/a when cpu is under
// minCPU.
func (r *result) addCPU(name string, cpu time.Duration, n int) {
	r.Figures = append(r.Figures, figure{Name: name, Unit: "µs/stanza", Value: perStanza(cpu, n), NA: cpu < minCPU})
}

// value returns the named figure; ok false if the run lacks it or it is
// n/a.
func (r *result) value(name string) (float64, bool) {
	for _, f := range r.Figures {
		if f.Name == name {
			return f.Value, !f.NA
		}
	}
	return 0, false
}

// cell is the named figure as the run table shows it: "-" if missing,
// "n/a" if too coarse.
func (r *result) cell(name, unit string) string {
	for _, f := range r.Figures {
		if f.Name == name {
			if f.NA {
				return "n/a"
			}
			return format(f.Value, unit)
		}
	}
	return "-"
}

// ratios returns, for each pair in which both runs have the figure and the
// base is not zero, the ratio run/base, and their median; ok false if no
// pair qualifies.
func ratios(base, runs []*result, name string) (per []float64, median float64, ok bool) {
	for p := range min(len(base), len(runs)) {
		b, ok1 := base[p].value(name)
		v, ok2 := runs[p].value(name)
		if ok1 && ok2 && b != 0 {
			per = append(per, v/b)
		}
	}
	if len(per) == 0 {
		return nil, 0, false
	}
	return per, proc.Summarize(per).Median, true
}

// format renders v for its unit: rates and counts as integers with
// thousands separators, times with a precision that fits.
func format(v float64, unit string) string {
	switch {
	case unit == "count" || unit == "/s" || unit == "bytes" && math.Abs(v) >= 100:
		return shared.Thousands(int64(math.Round(v)))
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// report writes one table per build (a column per run and the median) and,
// for two builds or more, each build's ratios to the first one.
func report(out io.Writer, builds []string, runs [][]*result) {
	if len(runs) == 0 || len(runs[0]) == 0 {
		return
	}
	names := figureNames(runs)
	for b, bin := range builds {
		fmt.Fprintf(out, "\n%s (%s)\n", label(bin), bin)
		head := []string{"figure", "unit"}
		for p := range runs[b] {
			head = append(head, fmt.Sprintf("run %d", p+1))
		}
		rows := [][]string{append(head, "median")}
		for _, f := range names {
			row := []string{f.Name, f.Unit}
			var xs []float64
			for _, r := range runs[b] {
				if v, ok := r.value(f.Name); ok {
					xs = append(xs, v)
				}
				row = append(row, r.cell(f.Name, f.Unit))
			}
			med := "n/a"
			if len(xs) > 0 {
				med = format(proc.Summarize(xs).Median, f.Unit)
			}
			rows = append(rows, append(row, med))
		}
		writeTable(out, rows)
		if line := settledLine(runs[b]); line != "" {
			fmt.Fprintln(out, line)
		}
	}
	for b := 1; b < len(builds); b++ {
		fmt.Fprintf(out, "\n%s / %s (median of per-pair ratios; >1 means more of the figure)\n", label(builds[b]), label(builds[0]))
		rows := [][]string{{"figure", "ratio", "per pair"}}
		for _, f := range names {
			if f.Unit == "count" {
				continue
			}
			per, med, ok := ratios(runs[0], runs[b], f.Name)
			if !ok {
				continue
			}
			ps := make([]string, len(per))
			for i, x := range per {
				ps[i] = fmt.Sprintf("%.2f", x)
			}
			rows = append(rows, []string{f.Name, fmt.Sprintf("%.2f", med), strings.Join(ps, " ")})
		}
		writeTable(out, rows)
	}
}

// settledLine says, for -million runs, which runs' RSS was sampled before
// presenced settled; "" for other runs.
func settledLine(runs []*result) string {
	var not []string
	some := false
	for p, r := range runs {
		if r.Settled == nil {
			continue
		}
		some = true
		if !*r.Settled {
			not = append(not, fmt.Sprintf("run %d", p+1))
		}
	}
	switch {
	case !some:
		return ""
	case len(not) == 0:
		return "settled: yes in every run (1 s without a stanza before each RSS sample)"
	default:
		return "settled: NO in " + strings.Join(not, ", ") + " (still receiving stanzas after " + settleLimit.String() + "; RSS sampled anyway)"
	}
}

// figureNames lists every figure of any run once, in the order of first
// appearance (a run whose fan-out timed out lacks some).
func figureNames(runs [][]*result) []figure {
	var names []figure
	seen := map[string]bool{}
	for _, rs := range runs {
		for _, r := range rs {
			for _, f := range r.Figures {
				if !seen[f.Name] {
					seen[f.Name] = true
					names = append(names, figure{Name: f.Name, Unit: f.Unit})
				}
			}
		}
	}
	return names
}

// writeTable writes rows as columns two spaces apart, the first column
// aligned left and the others right.
func writeTable(out io.Writer, rows [][]string) {
	var width []int
	for _, row := range rows {
		for i, cell := range row {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell))
			if i == 0 {
				b.WriteString(cell + pad)
			} else {
				b.WriteString("  " + pad + cell)
			}
		}
		fmt.Fprintln(out, b.String())
	}
}

// label is the short name of a build: its file name.
func label(bin string) string { return filepath.Base(bin) }
