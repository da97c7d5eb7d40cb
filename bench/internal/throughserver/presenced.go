package throughserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"presenced/bench/internal/shared"
)

// resyncDelay is presenced's wait for the owners' answers after it
// connects; short so that turns settle quickly.
const resyncDelay = "500ms"

// buildPresenced builds ./cmd/presenced of the module that holds the
// working directory into dir and returns the binary's path.
func buildPresenced(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "bin", "presenced")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/presenced")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/presenced: %w\n%s", err, out)
	}
	return bin, nil
}

// moduleRoot finds the presenced module above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module presenced") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the presenced module: run from the repository or pass -presenced PATH")
		}
		dir = parent
	}
}

// presencedConfig renders presenced's configuration.
func presencedConfig(server, secret, dsn string, handles int) string {
	return shared.PresencedConfig(shared.Config{Domain: componentDomain, Server: server, Secret: secret,
		ResyncDelay: resyncDelay, Driver: "sqlite", DSN: dsn, MaxHandles: handles})
}

// prefillDB creates presenced's SQLite database at path with the owner's
// account (off-line), its handles h0…h(handles-1) and every subscriber
// subscribed to every handle, in one transaction.
func prefillDB(ctx context.Context, path string, subs, handles int) error {
	f, err := shared.OpenSQLiteFill(ctx, path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Account(ctx, ownerJID); err != nil {
		return err
	}
	for j := range handles {
		if err := f.Handle(ctx, handleName(j), ownerJID); err != nil {
			return err
		}
		for k := range subs {
			if err := f.Subscription(ctx, handleName(j), subUser(k)+"@"+userHost); err != nil {
				return err
			}
		}
	}
	return f.Commit()
}

// presencedProc is one run of presenced.
type presencedProc struct {
	*process
	log string
}

// startPresenced runs bin with the configuration file cfg; its output goes
// to log (appended).
func startPresenced(bin, cfg, log string) (*presencedProc, error) {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, "-config", cfg)
	cmd.Dir = filepath.Dir(cfg)
	cmd.Stdout, cmd.Stderr = f, f
	p, err := startProcess(cmd, "presenced", true)
	if err != nil {
		return nil, fmt.Errorf("presenced: %w", err)
	}
	return &presencedProc{process: p, log: log}, nil
}
