package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/btyproject/bty/internal/ctxio"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/human"
)

// The netboot file names, as bty-web serves them from BTY_BOOT_DIR
// (internal/netboot's DefaultKernel and DefaultInitrd).
const (
	KernelName = "bty-live-x86_64.vmlinuz"
	InitrdName = "bty-live-x86_64.initrd"
	SumsName   = "SHA256SUMS"
)

// maxInitrd is the size the initrd should stay under: it crosses the
// network on every PXE boot.
const maxInitrd = 40 << 20

// NetbootOptions configure Netboot. Zero values: CacheDir
// DefaultCacheDir(), BinDir the directory of the running executable,
// KernelDeb empty (Debian's current linux-image-amd64 via apt-get), Log
// discards.
type NetbootOptions struct {
	OutDir, CacheDir, BinDir, KernelDeb string
	Log                                 *slog.Logger
}

// Artifacts describes a built netboot pair.
type Artifacts struct {
	Kernel, Initrd, Manifest string // host paths; Manifest is SHA256SUMS
	KernelSize, InitrdSize   int64
	KernelSHA256             string
	InitrdSHA256             string
	KernelVersion            string
	Modules                  int // kernel modules in the initramfs
	ModuleReport             ModuleReport
}

// Netboot builds the netboot live environment into OutDir:
// bty-live-x86_64.vmlinuz, bty-live-x86_64.initrd and SHA256SUMS (in
// sha256sum's format). Each file is written under a temporary name and
// renamed into place, SHA256SUMS last; existing files are replaced.
func Netboot(ctx context.Context, o NetbootOptions) (*Artifacts, error) {
	log := orDiscard(o.Log)
	if o.OutDir == "" {
		return nil, exitcode.New(exitcode.Usage, "no output directory: give --out DIR")
	}
	// The output directory first: a bad --out fails before the downloads.
	created := false
	if _, err := os.Stat(o.OutDir); err != nil {
		created = true
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the output directory: %w (choose another with --out DIR)", err)
	}
	removeIfCreated := func() {
		if created {
			os.Remove(o.OutDir) // only if empty
		}
	}
	in, err := gather(ctx, gatherOptions{cacheDir: o.CacheDir, binDir: o.BinDir, kernelDeb: o.KernelDeb, log: log})
	if err != nil {
		removeIfCreated()
		return nil, err
	}
	a, err := writeNetboot(ctx, o.OutDir, in, KindNetboot, true, log)
	if err != nil {
		removeIfCreated()
		return nil, err
	}
	return a, nil
}

// writeNetboot writes the kernel and a kind initramfs into dir (and
// SHA256SUMS when sums is set).
func writeNetboot(ctx context.Context, dir string, in *liveInputs, kind Kind, sums bool, log *slog.Logger) (*Artifacts, error) {
	a := &Artifacts{
		Kernel:        filepath.Join(dir, KernelName),
		Initrd:        filepath.Join(dir, InitrdName),
		KernelVersion: in.kernel.Version,
		Modules:       len(in.modules.Modules),
		ModuleReport:  in.report,
	}
	var tmps []string
	defer func() {
		for _, t := range tmps {
			os.Remove(t)
		}
	}()

	done := step(log, "initramfs ("+string(kind)+")")
	files, err := in.files(kind)
	if err != nil {
		return nil, err
	}
	initrdTmp, initrdSize, initrdSum, err := writeTemp(dir, InitrdName, func(w io.Writer) error {
		return WriteInitramfs(ctxio.NewWriter(ctx, w), files)
	})
	if initrdTmp != "" {
		tmps = append(tmps, initrdTmp)
	}
	if err != nil {
		return nil, err
	}
	done("bytes", initrdSize, "files", len(files))

	kernelTmp, kernelSize, kernelSum, err := writeTemp(dir, KernelName, func(w io.Writer) error {
		f, err := os.Open(in.kernel.Vmlinuz)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	})
	if kernelTmp != "" {
		tmps = append(tmps, kernelTmp)
	}
	if err != nil {
		return nil, err
	}
	a.KernelSize, a.InitrdSize, a.KernelSHA256, a.InitrdSHA256 = kernelSize, initrdSize, kernelSum, initrdSum

	var sumsTmp string
	if sums {
		a.Manifest = filepath.Join(dir, SumsName)
		content := fmt.Sprintf("%s  %s\n%s  %s\n", kernelSum, KernelName, initrdSum, InitrdName)
		sumsTmp, _, _, err = writeTemp(dir, SumsName, func(w io.Writer) error {
			_, err := io.WriteString(w, content)
			return err
		})
		if sumsTmp != "" {
			tmps = append(tmps, sumsTmp)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, r := range [][2]string{{kernelTmp, a.Kernel}, {initrdTmp, a.Initrd}, {sumsTmp, a.Manifest}} {
		if r[0] == "" {
			continue
		}
		if err := os.Rename(r[0], r[1]); err != nil {
			return nil, fmt.Errorf("moving the output into place: %w", err)
		}
	}
	tmps = nil
	log.Info("live env", "kind", kind, "kernel", in.kernel.Version, "vmlinuz_bytes", kernelSize, "initrd_bytes", initrdSize,
		"total_bytes", kernelSize+initrdSize, "vmlinuz", human.Bytes(kernelSize), "initrd", human.Bytes(initrdSize), "total", human.Bytes(kernelSize+initrdSize))
	if initrdSize > maxInitrd {
		log.Warn("the initrd is over its 40 MiB budget: PXE boots get slower", "initrd", human.Bytes(initrdSize))
	}
	return a, nil
}

// writeTemp writes a file under a temporary name in dir through fn and
// returns that name, the size and the sha256. On error the file is gone.
func writeTemp(dir, name string, fn func(io.Writer) error) (string, int64, string, error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-")
	if err != nil {
		return "", 0, "", fmt.Errorf("writing %s: %w", name, err)
	}
	fail := func(err error) (string, int64, string, error) {
		f.Close()
		os.Remove(f.Name())
		return "", 0, "", err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := fn(cw); err != nil {
		return fail(fmt.Errorf("writing %s: %w", name, err))
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("writing %s: %w", name, err))
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", 0, "", fmt.Errorf("writing %s: %w", name, err)
	}
	return f.Name(), cw.n, hex.EncodeToString(h.Sum(nil)), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
