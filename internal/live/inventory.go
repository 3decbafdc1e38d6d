package live

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/fleet"
)

// collectInventory reads the machine's hardware from the sysfs and
// procfs under root ("/" on the machine; a fake tree in tests) for the
// inventory report (POST /pxe/{mac}/inventory; docs/reference.md,
// "Inventory"). It never fails: what it cannot read it leaves out. The
// result is within the bounds bty-web takes (fleet.Inventory.Check):
// lists are cut at their maximum, text is made one printable line and
// cut to its limit.
func collectInventory(root string) fleet.Inventory {
	if root == "" {
		root = "/"
	}
	inv := fleet.Inventory{Firmware: "bios"}
	if isDir(filepath.Join(root, "sys/firmware/efi")) {
		inv.Firmware = "uefi"
	}
	inv.CPUModel, inv.CPUs = cpuInfo(filepath.Join(root, "proc/cpuinfo"))
	inv.MemoryBytes = memTotal(filepath.Join(root, "proc/meminfo"))
	inv.NICs = nics(filepath.Join(root, "sys/class/net"))
	inv.Disks = disks(filepath.Join(root, "sys/block"))
	inv.PCI = pciDevices(filepath.Join(root, "sys/bus/pci/devices"))
	return inv
}

// cpuInfo is /proc/cpuinfo's first model name (x86's "model name";
// "Model" or "cpu model" on some other architectures) and the number
// of "processor" entries (logical CPUs).
func cpuInfo(path string) (model string, n int) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name", "Model", "cpu model":
			if model == "" {
				model = cleanText(v, 256)
			}
		}
	}
	return model, n
}

// memTotal is /proc/meminfo's MemTotal in bytes (0 when unknown).
func memTotal(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil || kb < 0 {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// nics are the physical Ethernet interfaces of /sys/class/net: lo,
// virtual ones (bridges, veths, tunnels: no device link) and
// non-Ethernet ones (type other than 1, ARPHRD_ETHER) are left out.
func nics(dir string) []fleet.NIC {
	var out []fleet.NIC
	for _, name := range dirNames(dir) {
		p := filepath.Join(dir, name)
		if name == "lo" || !exists(filepath.Join(p, "device")) {
			continue
		}
		if t := readTrim(filepath.Join(p, "type")); t != "" && t != "1" {
			continue
		}
		mac, err := fleet.ParseMAC(readTrim(filepath.Join(p, "address")))
		if err != nil {
			continue
		}
		n := fleet.NIC{MAC: mac, Name: cleanText(name, 64), Link: readTrim(filepath.Join(p, "carrier")) == "1"}
		// speed is -1 (or unreadable, EINVAL) without a link.
		if s, err := strconv.Atoi(readTrim(filepath.Join(p, "speed"))); err == nil && s > 0 && s <= 10_000_000 {
			n.SpeedMbps = s
		}
		out = append(out, n)
		if len(out) == fleet.MaxInventoryNICs {
			break
		}
	}
	return out
}

// disks are the disks of /sys/block a flash could target: those with a
// device (no loop, ram, zram, dm or md devices), with their size
// (size, in 512-byte sectors), model, serial and transport.
func disks(dir string) []fleet.InventoryDisk {
	var out []fleet.InventoryDisk
	for _, name := range dirNames(dir) {
		p := filepath.Join(dir, name)
		dev := filepath.Join(p, "device")
		if !exists(dev) || strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "sr") {
			continue
		}
		d := fleet.InventoryDisk{Name: cleanText(name, fleet.MaxInventoryText)}
		if sectors, err := strconv.ParseInt(readTrim(filepath.Join(p, "size")), 10, 64); err == nil && sectors > 0 && sectors < 1<<54 {
			d.SizeBytes = sectors * 512
		}
		d.Model = cleanText(firstOf(readTrim(filepath.Join(dev, "model")), readTrim(filepath.Join(dev, "name"))), fleet.MaxInventoryText)
		d.Serial = cleanText(firstOf(readTrim(filepath.Join(p, "serial")), readTrim(filepath.Join(dev, "serial")),
			readTrim(filepath.Join(p, "wwid")), readTrim(filepath.Join(dev, "wwid"))), fleet.MaxInventoryText)
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			real = p
		}
		d.Transport = disk.Transport(name, real)
		out = append(out, d)
		if len(out) == fleet.MaxInventoryDisks {
			break
		}
	}
	return out
}

// pciDevices are /sys/bus/pci/devices' functions with their IDs as
// sysfs writes them; the ones whose IDs are not in that form are left
// out.
func pciDevices(dir string) []fleet.PCIDevice {
	var out []fleet.PCIDevice
	for _, addr := range dirNames(dir) {
		p := filepath.Join(dir, addr)
		d := fleet.PCIDevice{Address: cleanText(addr, 32), Vendor: readTrim(filepath.Join(p, "vendor")),
			Device: readTrim(filepath.Join(p, "device")), Class: readTrim(filepath.Join(p, "class"))}
		d.Kind = fleet.PCIKind(d.Class)
		if (fleet.Inventory{PCI: []fleet.PCIDevice{d}}).Check() != nil {
			continue
		}
		out = append(out, d)
		if len(out) == fleet.MaxInventoryPCI {
			break
		}
	}
	return out
}

// cleanText is s as one line of printable text, spaces trimmed, cut to
// at most n bytes on a rune boundary.
func cleanText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return strings.TrimSpace(s)
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

// dirNames are dir's entries by name (nil when it cannot be read).
func dirNames(dir string) []string {
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(es))
	for _, e := range es {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

func isDir(path string) bool { fi, err := os.Stat(path); return err == nil && fi.IsDir() }

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

const (
	// inventoryTries and inventoryTimeout bound the inventory report: it
	// goes before the flash, which must not wait long for it.
	inventoryTries   = 3
	inventoryTimeout = 10 * time.Second
)

// inventoryPause is the wait between tries (a variable for tests).
var inventoryPause = 2 * time.Second

// sendInventory collects the inventory under root and sends it with
// send, trying inventoryTries times unless the server answers 4xx (a
// refusal, or an inventory out of bounds: trying again changes
// nothing). It returns what it collected and the last error.
func sendInventory(ctx context.Context, send func(context.Context, fleet.Inventory) error, root string) (fleet.Inventory, error) {
	inv := collectInventory(root)
	var err error
	for try := 0; try < inventoryTries; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return inv, ctx.Err()
			case <-time.After(inventoryPause):
			}
		}
		cctx, cancel := context.WithTimeout(ctx, inventoryTimeout)
		err = send(cctx, inv)
		cancel()
		if code := client.StatusCode(err); err == nil || code >= 400 && code < 500 {
			return inv, err
		}
	}
	return inv, err
}
