package logonce

import (
	"testing"
	"time"
)

func TestAllowOncePerPeriod(t *testing.T) {
	l := New(time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if ok, _ := l.Allow("a", t0); !ok {
		t.Fatal("the first message of a key was left out")
	}
	for i := 0; i < 5; i++ {
		if ok, _ := l.Allow("a", t0.Add(time.Second)); ok {
			t.Fatal("a key was allowed twice within its period")
		}
	}
	if ok, _ := l.Allow("b", t0); !ok {
		t.Fatal("another key was left out")
	}
	ok, dropped := l.Allow("a", t0.Add(time.Minute))
	if !ok || dropped != 5 {
		t.Fatalf("after the period: allowed %v, %d left out; want true, 5", ok, dropped)
	}
}

func TestKeysBounded(t *testing.T) {
	l := New(time.Hour)
	t0 := time.Now()
	for i := 0; i < 3*maxKeys; i++ {
		l.Allow(string(rune(i)), t0)
	}
	if len(l.keys) > maxKeys {
		t.Fatalf("%d keys kept, want at most %d", len(l.keys), maxKeys)
	}
}
