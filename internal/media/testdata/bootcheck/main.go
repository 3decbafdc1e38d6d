// Command bootcheck is the /init of the QEMU boot test of the live
// initramfs (internal/media's TestBootNetboot): appended to the real
// netboot initrd and started with rdinit=/bty-test-init, it checks from
// inside the booted kernel that the archive unpacked with the layout the
// live env needs and that its modules load, prints BTY-INITRAMFS-OK (or
// BTY-INITRAMFS-FAIL with the reason) and powers off.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/kmod"
)

func main() {
	if err := check(); err != nil {
		fmt.Printf("\nBTY-INITRAMFS-FAIL %v\n", err)
	} else {
		fmt.Printf("\nBTY-INITRAMFS-OK\n")
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func check() error {
	for _, m := range []struct{ src, dst, fs string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mounting %s: %v", m.dst, err)
		}
	}
	for link, want := range map[string]string{"/init": "bin/bty", "/sbin/modprobe": "../bin/bty"} {
		if got, err := os.Readlink(link); err != nil || got != want {
			return fmt.Errorf("%s -> %q (%v), want %q", link, got, err, want)
		}
	}
	var info struct{ Kind, Kernel string }
	b, err := os.ReadFile("/etc/bty/live.json")
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return err
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	if info.Kernel != release || info.Kind != "netboot" {
		return fmt.Errorf("live.json %+v, running kernel %s", info, release)
	}
	moddir := filepath.Join("/lib/modules", release)
	ix, err := kmod.ReadIndex(filepath.Join(moddir, kmod.IndexFile))
	if err != nil {
		return err
	}

	// The PCI NIC's modalias resolves (virtio_pci), then the virtio
	// device it exposes resolves to virtio_net: the live env's path.
	order, err := ix.LoadOrder("virtio_pci")
	if err != nil {
		return err
	}
	if err := load(ix, moddir, order); err != nil {
		return err
	}
	var virtio []string
	if err := waitFor(10*time.Second, func() bool {
		virtio, _ = filepath.Glob("/sys/bus/virtio/devices/*/modalias")
		return len(virtio) >= 2
	}); err != nil {
		return fmt.Errorf("virtio devices after loading virtio_pci: %v", virtio)
	}
	var wanted []string
	for _, p := range virtio {
		alias, _ := os.ReadFile(p)
		mods := ix.Resolve(strings.TrimSpace(string(alias)))
		if len(mods) == 0 {
			return fmt.Errorf("no module for %s (%s)", p, alias)
		}
		fmt.Printf("BTY-RESOLVED %s -> %v\n", strings.TrimSpace(string(alias)), mods)
		wanted = append(wanted, mods...)
	}
	wanted = append(wanted, "ext4", "vfat", "exfat", "btrfs", "xfs", "nvme", "ahci", "e1000e", "usb_storage", "uas", "xhci_pci", "nls_cp437", "nls_utf8", "loop")
	order, err = ix.LoadOrder(wanted...)
	if err != nil {
		return err
	}
	if err := load(ix, moddir, order); err != nil {
		return err
	}
	fmt.Printf("BTY-MODULES-LOADED %d\n", len(order))

	if err := waitFor(10*time.Second, func() bool {
		_, errNet := os.Stat("/sys/class/net/eth0")
		_, errBlk := os.Stat("/sys/block/vda")
		return errNet == nil && errBlk == nil
	}); err != nil {
		return errors.New("no eth0 or no vda after loading their drivers")
	}
	fsl, _ := os.ReadFile("/proc/filesystems")
	for _, f := range []string{"ext4", "vfat", "exfat", "btrfs", "xfs"} {
		if !strings.Contains(string(fsl), "\t"+f+"\n") {
			return fmt.Errorf("filesystem %s not registered:\n%s", f, fsl)
		}
	}
	out, err := exec.Command("/bin/busybox", "echo", "busybox-runs").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "busybox-runs" {
		return fmt.Errorf("busybox: %v %q", err, out)
	}
	out, err = exec.Command("/bin/bty", "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "bty ") {
		return fmt.Errorf("bty --version: %v %q", err, out)
	}
	fmt.Printf("BTY-BTY-VERSION %s", out)
	return nil
}

// load loads modules in order with finit_module, as the live env does.
// ENODEV is no failure: a driver for absent hardware or CPU features
// (crc32c_intel on a CPU without SSE4.2, QEMU's TCG) says so; whether the
// ones that matter loaded shows in the devices and filesystems checked
// afterwards.
func load(ix *kmod.Index, moddir string, order []string) error {
	for _, name := range order {
		f, err := os.Open(filepath.Join(moddir, ix.Modules[name].Path))
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if errors.Is(err, unix.ENODEV) {
			fmt.Printf("BTY-MODULE-NODEV %s\n", name)
			continue
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading %s: %v", name, err)
		}
	}
	return nil
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
