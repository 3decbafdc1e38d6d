package media

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// ESPOptions describe an EFI system partition booting the live env with
// systemd-boot.
type ESPOptions struct {
	Kernel, Initrd string // host files, copied to /bty/vmlinuz and /bty/initrd
	Cmdline        string // kernel command line (the entry's options)
	Title          string // boot menu title; "bty live" when empty
	Size           int64  // bytes; 0: the contents plus 32 MiB, at least 64 MiB
	// Extra files: path on the ESP ("EFI/tools/x.efi") -> host file.
	Extra map[string]string
	// BIOS also makes the ESP boot on legacy BIOS: SYSLINUX (Debian's
	// syslinux, installed with its mtools installer, nothing mounted)
	// in /syslinux with a syslinux.cfg booting the same kernel, initrd
	// and command line. The disk then needs SYSLINUX's GPT MBR code
	// (BIOSBootCode) and the ESP the legacy BIOS bootable attribute.
	BIOS bool
}

// espSlack is the free room left on an ESP sized automatically.
const espSlack = 32 * mib

// minESP keeps FAT32 comfortably above its 65525-cluster minimum.
const minESP = 64 * mib

const (
	loaderConf = "default bty.conf\ntimeout 0\nconsole-mode keep\n"
	entryFmt   = "title   %s\nlinux   /bty/vmlinuz\ninitrd  /bty/initrd\noptions %s\n"
	// SYSLINUX's: boot at once, and say so on COM1 too (a lab's serial
	// console sees the boot loader as it does systemd-boot's kernel).
	syslinuxFmt = "# bty: legacy BIOS boot (UEFI boots loader/entries/bty.conf)\n" +
		"SERIAL 0 115200\nDEFAULT bty\nPROMPT 0\nTIMEOUT 0\n" +
		"LABEL bty\n  MENU LABEL %s\n  LINUX /bty/vmlinuz\n  INITRD /bty/initrd\n  APPEND %s\n"
	syslinuxDir = "syslinux"
)

// The Debian packages and files of the legacy BIOS boot.
const (
	syslinuxPkg       = "syslinux" // the mtools installer
	syslinuxBin       = "usr/bin/syslinux"
	syslinuxCommonPkg = "syslinux-common" // the GPT MBR code
	gptMBR            = "usr/lib/syslinux/mbr/gptmbr.bin"
)

// BIOSBootCode is the boot code for the first 440 bytes of a GPT disk
// whose ESP was built with ESPOptions.BIOS: SYSLINUX's gptmbr.bin, which
// loads the boot sector of the partition with the legacy BIOS bootable
// attribute.
func BIOSBootCode(ctx context.Context, cacheDir string, log *slog.Logger) ([]byte, error) {
	p, err := fetchDebFile(ctx, cacheDir, syslinuxCommonPkg, orDiscard(log), gptMBR)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || len(b) > 440 {
		return nil, fmt.Errorf("%s is %d bytes, want at most 440: the Debian package changed, report this to bty's developers", gptMBR, len(b))
	}
	return b, nil
}

// BuildESP creates img as a FAT32 filesystem image (mkfs.vfat, filled
// with mtools; nothing is mounted) holding systemd-boot as the removable
// media boot loader EFI/BOOT/BOOTX64.EFI, loader/loader.conf (boot
// bty.conf at once), loader/entries/bty.conf, bty/vmlinuz, bty/initrd
// and the Extra files. systemd-boot comes from Debian's systemd-boot-efi,
// fetched into cacheDir.
func BuildESP(ctx context.Context, img string, o ESPOptions, cacheDir string, log *slog.Logger) error {
	log = orDiscard(log)
	if err := requireTools("mkfs.vfat", "mmd", "mcopy"); err != nil {
		return err
	}
	if o.Kernel == "" || o.Initrd == "" {
		return fmt.Errorf("an ESP needs a kernel and an initrd")
	}
	if strings.ContainsAny(o.Cmdline, "\n") || strings.ContainsAny(o.Title, "\n") {
		return fmt.Errorf("the ESP's title and kernel command line must be one line each")
	}
	boot, err := fetchDebFile(ctx, cacheDir, "systemd-boot-efi", log, "usr/lib/systemd/boot/efi/systemd-bootx64.efi")
	if err != nil {
		return err
	}
	title := o.Title
	if title == "" {
		title = "bty live"
	}

	tmp, err := os.MkdirTemp(filepath.Dir(img), ".esp-")
	if err != nil {
		return fmt.Errorf("building the ESP: %w", err)
	}
	defer os.RemoveAll(tmp)
	lc := filepath.Join(tmp, "loader.conf")
	ec := filepath.Join(tmp, "bty.conf")
	if err := os.WriteFile(lc, []byte(loaderConf), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(ec, []byte(fmt.Sprintf(entryFmt, title, o.Cmdline)), 0o644); err != nil {
		return err
	}
	var installer string
	if o.BIOS {
		if installer, err = fetchDebFile(ctx, cacheDir, syslinuxPkg, log, syslinuxBin); err != nil {
			return err
		}
		sc := filepath.Join(tmp, "syslinux.cfg")
		if err := os.WriteFile(sc, []byte(fmt.Sprintf(syslinuxFmt, title, o.Cmdline)), 0o644); err != nil {
			return err
		}
		extra := maps.Clone(o.Extra)
		if extra == nil {
			extra = map[string]string{}
		}
		extra[syslinuxDir+"/syslinux.cfg"] = sc
		o.Extra = extra
	}

	// ESP path -> host file.
	put := map[string]string{
		"EFI/BOOT/BOOTX64.EFI":    boot,
		"loader/loader.conf":      lc,
		"loader/entries/bty.conf": ec,
		"bty/vmlinuz":             o.Kernel,
		"bty/initrd":              o.Initrd,
	}
	for k, v := range o.Extra {
		k = strings.TrimPrefix(path.Clean("/"+filepath.ToSlash(k)), "/")
		if k == "" {
			return fmt.Errorf("ESP extra file %q: give a path on the ESP", k)
		}
		if _, dup := put[k]; dup {
			return fmt.Errorf("ESP extra file %s would replace a boot file", k)
		}
		put[k] = v
	}
	var content int64
	for _, host := range put {
		st, err := os.Stat(host)
		if err != nil {
			return fmt.Errorf("building the ESP: %w", err)
		}
		// FAT clusters (512 bytes to 4 KiB here) waste at most one per file.
		content += (st.Size() + 4095) / 4096 * 4096
	}
	size := o.Size
	if size == 0 {
		size = max((content+espSlack+mib-1)/mib*mib, minESP)
	}
	if size < content+mib {
		return fmt.Errorf("an ESP of %d bytes cannot hold its %d bytes of files: make it bigger", size, content)
	}

	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating the ESP image: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(img)
		}
	}()
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("sizing the ESP image: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if _, err := runTool(ctx, "", "mkfs.vfat", "-F", "32", "-n", "BTY_LIVE", img); err != nil {
		return fmt.Errorf("formatting the ESP: %w", err)
	}

	// Directories first (parents before children), then the files.
	dirs := map[string]bool{}
	for p := range put {
		for d := pathDir(p); d != ""; d = pathDir(d) {
			dirs[d] = true
		}
	}
	dl := make([]string, 0, len(dirs))
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	mmd := []string{"-i", img}
	for _, d := range dl {
		mmd = append(mmd, "::/"+d)
	}
	if len(dl) > 0 {
		if _, err := runTool(ctx, "", "mmd", mmd...); err != nil {
			return fmt.Errorf("creating directories on the ESP: %w", err)
		}
	}
	names := make([]string, 0, len(put))
	for p := range put {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		if _, err := runTool(ctx, "", "mcopy", "-i", img, "-o", put[p], "::/"+p); err != nil {
			return fmt.Errorf("copying %s onto the ESP: %w", p, err)
		}
	}
	if o.BIOS {
		// SYSLINUX's installer writes its boot sector and ldlinux.sys and
		// ldlinux.c32 into /syslinux through mtools, on the image file.
		if _, err := runTool(ctx, "", installer, "--install", "--directory", "/"+syslinuxDir, img); err != nil {
			return fmt.Errorf("installing SYSLINUX on the ESP: %w", err)
		}
	}
	ok = true
	log.Info("ESP built", "bytes", size, "content_bytes", content, "bios", o.BIOS)
	return nil
}

// pathDir is path.Dir with "" for a top-level name.
func pathDir(p string) string {
	d := path.Dir(p)
	if d == "." || d == "/" {
		return ""
	}
	return d
}
