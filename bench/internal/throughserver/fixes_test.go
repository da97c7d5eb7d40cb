package throughserver

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTurnOrderAlternates(t *testing.T) {
	for pair, want := range [][]string{{sidePresenced, sideNull}, {sideNull, sidePresenced}, {sidePresenced, sideNull}} {
		if got := turnOrder(pair); !slices.Equal(got, want) {
			t.Errorf("pair %d: %v, want %v", pair, got, want)
		}
	}
}

func TestIncompleteRoundsHaveNoTime(t *testing.T) {
	done := outcome{Expected: 1000, Delivered: 1000, Duration: 100 * time.Millisecond, First: 10 * time.Millisecond, Complete: true}
	empty := outcome{Expected: 1000, Missing: 1000} // delivered nothing: 0 ms, 0 first
	partial := outcome{Expected: 1000, Delivered: 10, Missing: 990, Duration: time.Millisecond, First: time.Millisecond}
	turns := []turnResult{{Side: sidePresenced, Rounds: []outcome{done, empty, partial}, Storms: []outcome{empty}}}
	byName := map[string]row{}
	for _, r := range summarizeRows(turns) {
		byName[r.Name] = r
	}
	for _, name := range []string{"fan-out rate", "round time", "first stanza"} {
		if r := byName[name]; r.PresencedN != 1 {
			t.Errorf("%s: %d figures, want 1 (the complete round only): %+v", name, r.PresencedN, r)
		}
	}
	if r := byName["round time"]; r.Presenced.Median != 100 {
		t.Errorf("round time %v, want 100", r.Presenced.Median)
	}
	for _, name := range []string{"login storm time", "login storm rate", "storm first stanza"} {
		if r := byName[name]; r.PresencedN != 0 {
			t.Errorf("%s: %d figures from a storm that delivered nothing", name, r.PresencedN)
		}
	}
}

func TestPerThousandUnderFiveTicksIsNaN(t *testing.T) {
	if got := perThousand(40*time.Millisecond, 1000); !math.IsNaN(got) {
		t.Errorf("perThousand(40 ms) = %v, want NaN (4 ticks)", got)
	}
	if got := perThousand(50*time.Millisecond, 1000); got != 50 {
		t.Errorf("perThousand(50 ms, 1000) = %v, want 50", got)
	}
}

func TestSubscriptionsAreCapped(t *testing.T) {
	_, err := parseFlags([]string{"-subs", "5000", "-handles", "1000"}, &strings.Builder{})
	if err == nil || !strings.Contains(err.Error(), "-subs × -handles") {
		t.Fatalf("5000 × 1000: %v", err)
	}
	if _, err := parseFlags([]string{"-subs", "200", "-handles", "64"}, &strings.Builder{}); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

func TestRoundTimeoutCountsTheTrigger(t *testing.T) {
	cs := []*client{{}}
	r := newRound(modeShow, "away", 1, 1)
	t0 := time.Now()
	o, err := runRound(context.Background(), cs, r, 200*time.Millisecond, func() (time.Time, error) {
		time.Sleep(200 * time.Millisecond) // as p.stop does for the withdrawal
		return time.Now(), nil
	})
	if err != nil || o.Complete {
		t.Fatalf("outcome %+v, %v", o, err)
	}
	if d := time.Since(t0); d > 350*time.Millisecond {
		t.Fatalf("round took %v: its bound started after the trigger", d)
	}
}

func TestCheckInstalledNamesThePackage(t *testing.T) {
	err := checkInstalled("nosuchpkg", "no-such-program-presenced-bench", "root")
	if err == nil || !strings.Contains(err.Error(), "apt-get install nosuchpkg") || strings.Contains(err.Error(), "system user") {
		t.Fatalf("missing program: %v", err)
	}
	err = checkInstalled("nosuchpkg", "sh", "no-such-user-presenced-bench")
	if err == nil || !strings.Contains(err.Error(), "apt-get install nosuchpkg") {
		t.Fatalf("missing user: %v", err)
	}
}
