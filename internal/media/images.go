package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/ctxio"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/human"
)

// Kernel command lines of the disk images' boot entries.
const (
	USBCmdline    = "bty.mode=usb console=tty0 console=ttyS0,115200n8 panic=10"
	ServerCmdline = "bty.mode=server console=tty0 console=ttyS0,115200n8 panic=10"
)

// Partition names (GPT names; the filesystems carry the same labels).
const (
	LiveLabel   = "BTY_LIVE"
	ImagesLabel = "BTY_IMAGES"
	StateLabel  = "BTY_STATE"
)

// Default sizes of the data partitions.
const (
	DefaultImagesSize = 4 << 30
	DefaultStateSize  = 8 << 30
)

// USBOptions configure USB. Zero values as in NetbootOptions;
// ImagesSize 0 is DefaultImagesSize.
type USBOptions struct {
	Out, CacheDir, BinDir, KernelDeb string
	ImagesSize                       int64
	Force                            bool // replace an existing Out
	Log                              *slog.Logger
}

// ServerOptions configure Server. StateSize 0 is DefaultStateSize.
type ServerOptions struct {
	Out, CacheDir, BinDir, KernelDeb string
	StateSize                        int64
	Force                            bool // replace an existing Out
	Log                              *slog.Logger
}

// USB builds a bootable USB stick image at Out: GPT, partition 1 an ESP
// "BTY_LIVE" (FAT32, systemd-boot, the usb live env), partition 2
// "BTY_IMAGES" (Microsoft basic data, exFAT labelled BTY_IMAGES, readable
// and writable from Linux, Windows and macOS) for the images to flash.
// It boots on UEFI (systemd-boot) and legacy BIOS (SYSLINUX).
func USB(ctx context.Context, o USBOptions) error {
	log := orDiscard(o.Log)
	size := o.ImagesSize
	if size == 0 {
		size = DefaultImagesSize
	}
	if size < 16*mib {
		return exitcode.New(exitcode.Usage, "--images-size %d is too small for an exFAT images partition: give at least 16MiB", size)
	}
	size = (size + mib - 1) / mib * mib
	if err := checkOut(o.Out, o.Force); err != nil {
		return err
	}
	if err := requireTools("apt-get", "apt-cache", "dpkg-deb", "mkfs.vfat", "mmd", "mcopy", "mkfs.exfat"); err != nil {
		return err
	}
	in, err := gather(ctx, gatherOptions{cacheDir: o.CacheDir, binDir: o.BinDir, kernelDeb: o.KernelDeb, log: log})
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(o.Out), ".bty-media-")
	if err != nil {
		return fmt.Errorf("creating a work directory next to %s: %w", o.Out, err)
	}
	defer os.RemoveAll(work)

	esp, espSize, bootCode, err := liveESP(ctx, work, in, KindUSB, USBCmdline, "bty live (USB)", o.CacheDir, log)
	if err != nil {
		return err
	}

	done := step(log, "exFAT images partition")
	images := filepath.Join(work, "images.img")
	if err := sparseFile(images, size); err != nil {
		return err
	}
	if _, err := runTool(ctx, "", "mkfs.exfat", "-L", ImagesLabel, images); err != nil {
		return fmt.Errorf("formatting the images partition: %w", err)
	}
	done("bytes", size)

	return finishDisk(work, o.Out, o.Force, 2*mib+espSize+size, []Partition{
		{Name: LiveLabel, Type: "esp", Size: espSize, Image: esp, LegacyBoot: true},
		{Name: ImagesLabel, Type: "basicdata", Image: images},
	}, bootCode, log)
}

// Server builds a disk image for a bty appliance at Out: GPT, partition 1
// an ESP "BTY_LIVE" (FAT32, systemd-boot, the server live env with
// bty-web and iPXE), partition 2 "BTY_STATE" (ext4 labelled BTY_STATE)
// holding boot/ (a netboot live env for the appliance's PXE clients,
// built in the same run) and an empty images/.
func Server(ctx context.Context, o ServerOptions) error {
	log := orDiscard(o.Log)
	size := o.StateSize
	if size == 0 {
		size = DefaultStateSize
	}
	if size < 256*mib {
		return exitcode.New(exitcode.Usage, "--state-size %d is too small for the state partition (it holds the netboot files): give at least 256MiB", size)
	}
	size = (size + mib - 1) / mib * mib
	if err := checkOut(o.Out, o.Force); err != nil {
		return err
	}
	if err := requireTools("apt-get", "apt-cache", "dpkg-deb", "mkfs.vfat", "mmd", "mcopy", "mkfs.ext4"); err != nil {
		return err
	}
	in, err := gather(ctx, gatherOptions{cacheDir: o.CacheDir, binDir: o.BinDir, kernelDeb: o.KernelDeb, server: true, log: log})
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(o.Out), ".bty-media-")
	if err != nil {
		return fmt.Errorf("creating a work directory next to %s: %w", o.Out, err)
	}
	defer os.RemoveAll(work)

	state := filepath.Join(work, "state")
	for _, d := range []string{state, filepath.Join(state, "boot"), filepath.Join(state, "images")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
	}
	if _, err := writeNetboot(ctx, filepath.Join(state, "boot"), in, KindNetboot, false, log); err != nil {
		return err
	}
	esp, espSize, bootCode, err := liveESP(ctx, work, in, KindServer, ServerCmdline, "bty server", o.CacheDir, log)
	if err != nil {
		return err
	}

	done := step(log, "ext4 state partition")
	stateImg := filepath.Join(work, "state.img")
	if err := sparseFile(stateImg, size); err != nil {
		return err
	}
	if _, err := runTool(ctx, "", "mkfs.ext4", "-q", "-F", "-T", "default", "-L", StateLabel, "-E", "root_owner=0:0", "-d", state, stateImg); err != nil {
		return fmt.Errorf("formatting the state partition: %w", err)
	}
	done("bytes", size)

	return finishDisk(work, o.Out, o.Force, 2*mib+espSize+size, []Partition{
		{Name: LiveLabel, Type: "esp", Size: espSize, Image: esp, LegacyBoot: true},
		{Name: StateLabel, Type: "linux", Image: stateImg},
	}, bootCode, log)
}

// writeInitrd writes the kind initramfs into work and returns its path.
func writeInitrd(ctx context.Context, work string, in *liveInputs, kind Kind, log *slog.Logger) (string, error) {
	done := step(log, "initramfs ("+string(kind)+")")
	files, err := in.files(kind)
	if err != nil {
		return "", err
	}
	tmp, n, _, err := writeTemp(work, "initrd", func(w io.Writer) error {
		return WriteInitramfs(ctxio.NewWriter(ctx, w), files)
	})
	if err != nil {
		return "", err
	}
	done("bytes", n, "size", human.Bytes(n), "files", len(files))
	if n > maxInitrd {
		log.Warn("the initrd is over its 40 MiB budget", "initrd", human.Bytes(n))
	}
	return tmp, nil
}

// finishDisk assembles the disk image in work and moves it to out.
func finishDisk(work, out string, force bool, size int64, parts []Partition, bootCode []byte, log *slog.Logger) error {
	done := step(log, "disk image")
	disk := filepath.Join(work, "disk.img")
	if err := WriteGPTDisk(disk, size, parts, bootCode); err != nil {
		return err
	}
	if err := placeOut(disk, out, force); err != nil {
		return err
	}
	done("out", out, "bytes", size, "size", human.Bytes(size))
	return nil
}

// checkOut refuses an existing out without force, and an out whose
// directory does not exist.
func checkOut(out string, force bool) error {
	if out == "" {
		return exitcode.New(exitcode.Usage, "no output file: give --out FILE")
	}
	if st, err := os.Stat(out); err == nil {
		if st.IsDir() {
			return exitcode.New(exitcode.Usage, "--out %s is a directory: give a file name such as %s", out, filepath.Join(out, "bty.img"))
		}
		if !force {
			return exitcode.New(exitcode.Usage, "%s already exists: add --force to replace it", out)
		}
	}
	if st, err := os.Stat(filepath.Dir(out)); err != nil || !st.IsDir() {
		return exitcode.New(exitcode.Usage, "the directory of --out %s does not exist: create it first", out)
	}
	return nil
}

// placeOut renames tmp to out; without force it never replaces a file
// that appeared in the meantime.
func placeOut(tmp, out string, force bool) error {
	if force {
		if err := os.Rename(tmp, out); err != nil {
			return fmt.Errorf("moving the image into place: %w", err)
		}
		return nil
	}
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, out, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return exitcode.New(exitcode.Usage, "%s appeared while the image was built: add --force to replace it", out)
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
			return exitcode.New(exitcode.Usage, "%s appeared while the image was built: add --force to replace it", out)
		}
		if err := os.Rename(tmp, out); err != nil {
			return fmt.Errorf("moving the image into place: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("moving the image into place: %w", err)
	}
}

// sparseFile creates p as a sparse file of size bytes.
func sparseFile(p string, size int64) error {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("creating a %d-byte file: %w (is there room?)", size, err)
	}
	return f.Close()
}

func fileSize(p string) (int64, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// liveESP builds, in work, the initramfs of kind and an ESP booting it
// with cmdline; it returns the ESP file and its size.
func liveESP(ctx context.Context, work string, in *liveInputs, kind Kind, cmdline, title, cacheDir string, log *slog.Logger) (esp string, size int64, bootCode []byte, err error) {
	initrd, err := writeInitrd(ctx, work, in, kind, log)
	if err != nil {
		return "", 0, nil, err
	}
	done := step(log, "ESP")
	esp = filepath.Join(work, "esp.img")
	if err := BuildESP(ctx, esp, ESPOptions{Kernel: in.kernel.Vmlinuz, Initrd: initrd, Cmdline: cmdline, Title: title, BIOS: true}, cacheDir, log); err != nil {
		return "", 0, nil, err
	}
	if bootCode, err = BIOSBootCode(ctx, cacheDir, log); err != nil {
		return "", 0, nil, err
	}
	if size, err = fileSize(esp); err != nil {
		return "", 0, nil, err
	}
	done("bytes", size)
	return esp, size, bootCode, nil
}
