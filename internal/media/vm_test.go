package media

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/buildtest"
)

// VM tests (BTY_VMTEST=1): boot what bty-media builds with Debian's
// kernel in QEMU (TCG; BTY_QEMU_ACCEL=kvm on hosts where KVM works).

func vmTest(t *testing.T, tools ...string) {
	t.Helper()
	if os.Getenv("BTY_VMTEST") != "1" {
		t.Skip("VM test: boots the live env in QEMU (about a minute); set BTY_VMTEST=1")
	}
	for _, tool := range append([]string{"qemu-system-x86_64"}, tools...) {
		if strings.HasPrefix(tool, "/") {
			if _, err := os.Stat(tool); err != nil {
				t.Fatalf("BTY_VMTEST=1 but %s is missing: scripts/install-deps.sh vm installs it", tool)
			}
		} else if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("BTY_VMTEST=1 but %s is missing: scripts/install-deps.sh vm installs it", tool)
		}
	}
}

func qemuAccel() string {
	if a := os.Getenv("BTY_QEMU_ACCEL"); a != "" {
		return a
	}
	return "tcg"
}

// serialLog collects QEMU's serial output and says when a line appears.
type serialLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *serialLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// runQEMU runs QEMU until its serial output contains one of done (the
// returned string) or it exits, or timeout passes.
func runQEMU(t *testing.T, timeout time.Duration, args []string, done ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", append([]string{"-accel", qemuAccel(), "-m", "1024",
		"-nographic", "-no-reboot", "-serial", "stdio", "-monitor", "none"}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log := &serialLog{}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			log.mu.Lock()
			log.buf.WriteString(line + "\n")
			log.mu.Unlock()
			for _, d := range done {
				if strings.Contains(line, d) {
					select {
					case found <- d:
					default:
					}
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	t0 := time.Now()
	var got string
	select {
	case got = <-found:
		t.Logf("%q after %s", got, time.Since(t0).Round(time.Second))
	case err := <-exited:
		t.Logf("QEMU exited after %s: %v", time.Since(t0).Round(time.Second), err)
	case <-ctx.Done():
		t.Logf("timed out after %s", timeout)
	}
	// Let a powering-off guest finish, then stop QEMU.
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
	return got, log.String()
}

// TestBootNetboot boots Debian's kernel with the netboot initrd plus an
// appended archive (also from WriteInitramfs) whose /bty-test-init,
// testdata/bootcheck, checks the unpacked layout from inside, loads the
// modules through the index (finit_module, as the live env does) until
// the virtio NIC and disk appear, and runs busybox and bty.
func TestBootNetboot(t *testing.T) {
	vmTest(t)
	t.Setenv("SOURCE_DATE_EPOCH", testEpoch)
	dir := t.TempDir()
	a := sharedNetboot(t)
	check := filepath.Join(t.TempDir(), "bootcheck")
	if err := buildtest.Build(check, "./testdata/bootcheck", buildtest.Options{Env: []string{"GOOS=linux", "GOARCH=amd64"}}); err != nil {
		t.Fatalf("building the test init: %v", err)
	}
	var extra bytes.Buffer
	if err := WriteInitramfs(&extra, []File{{Path: "bty-test-init", Mode: 0o755, Source: check}}); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "combined.initrd")
	if err := os.WriteFile(initrd, append(readFile(t, a.Initrd), extra.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := sparseFile(disk, 64*mib); err != nil {
		t.Fatal(err)
	}
	got, serial := runQEMU(t, 4*time.Minute, []string{
		"-kernel", a.Kernel, "-initrd", initrd,
		"-append", "console=ttyS0,115200 rdinit=/bty-test-init panic=-1 loglevel=4",
		"-nic", "user,model=virtio-net-pci",
		"-drive", "file=" + disk + ",format=raw,if=virtio",
	}, "BTY-INITRAMFS-OK", "BTY-INITRAMFS-FAIL", "Kernel panic")
	if got != "BTY-INITRAMFS-OK" {
		t.Fatalf("the live initramfs did not pass its boot check (%q); serial console:\n%s", got, serial)
	}
	for _, line := range strings.Split(serial, "\n") {
		if i := strings.Index(line, "BTY-"); i >= 0 {
			t.Log(line[i:])
		}
	}
	for _, want := range []string{"BTY-RESOLVED virtio:d00000001v00001AF4 -> [virtio_net]", "BTY-MODULES-LOADED", "BTY-BTY-VERSION bty "} {
		if !strings.Contains(serial, want) {
			t.Errorf("serial console lacks %q:\n%s", want, serial)
		}
	}
	if strings.Contains(serial, "Initramfs unpacking failed") {
		t.Errorf("the kernel could not unpack the initramfs:\n%s", serial)
	}
}

// TestBootUSBImage boots the USB image the way a PC boots a stick, once
// per firmware: UEFI (OVMF) takes the removable-media loader
// EFI/BOOT/BOOTX64.EFI (systemd-boot) and its bty entry; legacy BIOS
// (SeaBIOS, QEMU's default) runs the MBR's GPT boot code, which loads
// SYSLINUX from the ESP (marked legacy BIOS bootable) and its bty label.
// Both must reach the usb initramfs's /init with the entry's command line.
func TestBootUSBImage(t *testing.T) {
	code, vars := "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	vmTest(t, code, vars)
	dir := t.TempDir()
	img := filepath.Join(dir, "bty-usb.img")
	if err := USB(context.Background(), USBOptions{Out: img, CacheDir: testCache(), BinDir: testBins(t), ImagesSize: 32 * mib, Log: testLog(t)}); err != nil {
		t.Fatal(err)
	}
	myVars := filepath.Join(dir, "vars.fd")
	if err := os.WriteFile(myVars, readFile(t, vars), 0o644); err != nil {
		t.Fatal(err)
	}
	stick := []string{"-device", "qemu-xhci", "-drive", "if=none,id=stick,format=raw,readonly=on,file=" + img,
		"-device", "usb-storage,drive=stick,removable=on,bootindex=1"}
	for _, fw := range []struct {
		name, loader string
		args         []string
	}{
		{"uefi", "BdsDxe: starting", []string{
			"-drive", "if=pflash,format=raw,readonly=on,file=" + code,
			"-drive", "if=pflash,format=raw,file=" + myVars}},
		{"bios", "SYSLINUX 6", nil},
	} {
		t.Run(fw.name, func(t *testing.T) {
			got, serial := runQEMU(t, 4*time.Minute, append(append([]string{"-nic", "none"}, fw.args...), stick...),
				"Run /init as init process", "Kernel panic", "Unable to mount root", "Boot failed", "No bootable device")
			if got != "Run /init as init process" {
				t.Fatalf("the USB image did not boot into its initramfs (%q); serial console:\n%s", got, serial)
			}
			if !strings.Contains(serial, fw.loader) {
				t.Errorf("no %q on the serial console: not booted the %s way?\n%s", fw.loader, fw.name, serial)
			}
			if !strings.Contains(serial, "Kernel command line: ") || !strings.Contains(serial, USBCmdline) {
				t.Errorf("the kernel did not get the entry's command line %q:\n%s", USBCmdline, serial)
			}
			if strings.Contains(serial, "Initramfs unpacking failed") {
				t.Errorf("the kernel could not unpack the initramfs:\n%s", serial)
			}
		})
	}
}
