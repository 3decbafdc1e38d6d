package tui_test

// End-to-end tests of the real bty-tui binary: built once per test binary
// run, driven inside a private tmux server (80x24, TERM=vt100, NO_COLOR=1)
// by keystrokes, flashing real images onto real loop devices, locally or
// from a real bty-web (clienttest). Each test checks what the user would:
// the screen, and then the disk's bytes, the --json-events file and the
// server's record. They skip, saying why, without root, tmux or loop
// devices.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/client/clienttest"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/looptest"
)

const (
	e2eCols, e2eRows = 80, 24
	// shortWait is for screens that follow a key at once; flashWait for
	// a whole flash of a few tens of MiB.
	shortWait = 15 * time.Second
	flashWait = 120 * time.Second
)

// ---------------------------------------------------------------------
// The binary, built once per test binary run.

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// tuiBinary returns the path of a bty-tui built from this tree. The
// binary lives in os.TempDir()/bty-tui-e2e under this process's id (the
// package's TestMain belongs to the model tests, so nothing removes it at
// exit); binaries of processes that are gone are removed at the next
// build.
func tuiBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() { builtBin, buildErr = buildTUI() })
	if buildErr != nil {
		t.Fatalf("building bty-tui: %v", buildErr)
	}
	return builtBin
}

func buildTUI() (string, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("module root not found from the test's directory: %w", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is not on PATH: %w", err)
	}
	dir := filepath.Join(os.TempDir(), "bty-tui-e2e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	removeStaleBinaries(dir)
	out := filepath.Join(dir, fmt.Sprintf("bty-tui.%d", os.Getpid()))
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/bty-tui")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -o %s ./cmd/bty-tui: %v\n%s", out, err, b)
	}
	return out, nil
}

func removeStaleBinaries(dir string) {
	names, _ := filepath.Glob(filepath.Join(dir, "bty-tui.*"))
	for _, n := range names {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Ext(n), "."))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			os.Remove(n)
		}
	}
}

// ---------------------------------------------------------------------
// tmux: one private server per test.

// tuiSession is bty-tui running in a detached tmux session "s" on a
// private socket, 80x24, status line off (the pane is the whole 80x24),
// remain-on-exit on (a crash's last screen stays). The pane's shell
// writes bty-tui's exit status to a file: tmux 3.3a marks a pane dead
// when its pty closes and sometimes never reaps the process, so
// #{pane_dead_status} can stay empty.
type tuiSession struct {
	t       *testing.T
	sock    string
	pid     int    // bty-tui's
	status  string // file the pane's shell writes bty-tui's exit status to
	logFile string // --log-file, shown when the test fails
}

func requireE2E(t *testing.T) {
	t.Helper()
	looptest.RequireRoot(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("needs tmux to drive bty-tui in a terminal (apt-get install tmux; make deps installs it)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices here (/dev/loop-control: %v)", err)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// startTUI runs bty-tui with args in a new tmux server.
func startTUI(t *testing.T, args ...string) *tuiSession {
	t.Helper()
	bin := tuiBinary(t)
	// A short directory: a unix socket path is at most 107 bytes.
	dir, err := os.MkdirTemp("", "btye2e")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "tmux.conf")
	// In the config, so they hold before the pane's process can exit.
	if err := os.WriteFile(conf, []byte("set -g status off\nset -wg remain-on-exit on\nset -g history-limit 100\nset -g default-shell /bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &tuiSession{t: t, sock: filepath.Join(dir, "sock"), status: filepath.Join(dir, "status")}
	for i, a := range args {
		if a == "--log-file" && i+1 < len(args) {
			s.logFile = args[i+1]
		}
	}
	cmdline := "env TERM=vt100 NO_COLOR=1 " + shellQuote(bin)
	for _, a := range args {
		cmdline += " " + shellQuote(a)
	}
	cmdline += "; echo $? >" + shellQuote(s.status)
	t.Logf("tmux: %s", cmdline)
	s.tmuxOK("-f", conf, "new-session", "-d", "-s", "s", "-x", strconv.Itoa(e2eCols), "-y", strconv.Itoa(e2eRows),
		"-e", "NO_COLOR=1", cmdline)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last screen:\n%s", s.frame(s.capture()))
			if s.logFile != "" {
				b, err := os.ReadFile(s.logFile)
				t.Logf("bty-tui's log %s (%v):\n%s", s.logFile, err, b)
			}
		}
		exec.Command("tmux", "-S", s.sock, "kill-server").Run()
		// The loop device is detached by an earlier-registered cleanup:
		// let bty-tui (SIGHUP from tmux) let go of it first.
		if s.pid > 0 {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) && running(s.pid) {
				time.Sleep(50 * time.Millisecond)
			}
		}
		os.RemoveAll(dir)
	})
	out := strings.TrimSpace(s.tmuxOK("display-message", "-p", "-t", "s", "#{pane_pid}"))
	shell, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("pane_pid %q: %v", out, err)
	}
	deadline := time.Now().Add(shortWait)
	for s.pid == 0 {
		if st, exited := s.exitStatus(); exited {
			t.Fatalf("bty-tui exited at once with status %d:\n%s", st, s.frame(s.capture()))
		}
		if s.pid = childOf(shell); s.pid == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no bty-tui process under the pane's shell (pid %d)", shell)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return s
}

// childOf returns a child process of pid, 0 when it has none.
func childOf(pid int) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			n, _ := strconv.Atoi(filepath.Base(filepath.Dir(st)))
			return n
		}
	}
	return 0
}

// running reports whether pid is alive and not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func (s *tuiSession) tmux(args ...string) (string, error) {
	out, err := exec.Command("tmux", append([]string{"-S", s.sock}, args...)...).CombinedOutput()
	return string(out), err
}

func (s *tuiSession) tmuxOK(args ...string) string {
	s.t.Helper()
	out, err := s.tmux(args...)
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// keys sends tmux key names (Down, Enter, Escape, C-c, q ...).
func (s *tuiSession) keys(keys ...string) {
	s.t.Helper()
	s.tmuxOK(append([]string{"send-keys", "-t", "s"}, keys...)...)
}

// typeText sends text literally.
func (s *tuiSession) typeText(text string) {
	s.t.Helper()
	s.tmuxOK("send-keys", "-t", "s", "-l", text)
}

// capture returns the visible screen, one string per row.
func (s *tuiSession) capture() []string {
	out, err := s.tmux("capture-pane", "-p", "-t", "s")
	if err != nil {
		return []string{"(capture-pane failed: " + err.Error() + ": " + out + ")"}
	}
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

// captureEscapes returns the screen with its attributes as escape
// sequences (capture-pane -e).
func (s *tuiSession) captureEscapes() string {
	s.t.Helper()
	return s.tmuxOK("capture-pane", "-p", "-e", "-t", "s")
}

// exitStatus reports whether bty-tui has exited and its exit status
// (128+N when signal N killed it).
func (s *tuiSession) exitStatus() (int, bool) {
	b, err := os.ReadFile(s.status)
	if err != nil || !strings.HasSuffix(string(b), "\n") {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		s.t.Fatalf("exit status file: %q", b)
	}
	return n, true
}

// frame draws a screen with a ruler, for failure messages.
func (s *tuiSession) frame(lines []string) string {
	var b strings.Builder
	b.WriteString("+" + strings.Repeat("-", e2eCols) + "+\n")
	for i, l := range lines {
		fmt.Fprintf(&b, "|%-*s| %2d\n", e2eCols, l, i+1)
	}
	b.WriteString("+" + strings.Repeat("-", e2eCols) + "+")
	return b.String()
}

// waitFor polls the screen every 100 ms until ok accepts it and returns
// it; on timeout, or when bty-tui exits first, it fails the test with the
// last screen.
func (s *tuiSession) waitFor(what string, timeout time.Duration, ok func(screen []string) bool) []string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		scr := s.capture()
		if ok(scr) {
			return scr
		}
		if status, exited := s.exitStatus(); exited {
			scr = s.capture()
			if ok(scr) {
				return scr
			}
			s.t.Fatalf("bty-tui exited (status %d) while waiting for %s; screen:\n%s", status, what, s.frame(scr))
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %v waiting for %s; screen:\n%s", timeout, what, s.frame(scr))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitText waits until text appears anywhere on the screen.
func (s *tuiSession) waitText(text string, timeout time.Duration) []string {
	s.t.Helper()
	return s.waitFor(fmt.Sprintf("%q", text), timeout, func(scr []string) bool { return contains(scr, text) })
}

// waitExit waits until bty-tui has exited and returns its exit status.
func (s *tuiSession) waitExit(timeout time.Duration) int {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if status, exited := s.exitStatus(); exited {
			// remain-on-exit keeps the pane, dead, once the shell is gone.
			if strings.TrimSpace(s.tmuxOK("display-message", "-p", "-t", "s", "#{pane_dead}")) == "1" {
				return status
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("bty-tui has not ended %v later (%s); screen:\n%s", timeout, s.procState(), s.frame(s.capture()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// procState describes bty-tui's process for failure messages.
func (s *tuiSession) procState() string {
	if s.pid <= 0 {
		return "pid unknown"
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil {
		return fmt.Sprintf("pid %d: %v", s.pid, err)
	}
	return fmt.Sprintf("pid %d: %s", s.pid, strings.TrimSpace(string(st)))
}

func contains(scr []string, text string) bool {
	for _, l := range scr {
		if strings.Contains(l, text) {
			return true
		}
	}
	return false
}

// containsWrapped reports whether text is on the screen, also when the
// UI wrapped it over several rows (long paths do).
func containsWrapped(scr []string, text string) bool {
	var rows []string
	for _, l := range scr {
		rows = append(rows, strings.TrimSpace(l))
	}
	return strings.Contains(strings.Join(rows, " "), strings.Join(strings.Fields(text), " "))
}

// lineWith returns the first row containing text, or "".
func lineWith(scr []string, text string) string {
	for _, l := range scr {
		if strings.Contains(l, text) {
			return l
		}
	}
	return ""
}

// selected returns the row with the cursor (it starts with "> ").
func selected(scr []string) string {
	for _, l := range scr {
		if strings.HasPrefix(l, "> ") {
			return l
		}
	}
	return ""
}

// selectRow moves the cursor (Down, then Up when the end is reached)
// until the selected row contains text.
func (s *tuiSession) selectRow(text string) []string {
	s.t.Helper()
	scr := s.waitFor("a selected row", shortWait, func(scr []string) bool { return selected(scr) != "" })
	// Rows on screen: go straight there; else scan down, then up.
	order := []string{"Down", "Up", "Down"}
	target, cur := -1, -1
	for i, l := range scr {
		if strings.HasPrefix(l, "> ") {
			cur = i
		} else if strings.HasPrefix(l, "  ") && strings.Contains(l, text) && target < 0 {
			target = i
		}
	}
	if target >= 0 && cur >= 0 && target < cur {
		order = []string{"Up", "Down", "Up"}
	}
	for _, key := range order {
		for i := 0; i < 64; i++ {
			cur := selected(scr)
			if strings.Contains(cur, text) {
				return scr
			}
			s.keys(key)
			moved := false
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				scr = s.capture()
				if selected(scr) != cur {
					moved = true
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if !moved {
				break // that end of the list
			}
		}
	}
	s.t.Fatalf("no row containing %q can be selected; screen:\n%s", text, s.frame(scr))
	return nil
}

// checkFrame checks what every screen has: 24 rows of at most 80
// columns, the title on row 1, key hints on the last row, plain ASCII
// (TERM=vt100) and no log lines.
func (s *tuiSession) checkFrame(scr []string, title string) {
	s.t.Helper()
	if len(scr) != e2eRows {
		s.t.Errorf("screen has %d rows, want %d:\n%s", len(scr), e2eRows, s.frame(scr))
		return
	}
	if scr[0] != title {
		s.t.Errorf("title row = %q, want %q", scr[0], title)
	}
	help := scr[len(scr)-1]
	if !strings.Contains(help, "enter") && !strings.Contains(help, "ctrl+c") && !strings.Contains(help, " y ") && !strings.HasPrefix(help, "y ") && !strings.Contains(help, "quit") {
		s.t.Errorf("last row %q is not a help line of key hints:\n%s", help, s.frame(scr))
	}
	for i, l := range scr {
		if len([]rune(l)) > e2eCols {
			s.t.Errorf("row %d is wider than %d columns: %q", i+1, e2eCols, l)
		}
		for _, r := range l {
			if r > 0x7e || (r < 0x20 && r != '\t') {
				s.t.Errorf("row %d has %q, not ASCII on a vt100: %q", i+1, r, l)
				break
			}
		}
		for _, logish := range []string{"level=", "time=", "msg="} {
			if strings.Contains(l, logish) {
				s.t.Errorf("row %d looks like a log line on the screen: %q", i+1, l)
			}
		}
	}
}

// sgr matches SGR escape sequences; colourSGR says whether one sets a
// colour (foreground/background, 16, 256 or true colour).
var sgr = regexp.MustCompile("\x1b\\[([0-9;:]*)m")

func colourSGR(params string) bool {
	for _, p := range strings.FieldsFunc(params, func(r rune) bool { return r == ';' || r == ':' }) {
		n, err := strconv.Atoi(p)
		if err != nil {
			continue
		}
		switch {
		case n >= 30 && n <= 38, n >= 40 && n <= 48, n >= 90 && n <= 97, n >= 100 && n <= 107:
			return true
		}
	}
	return false
}

func (s *tuiSession) checkNoColour() {
	s.t.Helper()
	raw := s.captureEscapes()
	for _, m := range sgr.FindAllStringSubmatch(raw, -1) {
		if colourSGR(m[1]) {
			s.t.Errorf("NO_COLOR=1 but the screen has the colour sequence %q:\n%q", m[0], raw)
			return
		}
	}
}

// ---------------------------------------------------------------------
// Images, disks, events.

// mixedRaw writes size bytes of imagetest.WriteMixed content to
// dir/name and returns its path and sha256.
func mixedRaw(t *testing.T, dir, name string, size int64, seed uint64) (string, string) {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if err := imagetest.WriteMixed(io.MultiWriter(f, h), size, seed); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

// zstdTo compresses raw into out with the zstd CLI (the reference tool).
func zstdTo(t *testing.T, raw, out string) {
	t.Helper()
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("needs the zstd CLI to make images (apt-get install zstd)")
	}
	looptest.Run(t, "zstd", "-q", "-f", "-T0", "-o", out, raw)
}

// flashToLoop is the path through steps 1-4 shared by the tests: choose
// image (its row contains imageRow), choose dev, provisioning none,
// confirm with yes. It returns once the confirmation is sent.
func (s *tuiSession) flashToLoop(title, imageRow, dev string) {
	s.t.Helper()
	s.waitText("Choose an image", shortWait)
	scr := s.waitFor("the image "+imageRow, shortWait, func(scr []string) bool { return contains(scr, imageRow) })
	s.checkFrame(scr, title)
	s.selectRow(imageRow)
	s.keys("Enter")
	s.waitText("Choose the target disk", shortWait)
	scr = s.waitText(dev+" ", shortWait)
	s.checkFrame(scr, title)
	s.selectRow(dev + " ")
	s.keys("Enter")
	scr = s.waitText("Provisioning", shortWait)
	s.checkFrame(scr, title)
	s.selectRow("none ")
	s.keys("Enter")
	scr = s.waitText("ERASE "+dev+" ", shortWait)
	s.checkFrame(scr, title)
	s.typeText("yes")
	s.waitText("Type yes to flash: yes", shortWait)
	s.keys("Enter")
}

// waitFlashed waits for the result screen of a successful flash and
// returns it; a failed flash fails the test with its screen.
func (s *tuiSession) waitFlashed() []string {
	s.t.Helper()
	scr := s.waitFor("the flash result", flashWait, func(scr []string) bool {
		return contains(scr, "Flashed ") || contains(scr, "Flash failed:")
	})
	if contains(scr, "Flash failed:") {
		s.t.Fatalf("the flash failed:\n%s", s.frame(scr))
	}
	return scr
}

// checkFlashedLine checks "Flashed NAME onto DEV in ELAPSED (RATE/s)".
func checkFlashedLine(t *testing.T, scr []string, name, dev string) {
	t.Helper()
	re := regexp.MustCompile(`^Flashed ` + regexp.QuoteMeta(name) + ` onto ` + regexp.QuoteMeta(dev) + ` in [0-9.]+ ?[a-zµ]+ \([0-9.]+ [KMGT]?i?B/s\)`)
	if l := lineWith(scr, "Flashed "); !re.MatchString(l) {
		t.Errorf("result line %q does not match %s", l, re)
	}
}

// readEvents reads a --json-events file.
func readEvents(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("--json-events file: %v", err)
	}
	defer f.Close()
	var evs []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("--json-events line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

func eventNames(evs []map[string]any) []string {
	var names []string
	for _, e := range evs {
		n, _ := e["event"].(string)
		names = append(names, n)
	}
	return names
}

// checkEventOrder checks that want occur in order in names (others may
// come in between) and that names ends with last.
func checkEventOrder(t *testing.T, names []string, want []string, last string) {
	t.Helper()
	i := 0
	for _, n := range names {
		if i < len(want) && n == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("events %v: want %v in this order", names, want)
	}
	if len(names) == 0 || names[len(names)-1] != last {
		t.Errorf("events %v: want %q last", names, last)
	}
}

// checkReleased checks that no process holds dev open, that nothing is
// mounted from it, and that it can be opened exclusively.
func checkReleased(t *testing.T, dev string, pid int) {
	t.Helper()
	if pid > 0 {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if l, _ := os.Readlink(fd); l == dev {
				t.Errorf("bty-tui (pid %d) still has %s open (%s)", pid, dev, fd)
			}
		}
	}
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.HasPrefix(l, dev+" ") {
			t.Errorf("%s is mounted: %s", dev, l)
		}
	}
	f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_EXCL, 0)
	if err != nil {
		t.Errorf("opening %s exclusively: %v (still held?)", dev, err)
		return
	}
	f.Close()
}

func localTitle(root string) string { return "bty-tui - local " + root }

// ---------------------------------------------------------------------
// Tests.

// TestE2ELocal flashes a zstd-compressed GPT+ext4 disk image from a local
// image root onto a loop device full of random bytes, through every step,
// and checks the device holds exactly the decoded image.
func TestE2ELocal(t *testing.T) {
	requireE2E(t)
	start := time.Now()
	work := t.TempDir()
	root := filepath.Join(work, "images")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	disk := imagetest.NewLinuxDisk(t, map[string]string{"etc/hostname": "e2e\n", "etc/motd": "flashed by bty-tui\n"})
	zstdTo(t, disk.Path, filepath.Join(root, "linux.img.zst"))
	rawSum := imagetest.SHA256(t, disk.Path, 0, -1)
	dev := looptest.New(t, disk.Size+6<<20)
	events := filepath.Join(work, "events.ndjson")
	logFile := filepath.Join(work, "bty-tui.log")
	t.Logf("setup %v; image %d bytes, %s", time.Since(start).Round(time.Millisecond), disk.Size, dev.Path)
	if dev.SHA256(t, disk.Size) == rawSum {
		t.Fatal("the loop device already holds the image")
	}

	s := startTUI(t, "--image-root", root, "--json-events", events, "--log-file", logFile)
	title := localTitle(root)
	scr := s.waitText("linux.img.zst", shortWait)
	s.checkFrame(scr, title)
	row := selected(scr)
	for _, want := range []string{"linux.img.zst", "zst", "58 MiB"} {
		if !strings.Contains(row, want) {
			t.Errorf("image row %q lacks %q", row, want)
		}
	}

	s.keys("Enter")
	s.waitText("Choose the target disk", shortWait)
	s.waitText(dev.Path+" ", shortWait)
	scr = s.selectRow(dev.Path + " ")
	if row := selected(scr); !strings.Contains(row, "64 MiB") || strings.Contains(row, "not selectable") {
		t.Errorf("disk row %q: want its size 64 MiB and selectable", row)
	}
	s.checkFrame(scr, title)
	s.keys("Enter")
	scr = s.waitText("Provisioning", shortWait)
	for _, m := range []string{"none", "cloud-init", "cijoe"} {
		if !contains(scr, "  "+m+" ") && !contains(scr, "> "+m+" ") {
			t.Errorf("provisioning mode %s is not a row:\n%s", m, s.frame(scr))
		}
	}
	// cloud-init and cijoe ask for their file; Esc leaves the field.
	for _, mode := range []struct{ row, prompt string }{{"cloud-init ", "User-data file:"}, {"cijoe ", "Workflow file:"}} {
		s.selectRow(mode.row)
		s.keys("Enter")
		scr = s.waitText(mode.prompt, shortWait)
		s.checkFrame(scr, title)
		s.keys("Escape")
		s.waitFor(mode.prompt+" gone", shortWait, func(scr []string) bool { return !contains(scr, mode.prompt) })
	}
	s.selectRow("none ")
	s.keys("Enter")
	scr = s.waitText("ERASE "+dev.Path+" ", shortWait)
	s.checkFrame(scr, title)
	if !contains(scr, "linux.img.zst") {
		t.Errorf("the plan does not name the image:\n%s", s.frame(scr))
	}

	// Anything but yes does not start the flash.
	s.typeText("no")
	s.keys("Enter")
	scr = s.waitText("Not flashing", shortWait)
	if !contains(scr, "Confirm") || !contains(scr, "ERASE "+dev.Path) {
		t.Errorf("after typing no the confirm step is gone:\n%s", s.frame(scr))
	}
	time.Sleep(300 * time.Millisecond)
	if b, err := os.ReadFile(events); err == nil && len(b) > 0 {
		t.Fatalf("typing no started a flash; events:\n%s", b)
	}
	if dev.SHA256(t, disk.Size) == rawSum {
		t.Fatal("typing no wrote the image")
	}

	s.typeText("yes")
	s.keys("Enter")
	flashStart := time.Now()
	scr = s.waitFlashed()
	t.Logf("flash took about %v on screen", time.Since(flashStart).Round(time.Millisecond))
	s.checkFrame(scr, title)
	checkFlashedLine(t, scr, "linux.img.zst", dev.Path)
	if got := dev.SHA256(t, disk.Size); got != rawSum {
		t.Errorf("%s holds sha256 %s in its first %d bytes, want the decoded image's %s", dev.Path, got, disk.Size, rawSum)
	}
	checkEventOrder(t, eventNames(readEvents(t, events)), []string{"started", "writing", "synced", "done"}, "done")
	if names := eventNames(readEvents(t, events)); slices.Contains(names, "failed") {
		t.Errorf("events %v include failed", names)
	}
	s.checkNoColour()
	if b, err := os.ReadFile(logFile); err != nil || len(b) == 0 {
		t.Errorf("--log-file %s: %v, %d bytes; want the session's log", logFile, err, len(b))
	}

	// Enter starts again at step 1; q quits with status 0.
	s.keys("Enter")
	scr = s.waitText("Choose an image", shortWait)
	s.waitText("linux.img.zst", shortWait)
	s.checkFrame(scr, title)
	s.keys("q")
	if status := s.waitExit(shortWait); status != 0 {
		t.Errorf("bty-tui exited with status %d after q, want 0", status)
	}
	checkReleased(t, dev.Path, 0)
	t.Logf("TestE2ELocal took %v", time.Since(start).Round(time.Millisecond))
}

// TestE2ERemote lists and streams an image from a real bty-web, flashes
// it, reports done for --mac and checks the server recorded it.
func TestE2ERemote(t *testing.T) {
	requireE2E(t)
	start := time.Now()
	work := t.TempDir()
	raw, rawSum := mixedRaw(t, work, "mixed.img", 40<<20+7*512, 7)
	zst := filepath.Join(work, "mixed.img.zst")
	zstdTo(t, raw, zst)
	size := int64(40<<20 + 7*512)
	dev := looptest.New(t, 48<<20)
	const mac = "52:54:00:e2:e0:01"

	srv := clienttest.Start(t, nil)
	c := uploadImage(t, srv, "mixed.img.zst", zst)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A PXE contact makes the machine exist (discovered: tui) and opens
	// its flash cycle; the live env passes the cycle's token on.
	_, cycle := clienttest.PXEBoot(t, srv.URL, fleet.MustParseMAC(mac))
	if cycle == "" {
		t.Fatal("the tui script carries no bty.cycle")
	}
	m, err := c.Machine(ctx, fleet.MustParseMAC(mac))
	if err != nil {
		t.Fatal(err)
	}
	if m.LastFlashedAt != nil {
		t.Fatalf("the machine is flashed before the test: %+v", m)
	}
	events := filepath.Join(work, "events.ndjson")
	before := time.Now().Add(-time.Second)

	s := startTUI(t, "--server", srv.URL, "--mac", strings.ToUpper(mac), "--cycle", cycle, "--json-events", events, "--log-file", filepath.Join(work, "log"))
	norm, err := client.NormalizeServer(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	title := "bty-tui - server " + norm + " - mac " + mac
	s.flashToLoop(title, "mixed.img.zst", dev.Path)
	scr := s.waitFlashed()
	checkFlashedLine(t, scr, "mixed.img.zst", dev.Path)
	scr = s.waitFor("the done report", shortWait, func(scr []string) bool {
		return contains(scr, "Reported done to the server") || contains(scr, "Could not report done")
	})
	s.checkFrame(scr, title)
	if !contains(scr, "Reported done to the server") {
		t.Errorf("the done report failed:\n%s", s.frame(scr))
	}
	if got := dev.SHA256(t, size); got != rawSum {
		t.Errorf("%s holds sha256 %s in its first %d bytes, want the decoded image's %s", dev.Path, got, size, rawSum)
	}
	checkEventOrder(t, eventNames(readEvents(t, events)), []string{"started", "writing", "synced", "done"}, "done")
	m, err = c.Machine(ctx, fleet.MustParseMAC(mac))
	if err != nil {
		t.Fatal(err)
	}
	if m.LastFlashedAt == nil || m.LastFlashedAt.Before(before) || m.LastFlashedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("the server's record after the flash: last_flashed_at %v, want set during the test (%+v)", m.LastFlashedAt, m)
	}
	s.checkNoColour()
	s.keys("q")
	if status := s.waitExit(shortWait); status != 0 {
		t.Errorf("bty-tui exited with status %d after q, want 0", status)
	}
	t.Logf("TestE2ERemote took %v", time.Since(start).Round(time.Millisecond))
}

// uploadImage logs in to srv and uploads path as name.
func uploadImage(t *testing.T, srv *clienttest.Server, name, path string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx, clienttest.Password); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.UploadImage(ctx, name, f, st.Size(), client.UploadOptions{SHA256: imagetest.SHA256(t, path, 0, -1)}); err != nil {
		t.Fatalf("uploading %s: %v", name, err)
	}
	return c
}

// valve lets through at most limit bytes of each image download (GET
// /images/NAME) of a reverse proxy in front of bty-web; the test opens it
// step by step, so a flash from it is held part-way for as long as the
// test needs.
type valve struct {
	mu      sync.Mutex
	limit   int64
	changed chan struct{}
}

func newValve(limit int64) *valve { return &valve{limit: limit, changed: make(chan struct{})} }

func (v *valve) set(limit int64) {
	v.mu.Lock()
	v.limit = limit
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
}

type valveBody struct {
	v    *valve
	ctx  context.Context
	body io.ReadCloser
	sent int64
}

func (b *valveBody) Read(p []byte) (int, error) {
	for {
		b.v.mu.Lock()
		avail, ch := b.v.limit-b.sent, b.v.changed
		b.v.mu.Unlock()
		if avail > 0 {
			n, err := b.body.Read(p[:min(int64(len(p)), avail)])
			b.sent += int64(n)
			return n, err
		}
		select {
		case <-ch:
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
}

func (b *valveBody) Close() error { return b.body.Close() }

// valveProxy serves target through a reverse proxy whose image downloads
// pass v.
func valveProxy(t *testing.T, target string, v *valve) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.HasPrefix(resp.Request.URL.Path, "/images/") {
			resp.Body = &valveBody{v: v, ctx: resp.Request.Context(), body: resp.Body}
		}
		return nil
	}
	ps := httptest.NewServer(rp)
	t.Cleanup(func() {
		v.set(1 << 62) // let any held download end
		ps.CloseClientConnections()
		ps.Close()
	})
	return ps.URL
}

var writtenRe = regexp.MustCompile(`^([0-9.]+ [KMGT]?i?B) of `)

// written reads the bytes written so far from the progress screen, -1
// when the line is not there.
func written(scr []string) int64 {
	for _, l := range scr {
		if m := writtenRe.FindStringSubmatch(l); m != nil {
			n, err := humanize.ParseBytes(m[1])
			if err != nil {
				return -1
			}
			return int64(n)
		}
	}
	return -1
}

// TestE2EAbort holds a flash part-way (the image download stalls behind
// a valve), asks to abort with Ctrl-C, says n and sees it go on, then
// aborts with y: the result says the flash failed, the disk's first MiB
// (partition tables; written last) is untouched, the device is released
// and bty-tui is still running.
func TestE2EAbort(t *testing.T) {
	requireE2E(t)
	start := time.Now()
	work := t.TempDir()
	size := int64(64 << 20)
	raw, _ := mixedRaw(t, work, "big.img", size, 1) // seed 1: its first MiB is not zero
	zst := filepath.Join(work, "big.img.zst")
	zstdTo(t, raw, zst)
	// The valve below lets through at most 14 MiB: the download must be
	// longer, so the flash cannot end before the abort.
	if st, err := os.Stat(zst); err != nil || st.Size() < 20<<20 {
		t.Fatalf("%s: %v; want more than 20 MiB of zstd (size %v)", zst, err, st)
	}
	dev := looptest.New(t, size+4<<20)
	oldHead := dev.ReadAt(t, 0, 1<<20)
	imgHead := make([]byte, 1<<20)
	if f, err := os.Open(raw); err != nil {
		t.Fatal(err)
	} else if _, err := io.ReadFull(f, imgHead); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	if bytes.Equal(imgHead, make([]byte, 1<<20)) {
		t.Fatal("the image's first MiB is zero: the head check below could not tell it from the zeroed head")
	}

	srv := clienttest.Start(t, nil)
	uploadImage(t, srv, "big.img.zst", zst)
	// Each download may first take 4 MiB: the plan opens the image
	// (reading its header through buffers and a read-ahead decoder).
	v := newValve(4 << 20)
	proxy := valveProxy(t, srv.URL, v)
	events := filepath.Join(work, "events.ndjson")

	s := startTUI(t, "--server", proxy, "--json-events", events, "--log-file", filepath.Join(work, "log"))
	norm, _ := client.NormalizeServer(proxy)
	title := "bty-tui - server " + norm
	s.flashToLoop(title, "big.img.zst", dev.Path)
	s.waitText("Flashing big.img.zst onto "+dev.Path, shortWait)

	// Part of the image, then the download stalls.
	v.set(8 << 20)
	scr := s.waitFor("some bytes written", shortWait, func(scr []string) bool { return written(scr) > 0 })
	s.checkFrame(scr, title)
	// The contract's progress screen: bar, percentage, bytes of the
	// total, rate, ETA, phase. The server's catalog knows the decoded
	// size, so the total and the percentage are known.
	for _, re := range []string{`^\[#*\.*\] +[0-9]+%$`, `^[0-9.]+ [KM]iB of 64 MiB`, `[0-9.]+ [KM]?i?B/s`, `ETA [0-9]`, `Phase: writing zst`} {
		if !matchesLine(scr, re) {
			t.Errorf("the progress screen lacks %s:\n%s", re, s.frame(scr))
		}
	}
	s.keys("C-c")
	scr = s.waitText("Abort the flash?", shortWait)
	s.checkFrame(scr, title)
	s.keys("n")
	scr = s.waitFor("the question gone", shortWait, func(scr []string) bool { return !contains(scr, "Abort the flash?") })
	w1 := written(scr)
	v.set(14 << 20)
	scr = s.waitFor(fmt.Sprintf("more than %d bytes written after n", w1), shortWait, func(scr []string) bool { return written(scr) > w1 })
	if !contains(scr, "Flashing big.img.zst") {
		t.Fatalf("after n the flash is not running:\n%s", s.frame(scr))
	}

	s.keys("C-c")
	s.waitText("Abort the flash?", shortWait)
	s.keys("y")
	scr = s.waitText("Flash failed:", shortWait)
	s.checkFrame(scr, title)
	if !contains(scr, "abort") {
		t.Errorf("the failure does not say it was aborted:\n%s", s.frame(scr))
	}
	if _, exited := s.exitStatus(); exited || !running(s.pid) {
		t.Fatal("bty-tui exited after the abort")
	}
	checkReleased(t, dev.Path, s.pid)
	// The engine zeroes the first MiB before anything else and writes
	// the image's there last: an aborted disk has neither the old nor the
	// new partition table, so it never looks bootable.
	switch got := dev.ReadAt(t, 0, 1<<20); {
	case bytes.Equal(got, imgHead):
		t.Errorf("the aborted flash wrote the image's first MiB: an interrupted disk must not look bootable")
	case bytes.Equal(got, oldHead):
		t.Errorf("the aborted flash left the disk's old first MiB (its old partition table) in place")
	case !bytes.Equal(got, make([]byte, 1<<20)):
		t.Errorf("the aborted disk's first MiB is neither zeroed, the image's nor the old one")
	}
	names := eventNames(readEvents(t, events))
	checkEventOrder(t, names, []string{"started", "writing", "progress"}, "failed")
	if slices.Contains(names, "done") {
		t.Errorf("events %v include done after an abort", names)
	}

	// Still usable: back to step 1, then quit; the last flash failed.
	s.keys("Enter")
	s.waitText("Choose an image", shortWait)
	s.waitText("big.img.zst", shortWait)
	s.keys("q")
	if status := s.waitExit(shortWait); status != 1 {
		t.Errorf("bty-tui exited with status %d after an aborted flash, want 1", status)
	}
	t.Logf("TestE2EAbort took %v", time.Since(start).Round(time.Millisecond))
}

func matchesLine(scr []string, re string) bool {
	r := regexp.MustCompile(re)
	for _, l := range scr {
		if r.MatchString(l) {
			return true
		}
	}
	return false
}

// TestE2EUnselectable shows a mounted loop device as not selectable, with
// the reason, and Enter on it does not leave the disk step.
func TestE2EUnselectable(t *testing.T) {
	requireE2E(t)
	start := time.Now()
	work := t.TempDir()
	root := filepath.Join(work, "images")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, _ := mixedRaw(t, work, "small.img", 4<<20, 3)
	zstdTo(t, raw, filepath.Join(root, "small.img.zst"))
	dev := looptest.New(t, 16<<20)
	mnt := looptest.MountExt4(t, dev.Path)
	events := filepath.Join(work, "events.ndjson")

	s := startTUI(t, "--image-root", root, "--json-events", events, "--log-file", filepath.Join(work, "log"))
	title := localTitle(root)
	s.waitText("small.img.zst", shortWait)
	s.keys("Enter")
	s.waitText("Choose the target disk", shortWait)
	s.waitText(dev.Path+" ", shortWait)
	scr := s.selectRow(dev.Path + " ")
	s.checkFrame(scr, title)
	row := selected(scr)
	if !strings.Contains(row, "not selectable") || !strings.Contains(row, "mounted") {
		t.Errorf("the mounted disk's row %q: want not selectable: mounted ...", row)
	}
	if !containsWrapped(scr, dev.Path+" cannot be flashed: mounted at "+mnt) {
		t.Errorf("the screen does not give the reason (mounted at %s):\n%s", mnt, s.frame(scr))
	}
	s.keys("Enter")
	scr = s.waitText("Pick another disk", shortWait)
	if !contains(scr, "Choose the target disk") || contains(scr, "Provisioning") {
		t.Errorf("Enter on a mounted disk left the disk step:\n%s", s.frame(scr))
	}
	time.Sleep(300 * time.Millisecond)
	if scr := s.capture(); !contains(scr, "Choose the target disk") {
		t.Errorf("Enter on a mounted disk left the disk step:\n%s", s.frame(scr))
	}
	// q goes back to step 1, q again quits.
	s.keys("q")
	s.waitText("Choose an image", shortWait)
	s.keys("q")
	if status := s.waitExit(shortWait); status != 0 {
		t.Errorf("bty-tui exited with status %d after q, want 0", status)
	}
	if b, err := os.ReadFile(events); err == nil && len(b) > 0 {
		t.Errorf("a flash started on the mounted disk; events:\n%s", b)
	}
	t.Logf("TestE2EUnselectable took %v", time.Since(start).Round(time.Millisecond))
}

// TestE2EReboot flashes, then R asks before rebooting: n does nothing, y
// runs --reboot-command and bty-tui ends.
func TestE2EReboot(t *testing.T) {
	requireE2E(t)
	start := time.Now()
	work := t.TempDir()
	root := filepath.Join(work, "images")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	size := int64(8 << 20)
	raw, rawSum := mixedRaw(t, work, "node.img", size, 5)
	zstdTo(t, raw, filepath.Join(root, "node.img.zst"))
	dev := looptest.New(t, 16<<20)
	marker := filepath.Join(work, "rebooted")

	s := startTUI(t, "--image-root", root, "--log-file", filepath.Join(work, "log"), "--reboot-command", "touch "+shellQuote(marker))
	title := localTitle(root)
	s.flashToLoop(title, "node.img.zst", dev.Path)
	scr := s.waitFlashed()
	checkFlashedLine(t, scr, "node.img.zst", dev.Path)
	if got := dev.SHA256(t, size); got != rawSum {
		t.Errorf("%s holds sha256 %s, want %s", dev.Path, got, rawSum)
	}

	s.keys("R")
	scr = s.waitText("Reboot now?", shortWait)
	s.checkFrame(scr, title)
	s.keys("n")
	s.waitFor("the question gone", shortWait, func(scr []string) bool { return !contains(scr, "Reboot now?") })
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("n at Reboot now? ran the reboot command")
	}
	s.keys("R")
	s.waitText("Reboot now?", shortWait)
	s.keys("y")
	deadline := time.Now().Add(shortWait)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("y at Reboot now? did not run --reboot-command (no %s); screen:\n%s", marker, s.frame(s.capture()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status := s.waitExit(shortWait); status != 0 {
		t.Errorf("bty-tui exited with status %d after rebooting, want 0", status)
	}
	t.Logf("TestE2EReboot took %v", time.Since(start).Round(time.Millisecond))
}
