package live

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/version"
)

// Paths inside the live environment (bty-media lays the initramfs out).
const (
	infoFile  = "/etc/bty/live.json"
	busybox   = "/bin/busybox"
	logDir    = "/var/log/bty"
	imagesDir = "/var/lib/bty/images"
	stateDir  = "/var/lib/bty"
	runDir    = "/run/bty"
)

// Info is what bty-media wrote into /etc/bty/live.json.
type Info struct {
	Kind       string `json:"kind"` // netboot, usb, server
	BtyVersion string `json:"bty_version"`
	Kernel     string `json:"kernel"`
	Built      string `json:"built"`
}

// system is the running live env: its consoles, log and modules.
type system struct {
	out     *consoles
	log     *slog.Logger
	info    Info
	mods    *modules
	params  Params
	started time.Time
	netMu   sync.Mutex
	network *lease
}

// Main is PID 1 of the live environment. It never returns while it is
// PID 1: the machine reboots, or a human gets a shell.
func Main() int {
	s := &system{started: time.Now(), out: &consoles{}}
	defer func() {
		if r := recover(); r != nil {
			s.say("INTERNAL ERROR: %v\n%s", r, debug.Stack())
			s.rescue("the live env hit an internal error")
		}
	}()
	s.boot()
	p, err := ParseCmdline(readFile("/proc/cmdline"))
	s.params = p
	for _, k := range p.Unknown {
		s.say("ignoring unknown kernel parameter %s", k)
	}
	for _, n := range p.Notes {
		s.say("%s", n)
	}
	ctx := context.Background()
	if p.Shell {
		s.shellOnConsoles(ctx)
	}
	if err != nil {
		s.say("bad boot parameters: %v", err)
		if p.Mode == ModeFlash && p.Server != "" && !p.MAC.IsZero() {
			s.ensureNetwork(ctx)
			s.reportFailed(ctx, "live env: "+err.Error())
		}
		s.retryLater(ctx)
	}
	switch p.Mode {
	case ModeFlash:
		s.flashMode(ctx)
	case ModeInteractive:
		s.interactiveMode(ctx)
	case ModeUSB:
		s.usbMode(ctx)
	case ModeServer:
		s.serverMode(ctx)
	}
	s.rescue("nothing left to do")
	return 0
}

// boot does PID 1's first duties: kernel filesystems, consoles, logs,
// busybox's applets, modules for the devices present.
func (s *system) boot() {
	for _, m := range []struct{ src, dir, typ, opts string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
		{"devpts", "/dev/pts", "devpts", "gid=5,mode=620,ptmxmode=0666"},
		{"tmpfs", "/run", "tmpfs", "mode=0755"},
	} {
		_ = os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.typ, unix.MS_NOSUID, m.opts); err != nil && !errors.Is(err, unix.EBUSY) {
			// Nothing to print on yet for the first ones; the console
			// still works through the kernel's /dev/console.
			fmt.Fprintf(os.Stderr, "bty-live: mounting %s on %s: %v\n", m.typ, m.dir, err)
		}
	}
	s.out = openConsoles()
	for _, d := range []string{logDir, runDir, imagesDir, "/tmp", "/root"} {
		_ = os.MkdirAll(d, 0o755)
	}
	_ = os.Chmod("/tmp", 0o1777)
	var logw io.Writer = io.Discard
	if f, err := os.OpenFile(filepath.Join(logDir, "live.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		logw = f
	}
	// Warnings and errors on the consoles, everything in the log file.
	s.log = slog.New(teeHandler{
		slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewTextHandler(s.out, &slog.HandlerOptions{Level: slog.LevelWarn}),
	})
	if b, err := os.ReadFile(infoFile); err == nil {
		_ = json.Unmarshal(b, &s.info)
	}
	if s.info.Kind == "" {
		s.info.Kind = "unknown"
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	kernel := unix.ByteSliceToString(uts.Release[:])
	s.say("starting (%s, bty %s, kernel %s)", s.info.Kind, version.String(), kernel)

	env := []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root", "BTY_LOG_DIR=" + logDir}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		_ = os.Setenv(k, v)
	}
	if _, err := os.Stat(busybox); err == nil {
		if out, err := exec.Command(busybox, "--install", "-s", "/bin").CombinedOutput(); err != nil {
			s.log.Warn("installing busybox applets", "err", err, "output", string(out))
		}
	}
	_ = os.WriteFile("/proc/sys/kernel/printk", []byte("4 4 1 7"), 0o644)
	if err := loopbackUp(); err != nil {
		s.log.Warn("bringing up the loopback interface", "err", err)
	}
	mods, err := openModules(kernel, s.log)
	if err != nil {
		s.say("no kernel modules: %v (only the kernel's built-in drivers work)", err)
	} else {
		s.mods = mods
		n := mods.settle(3*time.Second, nil)
		s.log.Info("modules loaded for the devices present", "count", n)
	}
	s.waitRandom()
}

// waitRandom waits until the kernel's random number generator is ready:
// DHCP and TLS draw from it and would otherwise fail with "could not get
// random number". CPUs with RDRAND (and VMs with a virtio-rng device)
// have it at once; a VM without either can wait long.
func (s *system) waitRandom() {
	b := make([]byte, 1)
	if _, err := unix.Getrandom(b, unix.GRND_NONBLOCK); err == nil {
		return
	}
	s.say("waiting for the kernel's random number generator (a VM needs a CPU with RDRAND, e.g. QEMU -cpu max, or -device virtio-rng-pci)")
	start := time.Now()
	if _, err := unix.Getrandom(b, 0); err != nil {
		s.say("the random number generator failed: %v", err)
		return
	}
	s.say("random number generator ready after %s", time.Since(start).Round(time.Second))
}

// say prints one "bty-live: ..." line on every console and logs it.
func (s *system) say(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(s.out, "bty-live: %s\n", msg)
	if s.log != nil {
		s.log.Info(msg)
	}
}

// rescue ends in a shell on the consoles for whoever comes, forever.
func (s *system) rescue(why string) {
	s.say("%s; a shell is on the consoles (the machine stays up; reboot with: reboot -f)", why)
	for {
		s.shellOnConsoles(context.Background())
		time.Sleep(time.Second)
	}
}

// retryLater waits the retry delay (a human may take a shell on any
// console meanwhile; the retry waits for it), then reboots, so the
// machine PXE-boots and its server decides again.
func (s *system) retryLater(ctx context.Context) {
	d := s.params.RetryDelay
	if d == 0 {
		d = DefaultRetryDelay
	}
	s.say("retrying in %s: the machine reboots and asks its server again (press Enter for a shell; the retry waits for it)", d.Round(time.Second))
	if tty := s.out.waitEnter(d); tty != "" {
		s.runShell(ctx, tty)
	}
	s.reboot()
}

// reboot syncs, unmounts what can be unmounted and restarts the machine.
func (s *system) reboot() {
	s.say("rebooting")
	unix.Sync()
	mounts := strings.Split(readFile("/proc/self/mounts"), "\n")
	slices.Reverse(mounts)
	for _, l := range mounts {
		f := strings.Fields(l)
		if len(f) < 3 || slices.Contains([]string{"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "rootfs", "ramfs"}, f[2]) {
			continue
		}
		if err := unix.Unmount(f[1], 0); err != nil {
			_ = unix.Unmount(f[1], unix.MNT_DETACH)
		}
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		s.rescue("reboot failed: " + err.Error())
	}
	select {}
}

// shellOnConsoles runs a shell on every console and returns when one of
// them exits.
func (s *system) shellOnConsoles(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{}, len(s.out.ttys))
	for _, tty := range s.out.ttys {
		go func() {
			s.runShell(ctx, tty)
			done <- struct{}{}
		}()
	}
	if len(s.out.ttys) == 0 {
		time.Sleep(time.Minute)
		return
	}
	<-done
}

// runShell runs busybox's sh on tty until it exits.
func (s *system) runShell(ctx context.Context, tty string) {
	sh := "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		fmt.Fprintf(s.out, "bty-live: no shell in this live env (%v)\n", err)
		time.Sleep(10 * time.Second)
		return
	}
	fmt.Fprintf(s.out, "bty-live: shell on %s; exit it to go on\n", tty)
	if err := s.runOn(ctx, tty, []string{sh, "-l"}, "PS1=bty-live# "); err != nil {
		s.log.Warn("shell", "tty", tty, "err", err)
	}
}

// runOn runs argv on tty as its controlling terminal in a new session.
func (s *system) runOn(ctx context.Context, tty string, argv []string, env ...string) error {
	f, err := os.OpenFile(tty, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	term := "linux"
	if strings.HasPrefix(filepath.Base(tty), "ttyS") || strings.HasPrefix(filepath.Base(tty), "ttyAMA") || strings.HasPrefix(filepath.Base(tty), "hvc") {
		// A serial console: its size is unknown, assume the classic
		// terminal, and ASCII is what every console server shows.
		term = "vt100"
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && (ws.Row == 0 || ws.Col == 0) {
			_ = unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80})
		}
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, f
	cmd.Env = append(append(os.Environ(), "TERM="+term), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	return cmd.Run()
}

// teeHandler sends each record to every handler that takes its level.
type teeHandler []slog.Handler

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			_ = h.Handle(ctx, r.Clone())
		}
	}
	return nil
}

func (t teeHandler) WithAttrs(a []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(a)
	}
	return out
}

func (t teeHandler) WithGroup(g string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(g)
	}
	return out
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// consoles writes to every console the kernel has (console= on the
// command line): a lab watches the serial line, a human the screen.
type consoles struct {
	mu   sync.Mutex
	ttys []string
	fs   []*os.File
}

func openConsoles() *consoles {
	c := &consoles{}
	for _, name := range strings.Fields(readFile("/sys/class/tty/console/active")) {
		if name == "tty0" {
			name = "tty1" // the current virtual terminal: the first one
		}
		path := "/dev/" + name
		f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		c.ttys = append(c.ttys, path)
		c.fs = append(c.fs, f)
	}
	if len(c.fs) == 0 {
		if f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			c.ttys, c.fs = []string{"/dev/console"}, []*os.File{f}
		}
	}
	return c
}

// Write writes p to every console; one that fails does not stop the
// others. A console's line discipline wants \r\n.
func (c *consoles) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fs) == 0 {
		return os.Stderr.Write(p)
	}
	for _, f := range c.fs {
		_, _ = f.Write(p)
	}
	return len(p), nil
}

// waitEnter waits up to d for Enter on any console and says which one
// ("" when the time ran out).
func (c *consoles) waitEnter(d time.Duration) string {
	deadline := time.Now().Add(d)
	got := make(chan string, len(c.ttys))
	var open []*os.File
	for _, tty := range c.ttys {
		f, err := os.OpenFile(tty, os.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		open = append(open, f)
		_ = f.SetReadDeadline(deadline)
		go func() {
			r := bufio.NewReader(f)
			if _, err := r.ReadString('\n'); err == nil {
				got <- tty
			}
		}()
	}
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	select {
	case tty := <-got:
		return tty
	case <-time.After(time.Until(deadline)):
		return ""
	}
}
