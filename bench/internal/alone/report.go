package alone

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"presenced/bench/internal/proc"
)

// figure is one measured value.
type figure struct {
	Name  string  `json:"name"`
	Unit  string  `json:"unit"`
	Value float64 `json:"value"`
}

// result is what one run of one build measured, figures in report order.
type result struct {
	Build   string    `json:"build"`
	Pair    int       `json:"pair"`
	Figures []figure  `json:"figures"`
	Rounds  []float64 `json:"fanout_rounds_ms,omitempty"`
}

// add appends a figure.
func (r *result) add(name, unit string, v float64) {
	r.Figures = append(r.Figures, figure{name, unit, v})
}

// value returns the named figure.
func (r *result) value(name string) (float64, bool) {
	for _, f := range r.Figures {
		if f.Name == name {
			return f.Value, true
		}
	}
	return 0, false
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
		return thousands(int64(math.Round(v)))
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// thousands writes n with commas every three digits.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// report writes one table per build (a column per run and the median) and,
// for two builds or more, each build's ratios to the first one.
func report(out io.Writer, builds []string, runs [][]*result) {
	if len(runs) == 0 || len(runs[0]) == 0 {
		return
	}
	names := runs[0][0].Figures
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
					row = append(row, format(v, f.Unit))
				} else {
					row = append(row, "-")
				}
			}
			rows = append(rows, append(row, format(proc.Summarize(xs).Median, f.Unit)))
		}
		writeTable(out, rows)
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
