package alone

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWaitAnyIsBoundedAndHonoursContext(t *testing.T) {
	never := make(chan struct{})
	t0 := time.Now()
	if err := waitAny(context.Background(), 30*time.Millisecond, never, nil); !errors.Is(err, errTimeout) {
		t.Fatalf("waitAny on a channel never closed = %v, want errTimeout", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("waitAny took %v with a 30 ms bound", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := waitAny(ctx, time.Hour, never, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("waitAny with a cancelled context = %v", err)
	}
	closed := make(chan struct{})
	close(closed)
	if err := waitAny(context.Background(), time.Hour, never, closed); err != nil {
		t.Fatalf("waitAny with b closed = %v", err)
	}
}

func TestRunOrderAlternates(t *testing.T) {
	for p, want := range [][]int{{0, 1}, {1, 0}, {0, 1}, {1, 0}} {
		if got := runOrder(2, p); !slices.Equal(got, want) {
			t.Errorf("pair %d: order %v, want %v", p, got, want)
		}
	}
	if got := runOrder(3, 1); !slices.Equal(got, []int{2, 1, 0}) {
		t.Errorf("3 builds, pair 1: %v", got)
	}
	if got := runOrder(1, 1); !slices.Equal(got, []int{0}) {
		t.Errorf("1 build: %v", got)
	}
}

func TestHighestPostgreSQLVersion(t *testing.T) {
	bins := []string{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16.2/bin",
		"/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/beta/bin"}
	if got, ok := highestVersion(bins); !ok || got != "/usr/lib/postgresql/16.2/bin" {
		t.Fatalf("highest = %q %v, want 16.2", got, ok)
	}
	if _, ok := highestVersion([]string{"/usr/lib/postgresql/x/bin"}); ok {
		t.Fatal("a version from a non-numeric folder")
	}
	if _, ok := highestVersion(nil); ok {
		t.Fatal("a version from nothing")
	}
}

func TestDatabaseURLIsCheckedFirst(t *testing.T) {
	got, err := databaseURL("postgres://bench@127.0.0.1:5432/postgres?sslmode=disable", "presenced_bench_1_2")
	if err != nil || got != "postgres://bench@127.0.0.1:5432/presenced_bench_1_2?sslmode=disable" {
		t.Fatalf("databaseURL = %q, %v", got, err)
	}
	for _, bad := range []string{"host=127.0.0.1 user=bench", "mysql://x@y/z", "postgres:///nohost", "%zz"} {
		if _, err := databaseURL(bad, "x"); err == nil {
			t.Errorf("databaseURL(%q) accepted", bad)
		}
	}
}

func TestCoarseCPUIsNotAFigure(t *testing.T) {
	a, b := &result{Pair: 1}, &result{Pair: 1}
	a.addCPU("fan-out CPU", 40*time.Millisecond, 1000) // 4 ticks
	b.addCPU("fan-out CPU", 200*time.Millisecond, 1000)
	if _, ok := a.value("fan-out CPU"); ok {
		t.Fatal("a CPU figure from 4 ticks counts")
	}
	if v, ok := b.value("fan-out CPU"); !ok || v != 200 {
		t.Fatalf("CPU figure %v %v, want 200 µs", v, ok)
	}
	if _, _, ok := ratios([]*result{a}, []*result{b}, "fan-out CPU"); ok {
		t.Fatal("a ratio against a coarse CPU figure")
	}
	var out bytes.Buffer
	report(&out, []string{"/x/A", "/x/B"}, [][]*result{{a}, {b}})
	if !strings.Contains(out.String(), "fan-out CPU  µs/stanza    n/a     n/a") {
		t.Errorf("report does not show n/a:\n%s", out.String())
	}
}

func TestFigureNamesAreTheUnionOfRuns(t *testing.T) {
	a := run(1, "x", 1.0)
	b := run(2, "x", 1.0, "fan-out rate", 5.0)
	names := figureNames([][]*result{{a, b}})
	if len(names) != 2 || names[1].Name != "fan-out rate" {
		t.Fatalf("names %v", names)
	}
}

func TestSettledLine(t *testing.T) {
	yes, no := true, false
	if s := settledLine([]*result{{}}); s != "" {
		t.Fatalf("settled line for a storm run: %q", s)
	}
	if s := settledLine([]*result{{Settled: &yes}, {Settled: &yes}}); !strings.Contains(s, "yes") {
		t.Fatalf("all settled: %q", s)
	}
	if s := settledLine([]*result{{Settled: &yes}, {Settled: &no}}); !strings.Contains(s, "NO in run 2") {
		t.Fatalf("run 2 unsettled: %q", s)
	}
}
