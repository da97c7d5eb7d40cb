// Package proc reads what the load harness reports of a process on Linux:
// its CPU time and its resident memory, from /proc.
package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// clockTick is the kernel's USER_HZ, 100 on every Linux architecture Go
// supports.
const clockTick = 100

// CPU returns the user plus system CPU time pid has used so far.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses: the
	// fields that follow start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) … utime(14) stime(15), so 11 and 12 here.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc: /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("proc: /proc/%d/stat: bad utime or stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// RSS returns the resident set size of pid in bytes (VmRSS).
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		fs := strings.Fields(line[len("VmRSS:"):])
		if len(fs) != 2 || fs[1] != "kB" {
			return 0, fmt.Errorf("proc: /proc/%d/status: odd VmRSS line %q", pid, line)
		}
		kb, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("proc: /proc/%d/status: no VmRSS", pid)
}

// Summary is the median, minimum and maximum of a set of figures.
type Summary struct{ Median, Min, Max float64 }

// Summarize returns the summary of xs; the zero Summary if xs is empty. The
// median of an even count is the mean of the two middle figures.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Summary{Median: m, Min: s[0], Max: s[len(s)-1]}
}
