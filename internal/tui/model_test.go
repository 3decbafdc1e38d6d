package tui

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/muesli/termenv"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/flash"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/provision"
)

func TestMain(m *testing.M) {
	// Goldens hold plain text: no colour codes.
	lipgloss.SetColorProfile(termenv.Ascii)
	os.Setenv("TERM", "xterm-256color")
	os.Exit(m.Run())
}

// fixture is a model wired to a real image root and stand-ins for the
// disks and the engine, so each screen is deterministic.
type fixture struct {
	t        *testing.T
	root     string
	cfg      Config
	mu       sync.Mutex
	flashes  []flash.Options
	release  chan struct{} // closes to let the stand-in flash finish
	flashErr error
	done     []string
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, root: t.TempDir(), release: make(chan struct{})}
	// Real image files: the catalog reads their headers.
	if err := os.WriteFile(filepath.Join(f.root, "debian-12.img"), make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.root, "broken.qcow2"), []byte("QFI\xfbnot really"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.cfg = Config{
		Catalog: namedCatalog{LocalCatalog{Root: f.root}},
		Disks: func() ([]disk.Disk, error) {
			return []disk.Disk{
				{Path: "/dev/nvme0n1", Name: "nvme0n1", SizeBytes: 512 << 30, Type: "disk", Transport: "nvme", Model: "Samsung SSD 980", Serial: "S64DNX0R1", System: true, SystemReasons: []string{"/ is mounted from nvme0n1p2"}, Mountpoints: []string{"/", "/boot/efi"}},
				{Path: "/dev/sda", Name: "sda", SizeBytes: 240 << 30, Type: "disk", Transport: "sata", Vendor: "ATA", Model: "INTEL SSDSC2KB24", Serial: "BTYS0001"},
				{Path: "/dev/sdb", Name: "sdb", SizeBytes: 16 << 30, Type: "disk", Transport: "usb", Model: "Cruzer Blade", Serial: "4C5300", Removable: true, Mountpoints: []string{"/media/stick"}},
			}, nil
		},
		Check: func(ctx context.Context, o flash.Options) (*flash.Plan, error) {
			v := int64(3 << 20)
			p := &flash.Plan{Image: flash.PlanImage{Ref: o.Image, Format: "raw", SizeBytes: v, VirtualSizeBytes: &v},
				Target: flash.PlanTarget{Path: o.Target, SizeBytes: 240 << 30}, Provisioning: "none", OK: true}
			if o.Provision != "" {
				p.Provisioning = o.Provision
			}
			return p, nil
		},
		Flash: func(ctx context.Context, o flash.Options) (*flash.Result, error) {
			f.mu.Lock()
			f.flashes = append(f.flashes, o)
			f.mu.Unlock()
			total := int64(3 << 20)
			o.Sink.Emit(event.Event{Event: event.Started, TotalBytes: total})
			o.Sink.Emit(event.Event{Event: event.Writing, Format: "raw"})
			o.Sink.Emit(event.Event{Event: event.Progress, BytesWritten: total / 2, TotalBytes: total, Rate: 1 << 20})
			select {
			case <-ctx.Done():
				o.Sink.Emit(event.Event{Event: event.Failed, Note: "interrupted"})
				return nil, ctx.Err()
			case <-f.release:
			}
			if f.flashErr != nil {
				return nil, f.flashErr
			}
			o.Sink.Emit(event.Event{Event: event.Synced})
			o.Sink.Emit(event.Event{Event: event.Done})
			res := &flash.Result{Image: o.Image, Target: o.Target, Format: "raw", TotalBytes: total, BytesWritten: total - 1<<20,
				BytesZeroed: 1 << 20, SHA256: strings.Repeat("ab", 32), Elapsed: 2.5, Provisioning: "none"}
			if o.Provision != "" {
				res.Provisioning = o.Provision
				res.Provision = &provision.Result{}
			}
			return res, nil
		},
		Now: func() time.Time { return t0 },
	}
	return f
}

// namedCatalog is a real local catalog with a fixed name for the title,
// so goldens do not hold the temp dir.
type namedCatalog struct{ LocalCatalog }

func (namedCatalog) Describe() string { return "local /srv/images" }

func (f *fixture) start(opts ...func(*Config)) *teatest.TestModel {
	cfg := f.cfg
	for _, o := range opts {
		o(&cfg)
	}
	return teatest.NewTestModel(f.t, New(context.Background(), cfg), teatest.WithInitialTermSize(80, 24))
}

func key(k string) tea.KeyMsg {
	switch k {
	case "enter":
		return tea.KeyMsg{Type: tea.KeyEnter}
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	case "down":
		return tea.KeyMsg{Type: tea.KeyDown}
	case "up":
		return tea.KeyMsg{Type: tea.KeyUp}
	case "tab":
		return tea.KeyMsg{Type: tea.KeyTab}
	case "ctrl+c":
		return tea.KeyMsg{Type: tea.KeyCtrlC}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
}

// output accumulates what each program drew, so a wait can find text
// drawn in the same frame as the text the previous wait found.
var outputs sync.Map // *teatest.TestModel -> *drawn

type drawn struct {
	buf []byte
	pos int // where the previous wait's match began
}

// waitText waits until the program has drawn s (at or after where the
// previous wait matched).
func waitText(t *testing.T, tm *teatest.TestModel, s string) {
	t.Helper()
	v, _ := outputs.LoadOrStore(tm, &drawn{})
	d := v.(*drawn)
	deadline := time.Now().Add(5 * time.Second)
	chunk := make([]byte, 64<<10)
	for {
		for {
			n, _ := tm.Output().Read(chunk)
			if n == 0 {
				break
			}
			d.buf = append(d.buf, chunk[:n]...)
		}
		if i := bytes.Index(d.buf[d.pos:], []byte(s)); i >= 0 {
			d.pos += i
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not drawn within 5 s; the screen since the last match:\n%s", s, d.buf[d.pos:])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// screen stops the program and returns its last screen, with the temp
// image root replaced so goldens are stable.
func (f *fixture) screen(tm *teatest.TestModel) (Model, string) {
	f.t.Helper()
	if err := tm.Quit(); err != nil {
		f.t.Fatal(err)
	}
	m := tm.FinalModel(f.t, teatest.WithFinalTimeout(5*time.Second)).(Model)
	v := strings.ReplaceAll(m.View(), f.root, "/srv/images")
	lines := strings.Split(v, "\n")
	if len(lines) != 24 {
		f.t.Errorf("the screen has %d lines, want 24", len(lines))
	}
	for i, l := range lines {
		if w := lipgloss.Width(l); w > 80 {
			f.t.Errorf("line %d is %d cells wide (> 80): %q", i+1, w, l)
		}
	}
	if !strings.Contains(lines[23], "q") && !strings.Contains(lines[23], "esc") && !strings.Contains(lines[23], "ctrl+c") && !strings.Contains(lines[23], "y ") {
		f.t.Errorf("the last line is not the help line: %q", lines[23])
	}
	return m, v
}

func (f *fixture) toConfirm(tm *teatest.TestModel) {
	f.t.Helper()
	waitText(f.t, tm, "debian-12.img")
	tm.Send(key("down")) // broken.qcow2 sorts first
	tm.Send(key("enter"))
	waitText(f.t, tm, "Step 2/5")
	waitText(f.t, tm, "/dev/sda")
	tm.Send(key("enter"))
	waitText(f.t, tm, "Step 3/5")
	tm.Send(key("enter"))
	waitText(f.t, tm, "Type yes")
}

// confirmWith walks to the confirm step and types word, then Enter.
func (f *fixture) confirmWith(tm *teatest.TestModel, word string) {
	f.t.Helper()
	f.toConfirm(tm)
	tm.Type(word)
	tm.Send(key("enter"))
}

func TestScreenImages(t *testing.T) {
	f := newFixture(t)
	tm := f.start()
	waitText(t, tm, "debian-12.img")
	tm.Send(key("enter")) // broken.qcow2 cannot be chosen
	waitText(t, tm, "cannot flash broken.qcow2")
	m, v := f.screen(tm)
	if m.step != stepImages {
		t.Fatalf("an unusable image advanced to step %d", m.step)
	}
	golden.RequireEqual(t, []byte(v))
}

func TestScreenDisks(t *testing.T) {
	f := newFixture(t)
	tm := f.start()
	waitText(t, tm, "debian-12.img")
	tm.Send(key("down"))
	tm.Send(key("enter"))
	waitText(t, tm, "/dev/sda")
	tm.Send(key("down")) // onto the mounted stick
	tm.Send(key("enter"))
	waitText(t, tm, "/dev/sdb cannot be flashed")
	m, v := f.screen(tm)
	if m.step != stepDisks || m.diskCursor != 2 {
		t.Fatalf("Enter on a mounted disk: step %d, cursor %d", m.step, m.diskCursor)
	}
	golden.RequireEqual(t, []byte(v))
}

func TestScreenProvisioning(t *testing.T) {
	f := newFixture(t)
	tm := f.start()
	waitText(t, tm, "debian-12.img")
	tm.Send(key("down"))
	tm.Send(key("enter"))
	waitText(t, tm, "/dev/sda")
	tm.Send(key("enter"))
	waitText(t, tm, "Step 3/5")
	tm.Send(key("down"))
	tm.Send(key("enter"))
	waitText(t, tm, "User-data file")
	tm.Send(key("enter")) // empty: refused
	waitText(t, tm, "is required")
	tm.Type("/srv/seed/user-data")
	tm.Send(key("tab"))
	tm.Type("node7")
	waitText(t, tm, "node7")
	_, v := f.screen(tm)
	golden.RequireEqual(t, []byte(v))
}

func TestScreenConfirm(t *testing.T) {
	f := newFixture(t)
	tm := f.start()
	f.confirmWith(tm, "no")
	waitText(t, tm, "Not flashing")
	_, v := f.screen(tm)
	if len(f.flashes) != 0 {
		t.Fatal("typing no started a flash")
	}
	golden.RequireEqual(t, []byte(v))
}

func TestScreenFlashingAndAbort(t *testing.T) {
	f := newFixture(t)
	tm := f.start()
	f.confirmWith(tm, "yes")
	waitText(t, tm, "50%")
	tm.Send(key("q")) // ignored while flashing
	tm.Send(key("ctrl+c"))
	waitText(t, tm, "Abort the flash?")
	tm.Send(key("n"))
	tm.Send(key("ctrl+c"))
	waitText(t, tm, "Abort the flash?")
	tm.Send(key("y"))
	waitText(t, tm, "Flash failed")
	m, v := f.screen(tm)
	if m.step != stepResult || !errors.Is(m.flashErr, context.Canceled) {
		t.Fatalf("after abort: step %d, err %v", m.step, m.flashErr)
	}
	if ran, err := m.Result(); !ran || err == nil {
		t.Fatal("an aborted flash must count as failed for the exit code")
	}
	golden.RequireEqual(t, []byte(v))
}

func TestScreenProgress(t *testing.T) {
	f := newFixture(t)
	tm := f.start()
	f.confirmWith(tm, "yes")
	waitText(t, tm, "50%")
	_, v := f.screen(tm)
	close(f.release)
	golden.RequireEqual(t, []byte(v))
}

func TestScreenResultReportsDone(t *testing.T) {
	f := newFixture(t)
	tm := f.start(func(c *Config) {
		c.MAC = fleet.MustParseMAC("52:54:00:12:34:56")
		c.Done = func(ctx context.Context, mac fleet.MAC, totals fleet.Progress) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.done = append(f.done, mac.String()+" "+totals.Image)
			return nil
		}
	})
	f.confirmWith(tm, "YES")
	waitText(t, tm, "50%")
	close(f.release)
	waitText(t, tm, "Reported done")
	_, v := f.screen(tm)
	if len(f.flashes) != 1 || f.flashes[0].Target != "/dev/sda" || f.flashes[0].Image != filepath.Join(f.root, "debian-12.img") {
		t.Fatalf("flashes %+v", f.flashes)
	}
	if len(f.done) != 1 || f.done[0] != "52:54:00:12:34:56 debian-12.img" {
		t.Fatalf("done reports %v", f.done)
	}
	golden.RequireEqual(t, []byte(v))
}

func TestScreenFailedReportAndBack(t *testing.T) {
	f := newFixture(t)
	f.flashErr = errors.New("writing /dev/sda at 1048576: input/output error")
	close(f.release)
	tm := f.start(func(c *Config) {
		c.MAC = fleet.MustParseMAC("52:54:00:12:34:56")
		c.Done = func(context.Context, fleet.MAC, fleet.Progress) error {
			t.Error("done reported for a failed flash")
			return nil
		}
		c.LogPath = "/var/log/bty/bty-tui.log"
	})
	f.confirmWith(tm, "yes")
	waitText(t, tm, "input/output error")
	_, v := f.screen(tm)
	golden.RequireEqual(t, []byte(v))
}

func TestReportFailureShown(t *testing.T) {
	f := newFixture(t)
	close(f.release)
	tm := f.start(func(c *Config) {
		c.MAC = fleet.MustParseMAC("52:54:00:12:34:56")
		c.Done = func(context.Context, fleet.MAC, fleet.Progress) error {
			return errors.New("no machine 52:54:00:12:34:56")
		}
	})
	f.confirmWith(tm, "yes")
	waitText(t, tm, "Could not report done")
	// Enter starts over at the images; R asks before rebooting.
	tm.Send(key("R"))
	waitText(t, tm, "Reboot now?")
	tm.Send(key("n"))
	waitText(t, tm, "not rebooting")
	tm.Send(key("enter"))
	waitText(t, tm, "Step 1/5")
	m, _ := f.screen(tm)
	if m.step != stepImages {
		t.Fatalf("Enter on the result: step %d", m.step)
	}
}

func TestRebootAsked(t *testing.T) {
	f := newFixture(t)
	close(f.release)
	rebooted := make(chan struct{}, 1)
	tm := f.start(func(c *Config) { c.Reboot = func() error { rebooted <- struct{}{}; return nil } })
	f.confirmWith(tm, "yes")
	waitText(t, tm, "Flashed")
	tm.Send(key("R"))
	waitText(t, tm, "Reboot now?")
	tm.Send(key("y"))
	select {
	case <-rebooted:
	case <-time.After(5 * time.Second):
		t.Fatal("y did not reboot")
	}
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
}

func TestBackAndQuit(t *testing.T) {
	f := newFixture(t)
	tm := f.start()
	f.toConfirm(tm)
	for _, want := range []string{"Step 3/5", "Step 2/5", "Step 1/5"} {
		if want == "Step 3/5" {
			tm.Send(key("esc"))
		} else {
			tm.Send(key("q"))
		}
		waitText(t, tm, want)
	}
	tm.Send(key("q"))
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
	if len(f.flashes) != 0 {
		t.Fatal("going back flashed something")
	}
}

// TestASCIITerminal: on vt100 the screen is plain ASCII.
func TestASCIITerminal(t *testing.T) {
	t.Setenv("TERM", "vt100")
	f := newFixture(t)
	tm := f.start()
	f.confirmWith(tm, "yes")
	waitText(t, tm, "50%")
	_, v := f.screen(tm)
	close(f.release)
	for i, r := range v {
		if r > 0x7e || (r < 0x20 && r != '\n') {
			t.Fatalf("non-ASCII %q at %d in:\n%s", r, i, v)
		}
	}
	if !strings.Contains(v, "[") || !strings.Contains(v, "#") {
		t.Fatalf("no ASCII progress bar:\n%s", v)
	}
}

// TestConfirmNamesProvisioningInputs: the plan screen shows what the
// chosen mode will use, and only that (cijoe has no hostname).
func TestConfirmNamesProvisioningInputs(t *testing.T) {
	f := newFixture(t)
	tm := f.start()
	waitText(t, tm, "debian-12.img")
	tm.Send(key("down"))
	tm.Send(key("enter"))
	waitText(t, tm, "/dev/sda")
	tm.Send(key("enter"))
	waitText(t, tm, "Step 3/5")
	tm.Send(key("down"))
	tm.Send(key("down"))
	tm.Send(key("enter"))
	waitText(t, tm, "Workflow file")
	tm.Type("/w.yaml")
	tm.Send(key("tab"))
	tm.Type("/c.toml")
	tm.Send(key("enter"))
	waitText(t, tm, "Type yes")
	_, v := f.screen(tm)
	if !strings.Contains(v, "Provisioning: cijoe, workflow /w.yaml, config /c.toml") || strings.Contains(v, "hostname") {
		t.Fatalf("confirm screen:\n%s", v)
	}
}

// TestStalePlanIgnored: a plan that arrives after the user went back and
// chose again is not shown for the new choice.
func TestStalePlanIgnored(t *testing.T) {
	f := newFixture(t)
	first := make(chan struct{})
	var calls int
	var mu sync.Mutex
	check := f.cfg.Check
	f.cfg.Check = func(ctx context.Context, o flash.Options) (*flash.Plan, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			<-first // the first check is slow, and refuses
			return &flash.Plan{OK: false, Errors: []string{"stale refusal"}}, nil
		}
		return check(ctx, o)
	}
	tm := f.start()
	waitText(t, tm, "debian-12.img")
	tm.Send(key("down"))
	tm.Send(key("enter"))
	waitText(t, tm, "/dev/sda")
	tm.Send(key("enter"))
	waitText(t, tm, "Step 3/5")
	tm.Send(key("enter"))
	waitText(t, tm, "checking the image")
	tm.Send(key("esc")) // back while the first check still runs
	waitText(t, tm, "Step 3/5")
	tm.Send(key("enter"))
	waitText(t, tm, "Type yes")
	close(first)
	time.Sleep(300 * time.Millisecond) // let the stale answer arrive
	m, v := f.screen(tm)
	if strings.Contains(v, "stale refusal") || m.plan == nil || !m.plan.OK {
		t.Fatalf("the stale plan replaced the current one:\n%s", v)
	}
}
