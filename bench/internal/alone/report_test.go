package alone

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func run(pair int, kv ...any) *result {
	r := &result{Build: "b", Pair: pair}
	for i := 0; i < len(kv); i += 2 {
		r.add(kv[i].(string), "/s", kv[i+1].(float64))
	}
	return r
}

func TestRatiosAreMedianOfPerPairRatios(t *testing.T) {
	base := []*result{run(1, "rate", 100.0), run(2, "rate", 200.0), run(3, "rate", 50.0)}
	other := []*result{run(1, "rate", 150.0), run(2, "rate", 200.0), run(3, "rate", 150.0)}
	per, med, ok := ratios(base, other, "rate")
	if !ok || len(per) != 3 || per[0] != 1.5 || per[1] != 1 || per[2] != 3 {
		t.Fatalf("per-pair ratios %v", per)
	}
	// The median of the ratios (1.5), not the ratio of the medians (150/100).
	if med != 1.5 {
		t.Fatalf("median ratio %v, want 1.5", med)
	}
	if _, _, ok := ratios(base, other, "missing"); ok {
		t.Fatal("ratio of a missing figure")
	}
	zero := []*result{run(1, "rate", 0.0)}
	if _, _, ok := ratios(zero, other[:1], "rate"); ok {
		t.Fatal("ratio against zero")
	}
}

func TestPerStanzaAndMs(t *testing.T) {
	if got := perStanza(1500*1e6, 1000); math.Abs(got-1500) > 1e-9 { // 1.5 s over 1000 stanzas
		t.Fatalf("perStanza = %v µs, want 1500", got)
	}
	if perStanza(1e9, 0) != 0 {
		t.Fatal("perStanza of no stanza")
	}
	if ms(2500*1e3) != 2.5 {
		t.Fatal("ms")
	}
}

func TestFormat(t *testing.T) {
	cases := []struct {
		v    float64
		unit string
		want string
	}{
		{1234567.4, "/s", "1,234,567"},
		{-1234, "count", "-1,234"},
		{999, "count", "999"},
		{198.4, "bytes", "198"},
		{12.345, "ms", "12.3"},
		{0.456, "s", "0.46"},
		{155.2, "µs/stanza", "155"},
	}
	for _, c := range cases {
		if got := format(c.v, c.unit); got != c.want {
			t.Errorf("format(%v, %s) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

func TestReportTables(t *testing.T) {
	a := []*result{run(1, "subscribe rate", 100.0), run(2, "subscribe rate", 300.0)}
	b := []*result{run(1, "subscribe rate", 200.0), run(2, "subscribe rate", 300.0)}
	var out bytes.Buffer
	report(&out, []string{"/x/A", "/x/B"}, [][]*result{a, b})
	s := out.String()
	for _, want := range []string{
		"A (/x/A)",
		"subscribe rate    /s    100    300     200", // runs, then the median
		"B / A",
		"subscribe rate   1.50  2.00 1.00",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

func TestWriteTableAlignsColumns(t *testing.T) {
	var out bytes.Buffer
	writeTable(&out, [][]string{{"name", "µs"}, {"a", "1,000"}})
	want := "name     µs\na     1,000\n"
	if out.String() != want {
		t.Fatalf("table:\n%q\nwant\n%q", out.String(), want)
	}
}
