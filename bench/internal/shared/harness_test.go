package shared

import (
	"path/filepath"
	"strings"
	"testing"

	"presenced/storage"
)

func TestHandshakeDigest(t *testing.T) {
	// sha1("abc") is the FIPS 180 test vector.
	if got := HandshakeDigest("ab", "c"); got != "a9993e364706816aba3e25717850c26c9cd0d89d" {
		t.Errorf("digest(ab+c) = %s, want sha1(abc)", got)
	}
}

func TestFreePortsAreDistinct(t *testing.T) {
	ps, err := FreePorts(3)
	if err != nil || len(ps) != 3 || ps[0] == ps[1] || ps[1] == ps[2] || ps[0] == ps[2] {
		t.Fatalf("ports %v, %v", ps, err)
	}
	if a, b := RandomHex(8), RandomHex(8); a == b || len(a) != 16 {
		t.Fatalf("secrets %q %q", a, b)
	}
}

func TestPresencedConfig(t *testing.T) {
	c := PresencedConfig(Config{Domain: "d", Server: "127.0.0.1:5", Secret: "s", ResyncDelay: "200ms", Driver: "sqlite", DSN: "/x/p.db", MaxHandles: 64})
	for _, want := range []string{`server = "127.0.0.1:5"`, `driver = "sqlite"`, `dsn = "/x/p.db"`, `resync_delay = "200ms"`} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %s", want)
		}
	}
	if strings.Contains(c, "resource") || strings.Contains(c, "max_handles") {
		t.Errorf("config has a key older builds reject:\n%s", c)
	}
	if c := PresencedConfig(Config{MaxHandles: 65}); !strings.Contains(c, "max_handles = 65") {
		t.Errorf("no max_handles for 65 handles:\n%s", c)
	}
}

func TestSQLiteFillIsReadByStorage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	f, err := OpenSQLiteFill(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := f.Account(ctx, "o@x"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"h0", "h1"} {
		if err := f.Handle(ctx, h, "o@x"); err != nil {
			t.Fatal(err)
		}
		if err := f.Subscription(ctx, h, "c@y"); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	st, err := storage.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snap, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Subscriptions) != 2 {
		t.Fatalf("%d subscriptions, want 2", len(snap.Subscriptions))
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -12345: "-12,345"} {
		if got := Thousands(n); got != want {
			t.Errorf("Thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
