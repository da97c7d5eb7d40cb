package main

// The try-out command, `make run` (scripts/run.sh), run the way a newcomer
// runs and ends it: its output on a terminal or a pipe, and Ctrl-C, which
// reaches the whole foreground process group.

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runScript starts scripts/run.sh in a process group of its own, as a
// shell starts a foreground job, with its output on a pipe. It returns the
// command, the read end of the pipe, and the folder the script announced,
// once presenced has connected and resynchronised.
func runScript(t *testing.T) (*exec.Cmd, *os.File, string) {
	t.Helper()
	if os.Getenv("PRESENCED_TESTENV") == "" {
		t.Skip("PRESENCED_TESTENV not set: run `make test`, which installs Prosody")
	}
	if os.Geteuid() != 0 {
		t.Skip("scripts/run.sh runs Prosody with runuser and needs root")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join("..", "..", "scripts", "run.sh"))
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
		r.Close()
	})

	folder := regexp.MustCompile(`files in (\S+)\)`)
	found := make(chan string, 1)
	go func() {
		dir := ""
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if m := folder.FindStringSubmatch(sc.Text()); m != nil {
				dir = m[1]
			}
			if strings.Contains(sc.Text(), "resynchronised subscribers") {
				found <- dir
				return
			}
		}
		close(found)
	}()
	select {
	case dir, ok := <-found:
		if !ok || dir == "" {
			t.Fatal("scripts/run.sh ended before presenced resynchronised, or named no folder")
		}
		return cmd, r, dir
	case <-time.After(3 * time.Minute):
		t.Fatal("scripts/run.sh did not get presenced running within 3 minutes")
	}
	return nil, nil, ""
}

// ctrlC sends SIGINT to the script's process group, as a terminal does,
// and waits for the script to end.
func ctrlC(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("scripts/run.sh did not end within 60 s of Ctrl-C")
		return nil
	}
}

// checkCleanedUp checks that the folder is gone and no Prosody runs on it.
func checkCleanedUp(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the folder %s is still there after Ctrl-C (stat: %v)", dir, err)
	}
	out, _ := exec.Command("pgrep", "-f", filepath.Join(dir, "prosody")).Output()
	if pids := strings.TrimSpace(string(out)); pids != "" {
		t.Errorf("Prosody of %s still runs after Ctrl-C (pids %s)", dir, pids)
		for _, p := range strings.Fields(pids) {
			_ = exec.Command("kill", p).Run()
		}
	}
}

// TestRunScriptCtrlC: Ctrl-C ends `make run` with status 0 (so make prints
// no "Error 130"), after stopping presenced and Prosody and removing the
// folder; its last line says so.
func TestRunScriptCtrlC(t *testing.T) {
	cmd, r, dir := runScript(t)
	rest := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		rest <- string(b)
	}()
	if err := ctrlC(t, cmd); err != nil {
		t.Errorf("scripts/run.sh after Ctrl-C: %v, want exit status 0", err)
	}
	checkCleanedUp(t, dir)
	if out := <-rest; !strings.Contains(out, "presenced stopped") || !strings.HasSuffix(strings.TrimSpace(out), "stopped") {
		t.Errorf("output after Ctrl-C does not show presenced and the script stopping:\n%s", out)
	}
}

// TestRunScriptCtrlCClosedPipe: with `make run | tee run.log`, Ctrl-C ends
// tee first; the cleanup must not die writing to the closed pipe.
func TestRunScriptCtrlCClosedPipe(t *testing.T) {
	cmd, r, dir := runScript(t)
	r.Close() // tee is gone
	if err := ctrlC(t, cmd); err != nil {
		t.Errorf("scripts/run.sh after Ctrl-C with its output closed: %v, want exit status 0", err)
	}
	checkCleanedUp(t, dir)
}
