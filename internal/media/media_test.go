package media

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/kmod"
	"github.com/btyproject/bty/internal/version"
)

// coreModules must be in every live env: without them QEMU guests and
// common hardware cannot reach their disks, network or image files.
var coreModules = []string{"virtio_net", "virtio_blk", "virtio_pci", "ext4", "vfat", "exfat", "e1000e", "nvme", "ahci", "usb_storage", "xhci_pci"}

const testEpoch = "1700000000" // 2023-11-14T22:13:20Z

func TestNetboot(t *testing.T) {
	mediaTest(t)
	t.Setenv("SOURCE_DATE_EPOCH", testEpoch)
	ctx := context.Background()
	bins := testBins(t)
	a := sharedNetboot(t)
	out := filepath.Dir(a.Kernel)
	t.Logf("vmlinuz %s, initrd %s, total %s; kernel %s, %d modules; builtin %v, too big %v, missing %v",
		human.Bytes(a.KernelSize), human.Bytes(a.InitrdSize), human.Bytes(a.KernelSize+a.InitrdSize), a.KernelVersion, a.Modules,
		a.ModuleReport.Builtin, a.ModuleReport.TooBig, a.ModuleReport.Missing)

	if a.Kernel != filepath.Join(out, KernelName) || a.Initrd != filepath.Join(out, InitrdName) || a.Manifest != filepath.Join(out, SumsName) {
		t.Errorf("artifact paths: %+v", a)
	}
	names := dirNames(t, out)
	if want := []string{SumsName, InitrdName, KernelName}; !slices.Equal(names, want) {
		t.Errorf("%s holds %v, want %v (no temporary files)", out, names, want)
	}
	if a.InitrdSize > maxInitrd {
		t.Errorf("initrd is %s, over the 40 MiB budget", human.Bytes(a.InitrdSize))
	}
	if a.Modules < 50 {
		t.Errorf("only %d modules", a.Modules)
	}
	// sha256sum, the reference, agrees with SHA256SUMS.
	sums := run(t, "sh", "-c", "cd "+out+" && sha256sum -c "+SumsName)
	if !strings.Contains(sums, KernelName+": OK") || !strings.Contains(sums, InitrdName+": OK") {
		t.Errorf("sha256sum -c:\n%s", sums)
	}
	k, err := FetchKernel(ctx, testCache(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !sameFile(t, a.Kernel, k.Vmlinuz) {
		t.Error("the vmlinuz is not the Debian kernel's")
	}
	if fi := stat(t, a.Initrd); fi.Size() != a.InitrdSize {
		t.Errorf("InitrdSize %d, file %d", a.InitrdSize, fi.Size())
	}

	initrd := readFile(t, a.Initrd)
	es := readInitramfs(t, initrd)
	checkLive(t, es, KindNetboot, a.KernelVersion, bins)
	ents := byName(es)
	if _, ok := ents["bin/bty-web"]; ok {
		t.Error("the netboot initramfs holds bty-web")
	}
	for _, e := range es {
		if strconv.Itoa(int(e.mtime)) != testEpoch {
			t.Errorf("%s: mtime %d, want SOURCE_DATE_EPOCH %s", e.name, e.mtime, testEpoch)
			break
		}
	}

	// The same inputs give the same bytes, here through the CLI, which
	// prints each file with its size and sha256 and logs its steps.
	out2 := filepath.Join(t.TempDir(), "live")
	code, stdout, stderr := runCLI(t, "netboot", "--out", out2, "--cache", testCache(), "--bin-dir", bins)
	if code != 0 {
		t.Fatalf("bty-media netboot: exit %d:\n%s", code, stderr)
	}
	t.Logf("bty-media netboot:\n%s", stdout)
	if !bytes.Equal(initrd, readFile(t, filepath.Join(out2, InitrdName))) {
		t.Error("two builds from the same inputs gave different initrds")
	}
	if !bytes.Equal(readFile(t, a.Manifest), readFile(t, filepath.Join(out2, SumsName))) {
		t.Error("two builds from the same inputs gave different SHA256SUMS")
	}
	for _, f := range []struct{ name, sum string }{{KernelName, a.KernelSHA256}, {InitrdName, a.InitrdSHA256}} {
		line := regexp.MustCompile(regexp.QuoteMeta(filepath.Join(out2, f.name)) + `\t[0-9.]+ [KM]iB\tsha256:` + f.sum + "\n")
		if !line.MatchString(stdout) {
			t.Errorf("stdout lacks %s with its size and sha256 %s", f.name, f.sum)
		}
	}
	for _, want := range []string{"kernel " + a.KernelVersion, fmt.Sprintf("%d modules", a.Modules), "BTY_BOOT_DIR", "built into the kernel (nothing to add): atkbd", "left out, too big: ice"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	for _, step := range []string{"kernel done", "module index done", "initramfs (netboot) done", "took="} {
		if !strings.Contains(stderr, step) {
			t.Errorf("stderr progress lacks %q:\n%s", step, stderr)
		}
	}
}

// checkLive checks the layout the live env depends on.
func checkLive(t *testing.T, es []cpioEntry, kind Kind, kver, bins string) {
	t.Helper()
	ents := byName(es)
	link := func(name, target string) {
		t.Helper()
		e, ok := ents[name]
		if !ok || e.mode != 0o120777 || string(e.data) != target {
			t.Errorf("%s: mode %o -> %q, want a symlink to %q", name, e.mode, e.data, target)
		}
	}
	link("init", "bin/bty")
	link("sbin/modprobe", "../bin/bty")
	for _, n := range []string{"bty", "bty-tui"} {
		e := ents["bin/"+n]
		if e.mode != 0o100755 || !bytes.Equal(e.data, readFile(t, filepath.Join(bins, n))) {
			t.Errorf("bin/%s: mode %o, %d bytes: not the input binary with mode 0755", n, e.mode, len(e.data))
		}
	}
	if e := ents["bin/busybox"]; e.mode != 0o100755 || !bytes.HasPrefix(e.data, []byte("\x7fELF")) || len(e.data) < 500<<10 {
		t.Errorf("bin/busybox: mode %o, %d bytes", e.mode, len(e.data))
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "mnt", "root", "var/lib/bty/images", "var/log", "etc/bty", "usr/lib"} {
		if e, ok := ents[d]; !ok || e.mode&0o170000 != 0o040000 {
			t.Errorf("%s: not a directory (mode %o)", d, e.mode)
		}
	}
	if e := ents["tmp"]; e.mode != 0o041777 {
		t.Errorf("tmp: mode %o, want 41777", e.mode)
	}
	for _, e := range es {
		if strings.HasPrefix(e.name, "bin/") && e.name != "bin/bty" && e.name != "bin/bty-tui" && e.name != "bin/busybox" && e.name != "bin/bty-web" {
			t.Errorf("unexpected %s (busybox installs its applet links itself)", e.name)
		}
	}
	if got := string(ents["etc/passwd"].data); got != "root:x:0:0:root:/root:/bin/sh\n" {
		t.Errorf("etc/passwd = %q", got)
	}
	if got := string(ents["etc/group"].data); got != "root:x:0:\n" {
		t.Errorf("etc/group = %q", got)
	}
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		if !bytes.Equal(ents["etc/ssl/certs/ca-certificates.crt"].data, readFile(t, "/etc/ssl/certs/ca-certificates.crt")) {
			t.Error("etc/ssl/certs/ca-certificates.crt is not the host's")
		}
	}
	var info LiveInfo
	if err := json.Unmarshal(ents["etc/bty/live.json"].data, &info); err != nil {
		t.Fatalf("etc/bty/live.json: %v", err)
	}
	want := LiveInfo{Kind: kind, BtyVersion: version.String(), Kernel: kver, Built: "2023-11-14T22:13:20Z"}
	if info != want {
		t.Errorf("live.json = %+v, want %+v", info, want)
	}

	// The module index, read back as the live env reads it.
	moddir := "lib/modules/" + kver + "/"
	idxPath := filepath.Join(t.TempDir(), kmod.IndexFile)
	if err := os.WriteFile(idxPath, ents[moddir+kmod.IndexFile].data, 0o644); err != nil {
		t.Fatal(err)
	}
	ix, err := kmod.ReadIndex(idxPath)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Kernel != kver {
		t.Errorf("index kernel %q, want %q", ix.Kernel, kver)
	}
	for _, m := range coreModules {
		if ix.Modules[m] == nil {
			t.Errorf("core module %s is not in the initramfs", m)
		}
	}
	for _, m := range []string{"atkbd", "ice"} { // built in; too big
		if ix.Modules[m] != nil {
			t.Errorf("%s is in the initramfs", m)
		}
	}
	for name, m := range ix.Modules {
		e, ok := ents[moddir+m.Path]
		if !ok || !bytes.HasPrefix(e.data, []byte("\x7fELF")) || e.mode != 0o100644 {
			t.Errorf("module %s: %s missing or not an ELF file", name, moddir+m.Path)
		}
		for _, d := range m.Depends {
			if ix.Modules[d] == nil {
				t.Errorf("module %s depends on %s, which is not in the initramfs", name, d)
			}
		}
	}
	names := make([]string, 0, len(ix.Modules))
	for n := range ix.Modules {
		names = append(names, n)
	}
	if _, err := ix.LoadOrder(names...); err != nil {
		t.Errorf("the initramfs's modules cannot be ordered: %v", err)
	}
	if got := ix.Resolve("virtio:d00000001v00001AF4"); !slices.Contains(got, "virtio_net") {
		t.Errorf("the index resolves a virtio NIC to %v", got)
	}
	for _, f := range []string{"modules.builtin", "modules.order"} {
		if len(ents[moddir+f].data) == 0 {
			t.Errorf("%s%s is missing or empty", moddir, f)
		}
	}
}

func TestUSBImage(t *testing.T) {
	mediaTest(t, "systemd-boot-efi_*", "syslinux_*", "syslinux-common_*")
	needTools(t, "sgdisk", "mtype", "mcopy", "mkfs.vfat", "fsck.vfat", "mkfs.exfat", "fsck.exfat", "exfatlabel")
	t.Setenv("SOURCE_DATE_EPOCH", testEpoch)
	ctx := context.Background()
	bins := testBins(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "bty-usb.img")
	if err := USB(ctx, USBOptions{Out: out, CacheDir: testCache(), BinDir: bins, ImagesSize: 64 * mib, Log: testLog(t)}); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"bty-usb.img"}) {
		t.Errorf("%s holds %v: temporary files left", dir, names)
	}
	p1, p2 := sgdiskPart(t, out, 1), sgdiskPart(t, out, 2)
	if p1.name != LiveLabel || p1.typeGUID != "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" || p1.start != mib || p1.size%mib != 0 {
		t.Errorf("partition 1: %+v, want BTY_LIVE, EFI system, at 1 MiB", p1)
	}
	if p2.name != ImagesLabel || p2.typeGUID != "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" || p2.start != p1.start+p1.size || p2.size != 64*mib {
		t.Errorf("partition 2: %+v, want BTY_IMAGES, Microsoft basic data, 64 MiB right after partition 1", p2)
	}
	if fi := stat(t, out); fi.Size() != p2.start+p2.size+mib {
		t.Errorf("image is %d bytes, want partitions + 1 MiB for the backup GPT (%d)", fi.Size(), p2.start+p2.size+mib)
	}

	esp := checkESP(t, out, p1, USBCmdline)
	es := readInitramfs(t, readFile(t, filepath.Join(esp, "initrd")))
	k, err := FetchKernel(ctx, testCache(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	checkLive(t, es, KindUSB, k.Version, bins)
	if !sameFile(t, filepath.Join(esp, "vmlinuz"), k.Vmlinuz) {
		t.Error("the ESP's vmlinuz is not the Debian kernel's")
	}

	images := extract(t, out, p2.start, p2.size)
	run(t, "fsck.exfat", "-n", images)
	if got := run(t, "exfatlabel", images); !strings.Contains(got, "label: "+ImagesLabel) {
		t.Errorf("exfatlabel: %s", got)
	}

	// An existing --out is refused without Force, replaced with it.
	before := stat(t, out).ModTime()
	err = USB(ctx, USBOptions{Out: out, CacheDir: testCache(), BinDir: bins, ImagesSize: 64 * mib})
	if exitcode.Code(err) != exitcode.Usage || !strings.Contains(fmt.Sprint(err), "--force") {
		t.Errorf("USB over an existing image: %v (code %d), want a usage error naming --force", err, exitcode.Code(err))
	}
	if !stat(t, out).ModTime().Equal(before) {
		t.Error("the refused build touched the existing image")
	}
}

// checkESP checks the ESP at p in img with mtools and fsck.vfat, and
// returns a directory holding its bty/ files.
func checkESP(t *testing.T, img string, p gptPart, cmdline string) string {
	t.Helper()
	at := fmt.Sprintf("%s@@%d", img, p.start)
	if got := run(t, "mtype", "-i", at, "::/loader/entries/bty.conf"); !strings.Contains(got, "options "+cmdline+"\n") ||
		!strings.Contains(got, "linux   /bty/vmlinuz\n") || !strings.Contains(got, "initrd  /bty/initrd\n") {
		t.Errorf("loader/entries/bty.conf:\n%s\nwant options %s", got, cmdline)
	}
	if got := run(t, "mtype", "-i", at, "::/loader/loader.conf"); !strings.HasPrefix(got, "default bty.conf\ntimeout 0\n") {
		t.Errorf("loader/loader.conf:\n%s", got)
	}
	if got := run(t, "mdir", "-i", at, "::/loader/entries"); !strings.Contains(got, "bty.conf") {
		t.Errorf("mdir loader/entries:\n%s", got)
	}
	dir := t.TempDir()
	for _, f := range []string{"EFI/BOOT/BOOTX64.EFI", "bty/vmlinuz", "bty/initrd"} {
		run(t, "mcopy", "-i", at, "::/"+f, filepath.Join(dir, filepath.Base(f)))
	}
	boot, err := FetchDebFile(context.Background(), testCache(), "systemd-boot-efi", "usr/lib/systemd/boot/efi/systemd-bootx64.efi", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !sameFile(t, filepath.Join(dir, "BOOTX64.EFI"), boot) {
		t.Error("EFI/BOOT/BOOTX64.EFI is not systemd-boot")
	}
	part := extract(t, img, p.start, p.size)
	run(t, "fsck.vfat", "-n", part)
	// The FAT32 boot sector: file system type at 82, volume label at 71.
	bs := readFile(t, part)[:512]
	if string(bs[82:90]) != "FAT32   " || string(bs[71:82]) != fmt.Sprintf("%-11s", LiveLabel) {
		t.Errorf("the ESP is not FAT32 labelled %s: type %q label %q", LiveLabel, bs[82:90], bs[71:82])
	}
	checkBIOSBoot(t, img, at, bs, cmdline)
	return dir
}

// checkBIOSBoot checks the legacy BIOS boot path of a disk image whose
// ESP is at (mtools' IMG@@OFFSET) with boot sector bs: SYSLINUX's boot
// sector and files on the ESP, its config booting the same kernel,
// initrd and command line as systemd-boot, the ESP marked legacy BIOS
// bootable, and SYSLINUX's GPT MBR code in the disk's first 440 bytes.
// (TestBootUSBImageBIOS boots it.)
func checkBIOSBoot(t *testing.T, img, at string, bs []byte, cmdline string) {
	t.Helper()
	if string(bs[3:11]) != "SYSLINUX" {
		t.Errorf("the ESP's boot sector is not SYSLINUX's: OEM name %q", bs[3:11])
	}
	cfg := run(t, "mtype", "-i", at, "::/syslinux/syslinux.cfg")
	for _, want := range []string{"\nDEFAULT bty\n", "\n  LINUX /bty/vmlinuz\n", "\n  INITRD /bty/initrd\n", "\n  APPEND " + cmdline + "\n", "SERIAL 0 115200"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("syslinux/syslinux.cfg lacks %q:\n%s", want, cfg)
		}
	}
	if got := run(t, "mdir", "-a", "-i", at, "::/syslinux"); !strings.Contains(got, "ldlinux  sys") || !strings.Contains(got, "ldlinux  c32") {
		t.Errorf("SYSLINUX's ldlinux.sys and ldlinux.c32 are not in /syslinux:\n%s", got)
	}
	if got := run(t, "sgdisk", "-A", "1:show", img); !strings.Contains(got, "legacy BIOS bootable") {
		t.Errorf("the ESP is not marked legacy BIOS bootable: %q", got)
	}
	code, err := BIOSBootCode(context.Background(), testCache(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if mbr := readFile(t, img)[:512]; !bytes.Equal(mbr[:len(code)], code) || mbr[450] != 0xee || mbr[510] != 0x55 || mbr[511] != 0xaa {
		t.Error("the disk's MBR is not SYSLINUX's gptmbr.bin code in a protective MBR")
	}
}

var reDebugfsLs = regexp.MustCompile(`(?m)^\s*\d+\s+\d+\s+\(\d+\)\s+\d+\s+\d+\s+(\d+)\s+\S+\s+\S+\s+(\S+)\s*$`)

func TestServerImage(t *testing.T) {
	mediaTest(t, "systemd-boot-efi_*", "ipxe_*", "syslinux_*", "syslinux-common_*")
	needTools(t, "sgdisk", "mtype", "mcopy", "mkfs.vfat", "fsck.vfat", "mkfs.ext4", "e2fsck", "debugfs")
	t.Setenv("SOURCE_DATE_EPOCH", testEpoch)
	ctx := context.Background()
	bins := testBins(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "bty-server.img")
	if err := Server(ctx, ServerOptions{Out: out, CacheDir: testCache(), BinDir: bins, StateSize: 256 * mib, Log: testLog(t)}); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"bty-server.img"}) {
		t.Errorf("%s holds %v: temporary files left", dir, names)
	}
	p1, p2 := sgdiskPart(t, out, 1), sgdiskPart(t, out, 2)
	if p1.name != LiveLabel || p1.typeGUID != "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" || p1.start != mib {
		t.Errorf("partition 1: %+v, want BTY_LIVE, EFI system, at 1 MiB", p1)
	}
	if p2.name != StateLabel || p2.typeGUID != "0FC63DAF-8483-4772-8E79-3D69D8477DE4" || p2.start != p1.start+p1.size || p2.size != 256*mib {
		t.Errorf("partition 2: %+v, want BTY_STATE, Linux filesystem, 256 MiB after partition 1", p2)
	}

	esp := checkESP(t, out, p1, ServerCmdline)
	k, err := FetchKernel(ctx, testCache(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	es := readInitramfs(t, readFile(t, filepath.Join(esp, "initrd")))
	checkLive(t, es, KindServer, k.Version, bins)
	ents := byName(es)
	if e := ents["bin/bty-web"]; e.mode != 0o100755 || !bytes.Equal(e.data, readFile(t, filepath.Join(bins, "bty-web"))) {
		t.Error("the server initramfs lacks bin/bty-web")
	}
	for _, f := range ipxeFiles {
		src, err := FetchDebFile(ctx, testCache(), "ipxe", "usr/lib/ipxe/"+f, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ents["usr/lib/ipxe/"+f].data, readFile(t, src)) {
			t.Errorf("usr/lib/ipxe/%s is not Debian's", f)
		}
	}

	state := extract(t, out, p2.start, p2.size)
	run(t, "e2fsck", "-fn", state)
	if got := run(t, "debugfs", "-R", "stats", state); !regexp.MustCompile(`Filesystem volume name:\s+` + StateLabel).MatchString(got) {
		t.Errorf("the state filesystem is not labelled %s", StateLabel)
	}
	if got := run(t, "debugfs", "-R", "ls -l /", state); !regexp.MustCompile(`40755 .* images\s*\n`).MatchString(got) {
		t.Errorf("no images/ directory on the state partition:\n%s", got)
	}
	ls := run(t, "debugfs", "-R", "ls -l /boot", state)
	sizes := map[string]int64{}
	for _, m := range reDebugfsLs.FindAllStringSubmatch(ls, -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		sizes[m[2]] = n
	}
	// The netboot pair on the state partition is the one Netboot builds
	// from the same inputs, byte for byte.
	nb := sharedNetboot(t)
	for name, want := range map[string]string{KernelName: nb.Kernel, InitrdName: nb.Initrd} {
		if sizes[name] != stat(t, want).Size() {
			t.Errorf("debugfs ls -l /boot: %s is %d bytes, want %d:\n%s", name, sizes[name], stat(t, want).Size(), ls)
		}
		got := filepath.Join(t.TempDir(), name)
		run(t, "debugfs", "-R", "dump /boot/"+name+" "+got, state)
		if !sameFile(t, got, want) {
			t.Errorf("/boot/%s on the state partition differs from the netboot build", name)
		}
	}
}

func TestFetchDebFileMissing(t *testing.T) {
	mediaTest(t)
	_, err := FetchDebFile(context.Background(), testCache(), "busybox-static", "bin/no-such-file", nil)
	if err == nil || !strings.Contains(err.Error(), "has no bin/no-such-file") {
		t.Errorf("FetchDebFile of a missing path: %v", err)
	}
}

func TestFetchKernelDeb(t *testing.T) {
	mediaTest(t)
	ctx := context.Background()
	k, err := FetchKernel(ctx, testCache(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// --kernel-deb with the very package apt-get fetched: its unpacked tree.
	debs, _ := filepath.Glob(filepath.Join(testCache(), debsDir, "linux-image-"+k.Version+"_*.deb"))
	if len(debs) == 0 {
		t.Fatalf("no linux-image-%s deb in %s", k.Version, filepath.Join(testCache(), debsDir))
	}
	k2, err := FetchKernel(ctx, testCache(), debs[0], testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if *k2 != *k {
		t.Errorf("--kernel-deb of the cached package: %+v, want %+v", k2, k)
	}
	// Any other file: unpacked into the cache under its name and hash.
	cache := t.TempDir()
	own := filepath.Join(t.TempDir(), "my-kernel.deb")
	if err := os.Link(debs[0], own); err != nil { // another filesystem: copy
		if err := os.WriteFile(own, readFile(t, debs[0]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	k3, err := FetchKernel(ctx, cache, own, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if k3.Version != k.Version || !sameFile(t, k3.Vmlinuz, k.Vmlinuz) || !strings.HasPrefix(k3.ModDir, filepath.Join(cache, unpackedDir, "my-kernel-")) {
		t.Errorf("--kernel-deb my-kernel.deb: %+v", k3)
	}
	if m, _ := filepath.Glob(filepath.Join(cache, unpackedDir, ".unpack-*")); len(m) != 0 {
		t.Errorf("unpacking left %v", m)
	}
	// Not a kernel package: a clear error.
	bb, _ := filepath.Glob(filepath.Join(testCache(), debsDir, "busybox-static_*.deb"))
	if len(bb) == 0 {
		t.Fatal("no busybox-static deb cached")
	}
	if _, err := FetchKernel(ctx, testCache(), bb[0], nil); err == nil || !strings.Contains(err.Error(), "linux-image") {
		t.Errorf("FetchKernel(busybox deb): %v, want an error asking for a linux-image package", err)
	}
	if _, err := FetchKernel(ctx, testCache(), "/nonexistent/linux.deb", nil); exitcode.Code(err) != exitcode.Usage {
		t.Errorf("FetchKernel(missing deb): %v, want a usage error", err)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func stat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	return bytes.Equal(readFile(t, a), readFile(t, b))
}
