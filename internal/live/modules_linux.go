package live

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/kmod"
)

// modules loads kernel modules from the initramfs by the index bty-media
// wrote: for the devices present (their modalias) and for the kernel's
// own requests (modprobe).
type modules struct {
	dir    string
	ix     *kmod.Index
	log    *slog.Logger
	mu     sync.Mutex
	loaded map[string]bool
	failed map[string]bool
}

func openModules(kernel string, log *slog.Logger) (*modules, error) {
	dir := filepath.Join("/lib/modules", kernel)
	ix, err := kmod.ReadIndex(filepath.Join(dir, kmod.IndexFile))
	if err != nil {
		return nil, err
	}
	m := &modules{dir: dir, ix: ix, log: log, loaded: map[string]bool{}, failed: map[string]bool{}}
	// What is already in (another modprobe's work, or earlier passes).
	for _, l := range strings.Split(readFile("/proc/modules"), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			m.loaded[f[0]] = true
		}
	}
	return m, nil
}

// load inserts the modules named (with their dependencies first) and
// says how many went in now.
func (m *modules) load(names ...string) (int, error) {
	order, err := m.ix.LoadOrder(names...)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	var errs []error
	for _, name := range order {
		if m.loaded[name] || m.failed[name] {
			continue
		}
		mod := m.ix.Modules[name]
		if mod == nil {
			continue
		}
		err := insmod(filepath.Join(m.dir, mod.Path))
		switch {
		case err == nil:
			n++
			m.loaded[name] = true
			m.log.Debug("module loaded", "module", name)
		case errors.Is(err, unix.EEXIST):
			m.loaded[name] = true
		default:
			// A driver that finds no hardware of its own (ENODEV) is
			// not an error worth a console line.
			m.failed[name] = true
			if !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("module %s: %w", name, err))
			}
		}
	}
	return n, errors.Join(errs...)
}

func insmod(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}

// probe loads the modules whose aliases match a device in /sys.
func (m *modules) probe() int {
	seen := map[string]bool{}
	var want []string
	_ = filepath.WalkDir("/sys/devices", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Name() != "modalias" || d.IsDir() {
			return nil
		}
		alias := readFile(path)
		if alias == "" || seen[alias] {
			return nil
		}
		seen[alias] = true
		want = append(want, m.ix.Resolve(alias)...)
		return nil
	})
	slices.Sort(want)
	want = slices.Compact(want)
	n, err := m.load(want...)
	if err != nil {
		m.log.Warn("loading drivers", "err", err)
	}
	return n
}

// settle probes until a pass loads nothing new (a bus driver makes new
// devices appear, which want their own drivers), until returns true, or
// max has passed. It returns how many modules it loaded.
func (m *modules) settle(max time.Duration, until func() bool) int {
	deadline := time.Now().Add(max)
	total, quiet := 0, 0
	for {
		n := m.probe()
		total += n
		if until != nil && until() {
			return total
		}
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
		if time.Now().After(deadline) || (until == nil && quiet >= 2) {
			return total
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Modprobe is the kernel's modprobe (it runs /sbin/modprobe -q -- NAME
// for a filesystem, a crypto algorithm or a network family it lacks) in
// the live env: NAME is a module name or alias from the index.
func Modprobe(args []string) int {
	var names []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			names = append(names, a)
		}
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	log := slog.New(slog.DiscardHandler)
	m, err := openModules(unix.ByteSliceToString(uts.Release[:]), log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "modprobe: %v\n", err)
		return 1
	}
	code := 0
	for _, n := range names {
		mods := m.ix.Resolve(n)
		if len(mods) == 0 {
			code = 1
			continue
		}
		if _, err := m.load(mods...); err != nil {
			fmt.Fprintf(os.Stderr, "modprobe: %v\n", err)
			code = 1
		}
	}
	return code
}
