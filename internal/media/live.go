package media

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/kmod"
	"github.com/btyproject/bty/internal/version"
)

// Kind is the flavour of a live environment; it lands in /etc/bty/live.json.
type Kind string

// The live environment kinds.
const (
	KindNetboot Kind = "netboot"
	KindUSB     Kind = "usb"
	KindServer  Kind = "server"
)

// LiveInfo is /etc/bty/live.json.
type LiveInfo struct {
	Kind       Kind   `json:"kind"`
	BtyVersion string `json:"bty_version"`
	Kernel     string `json:"kernel"`
	Built      string `json:"built"`
}

// Modules is what the live environment loads. Names as the kernel spells
// them; Subset adds what each needs. Built-in ones are left out silently,
// missing ones with a warning.
var Modules = []string{
	// storage
	"nvme", "ahci", "sd_mod", "virtio_blk", "virtio_scsi", "virtio_pci",
	"usb_storage", "uas", "xhci_pci", "ehci_pci", "ohci_pci", "uhci_hcd",
	"mmc_block", "sdhci_pci",
	// network
	"e1000e", "e1000", "igb", "igc", "ixgbe", "i40e", "ice", "r8169", "tg3",
	"bnxt_en", "virtio_net", "usbnet", "cdc_ether", "cdc_ncm", "r8152",
	"ax88179_178a", "asix",
	// input, for the TUI on real hardware
	"usbhid", "hid_generic", "atkbd",
	// filesystems
	"ext4", "xfs", "btrfs", "vfat", "exfat", "nls_cp437", "nls_iso8859_1",
	"nls_utf8", "loop",
	// checksums ext4 and btrfs want
	"crc32c_generic", "crc32c_intel",
}

// moduleMaxSize leaves out modules too big for what they bring.
var moduleMaxSize = map[string]int64{
	"ice": 1536 << 10, // Intel E800 100GbE: ~1.9 MiB, and useless without its DDP firmware
}

// ModuleReport says what became of the requested modules.
type ModuleReport struct {
	Builtin []string // built into the kernel: nothing to load
	Missing []string // neither built in nor a module of this kernel
	TooBig  []string // left out by size (moduleMaxSize)
}

// selectModules picks the live env's modules from the full index.
func selectModules(ix *kmod.Index, moddir string, log *slog.Logger) (*kmod.Index, ModuleReport, error) {
	builtin, err := readBuiltin(moddir)
	if err != nil {
		return nil, ModuleReport{}, err
	}
	var rep ModuleReport
	var want []string
	for _, name := range Modules {
		name = kmod.Normalize(name)
		m, ok := ix.Modules[name]
		switch {
		case builtin[name]:
			rep.Builtin = append(rep.Builtin, name)
			continue
		case !ok:
			rep.Missing = append(rep.Missing, name)
			log.Warn("module not in this kernel, left out", "module", name, "kernel", ix.Kernel)
			continue
		}
		if max, capped := moduleMaxSize[name]; capped {
			st, err := os.Stat(filepath.Join(moddir, filepath.FromSlash(m.Path)))
			if err != nil {
				return nil, rep, fmt.Errorf("module %s: %w", name, err)
			}
			if st.Size() > max {
				rep.TooBig = append(rep.TooBig, name)
				log.Info("module left out: too big for the live env", "module", name, "bytes", st.Size(), "limit", max)
				continue
			}
		}
		want = append(want, name)
	}
	sub, err := ix.Subset(want)
	if err != nil {
		return nil, rep, err
	}
	return sub, rep, nil
}

// readBuiltin reads modules.builtin: the names of built-in modules.
func readBuiltin(moddir string) (map[string]bool, error) {
	f, err := os.Open(filepath.Join(moddir, "modules.builtin"))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		b := path.Base(strings.TrimSpace(sc.Text()))
		if i := strings.Index(b, ".ko"); i > 0 {
			out[kmod.Normalize(b[:i])] = true
		}
	}
	return out, sc.Err()
}

// liveInputs is what every live initramfs is made of, fetched once.
type liveInputs struct {
	kernel  *Kernel
	modules *kmod.Index // the chosen subset, Paths uncompressed
	modData map[string][]byte
	report  ModuleReport
	busybox string
	bins    map[string]string // name -> host path
	ipxe    map[string]string // file name -> host path (server only)
	cacerts string            // host CA bundle, "" when absent
	built   time.Time
}

// ipxeFiles are the boot files bty-web's TFTP serves, from Debian's ipxe.
var ipxeFiles = []string{"ipxe.efi", "snponly.efi", "undionly.kpxe"}

// gatherOptions says what to fetch.
type gatherOptions struct {
	cacheDir, binDir, kernelDeb string
	server                      bool // bty-web and iPXE too
	log                         *slog.Logger
}

// gather fetches and checks everything the initramfs needs.
func gather(ctx context.Context, o gatherOptions) (*liveInputs, error) {
	log := o.log
	in := &liveInputs{bins: map[string]string{}, ipxe: map[string]string{}}

	// Binaries first: a missing `make build` is the cheapest error.
	names := []string{"bty", "bty-tui"}
	if o.server {
		names = append(names, "bty-web")
	}
	binDir, err := resolveBinDir(o.binDir)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		p := filepath.Join(binDir, n)
		if err := checkStatic(p); err != nil {
			return nil, err
		}
		in.bins[n] = p
	}

	done := step(log, "kernel")
	k, err := FetchKernel(ctx, o.cacheDir, o.kernelDeb, log)
	if err != nil {
		return nil, err
	}
	in.kernel = k
	done("version", k.Version)

	done = step(log, "module index")
	full, err := kmod.Scan(k.ModDir, k.Version)
	if err != nil {
		return nil, err
	}
	sub, rep, err := selectModules(full, k.ModDir, log)
	if err != nil {
		return nil, err
	}
	in.modules, in.report = sub, rep
	in.modData = map[string][]byte{}
	for name, m := range sub.Modules {
		if u := kmod.UncompressedPath(m.Path); u != m.Path {
			b, err := kmod.ReadFile(filepath.Join(k.ModDir, filepath.FromSlash(m.Path)))
			if err != nil {
				return nil, err
			}
			in.modData[name] = b
			m.Path = u
		}
	}
	done("scanned", len(full.Modules), "chosen", len(sub.Modules),
		"builtin", strings.Join(rep.Builtin, ","), "missing", strings.Join(rep.Missing, ","), "too_big", strings.Join(rep.TooBig, ","))

	done = step(log, "busybox")
	in.busybox, err = fetchDebFile(ctx, o.cacheDir, "busybox-static", log, "bin/busybox", "usr/bin/busybox")
	if err != nil {
		return nil, err
	}
	done()
	if o.server {
		done = step(log, "ipxe")
		for _, f := range ipxeFiles {
			p, err := fetchDebFile(ctx, o.cacheDir, "ipxe", log, "usr/lib/ipxe/"+f)
			if err != nil {
				return nil, err
			}
			in.ipxe[f] = p
		}
		done()
	}
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		in.cacerts = "/etc/ssl/certs/ca-certificates.crt"
	} else {
		log.Warn("no /etc/ssl/certs/ca-certificates.crt on this host: the live env will not trust https servers (apt-get install ca-certificates)")
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if in.built, err = sourceDateEpoch(); err != nil {
			return nil, err
		}
	} else {
		in.built = time.Now().UTC().Truncate(time.Second)
	}
	return in, nil
}

// files lists the initramfs of kind.
func (in *liveInputs) files(kind Kind) ([]File, error) {
	v := in.kernel.Version
	var fs_ []File
	add := func(f File) { fs_ = append(fs_, f) }
	for _, d := range []string{"dev", "proc", "sys", "run", "mnt", "var/lib/bty/images", "var/log", "etc/bty", "usr/lib", "bin", "sbin"} {
		add(File{Path: d, Mode: fs.ModeDir | 0o755})
	}
	add(File{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777})
	add(File{Path: "root", Mode: fs.ModeDir | 0o700})

	add(File{Path: "bin/bty", Mode: 0o755, Source: in.bins["bty"]})
	add(File{Path: "init", Mode: fs.ModeSymlink | 0o777, Link: "bin/bty"})
	add(File{Path: "sbin/modprobe", Mode: fs.ModeSymlink | 0o777, Link: "../bin/bty"})
	add(File{Path: "bin/bty-tui", Mode: 0o755, Source: in.bins["bty-tui"]})
	add(File{Path: "bin/busybox", Mode: 0o755, Source: in.busybox})
	if kind == KindServer {
		add(File{Path: "bin/bty-web", Mode: 0o755, Source: in.bins["bty-web"]})
		for _, f := range ipxeFiles {
			add(File{Path: "usr/lib/ipxe/" + f, Mode: 0o644, Source: in.ipxe[f]})
		}
	}

	moddir := "lib/modules/" + v
	for name, m := range in.modules.Modules {
		f := File{Path: moddir + "/" + m.Path, Mode: 0o644}
		if b, ok := in.modData[name]; ok {
			f.Data = b
		} else {
			f.Source = filepath.Join(in.kernel.ModDir, filepath.FromSlash(m.Path))
		}
		add(f)
	}
	idx, err := in.modules.Marshal()
	if err != nil {
		return nil, err
	}
	add(File{Path: moddir + "/" + kmod.IndexFile, Mode: 0o644, Data: idx})
	for _, n := range []string{"modules.builtin", "modules.order"} {
		if _, err := os.Stat(filepath.Join(in.kernel.ModDir, n)); err == nil {
			add(File{Path: moddir + "/" + n, Mode: 0o644, Source: filepath.Join(in.kernel.ModDir, n)})
		}
	}

	info, err := json.MarshalIndent(LiveInfo{Kind: kind, BtyVersion: version.String(), Kernel: v, Built: in.built.Format(time.RFC3339)}, "", "  ")
	if err != nil {
		return nil, err
	}
	add(File{Path: "etc/bty/live.json", Mode: 0o644, Data: append(info, '\n')})
	if in.cacerts != "" {
		add(File{Path: "etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Source: in.cacerts})
	}
	add(File{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\n")})
	add(File{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\n")})
	sort.Slice(fs_, func(i, j int) bool { return fs_[i].Path < fs_[j].Path })
	return fs_, nil
}

// resolveBinDir is dir, or the directory of the running executable
// (`make build` puts bty-media next to bty, bty-tui and bty-web).
func resolveBinDir(dir string) (string, error) {
	if dir == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", exitcode.New(exitcode.Usage, "cannot tell where bty-media runs from (%v): give --bin-dir DIR holding bty, bty-tui and bty-web", err)
		}
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		dir = filepath.Dir(exe)
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return "", exitcode.New(exitcode.Usage, "bin dir %s does not exist: run make build (CGO_ENABLED=0), or give --bin-dir DIR holding bty, bty-tui and bty-web", dir)
	}
	return dir, nil
}

// checkStatic makes sure p is a static x86-64 Linux ELF executable: the
// live env has no dynamic loader and no libc.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return exitcode.New(exitcode.Usage, "%s is missing: run make build (CGO_ENABLED=0), or give --bin-dir DIR holding bty, bty-tui and bty-web", p)
		}
		return exitcode.New(exitcode.Usage, "%s is not an ELF executable (%v): run make build (CGO_ENABLED=0)", p, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return exitcode.New(exitcode.Usage, "%s is a %s %s %s, not an x86-64 executable: run make build (CGO_ENABLED=0) for linux/amd64", p, f.Class, f.Machine, f.Type)
	}
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			return exitcode.New(exitcode.Usage, "%s is dynamically linked (it names a program interpreter), the live env has no libc: run make build (CGO_ENABLED=0)", p)
		}
	}
	return nil
}

// step logs the start of a build step and returns the function that logs
// its end with the time it took.
func step(log *slog.Logger, name string) func(attrs ...any) {
	t0 := time.Now()
	log.Info(name + "...")
	return func(attrs ...any) {
		log.Info(name+" done", append(attrs, "took", since(t0))...)
	}
}
