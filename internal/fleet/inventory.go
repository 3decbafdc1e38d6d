package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Inventory is a machine's hardware as its live env saw it (POST
// /pxe/{mac}/inventory; docs/reference.md, "Inventory"): bty-web keeps
// the latest on the record (Machine.Inventory) and derives labels from
// it (DerivedLabels).
type Inventory struct {
	// Firmware is "uefi" or "bios".
	Firmware string `json:"firmware"`
	// CPUModel is /proc/cpuinfo's first "model name"; CPUs the number of
	// logical CPUs.
	CPUModel string `json:"cpu_model"`
	CPUs     int    `json:"cpus"`
	// MemoryBytes is /proc/meminfo's MemTotal.
	MemoryBytes int64 `json:"memory_bytes"`
	// NICs are the physical network interfaces; Disks the block devices
	// a flash could target; PCI every PCI function.
	NICs  []NIC           `json:"nics"`
	Disks []InventoryDisk `json:"disks"`
	PCI   []PCIDevice     `json:"pci"`
}

// NIC is one network interface of an Inventory.
type NIC struct {
	MAC  MAC    `json:"mac"`
	Name string `json:"name"`
	// SpeedMbps is the link speed (0 when unknown or down); Link whether
	// it has carrier.
	SpeedMbps int  `json:"speed_mbps"`
	Link      bool `json:"link"`
}

// InventoryDisk is one disk of an Inventory.
type InventoryDisk struct {
	Name      string `json:"name"`
	Model     string `json:"model"`
	Serial    string `json:"serial"`
	SizeBytes int64  `json:"size_bytes"`
	// Transport is one of DiskTransports ("" when unknown).
	Transport string `json:"transport"`
}

// PCIDevice is one PCI function of an Inventory: its address, its IDs
// in hex as sysfs writes them (vendor "0x10de", class "0x030000"), and
// Kind, "gpu" or "nvme" for the ones bty names (PCIKind).
type PCIDevice struct {
	Address string `json:"address"`
	Vendor  string `json:"vendor"`
	Device  string `json:"device"`
	Class   string `json:"class"`
	Kind    string `json:"kind"`
}

// DiskTransports are the transports an InventoryDisk names.
var DiskTransports = []string{"nvme", "sata", "scsi", "virtio", "usb", "mmc"}

// The bounds of an inventory bty-web accepts (docs/reference.md,
// "Inventory"): far above any real machine, low enough that a record
// stays small.
const (
	MaxInventoryBytes = 256 << 10
	MaxInventoryNICs  = 64
	MaxInventoryDisks = 256
	MaxInventoryPCI   = 1024
	// MaxInventoryText bounds a model, serial or name, in bytes.
	MaxInventoryText = 128
)

// PCIKind names a PCI class bty derives labels from: "gpu" for a
// display controller (class 0x03xxxx), "nvme" for an NVMe controller
// (0x010802), "" otherwise.
func PCIKind(class string) string {
	switch {
	case strings.HasPrefix(class, "0x03") && len(class) == 8:
		return "gpu"
	case class == "0x010802":
		return "nvme"
	}
	return ""
}

// Check reports the first thing wrong with inv as a *ValidationError
// (nil when it is good): counts over the bounds, text that is too long
// or not one line of printable text, negative figures, a malformed PCI
// ID, an unknown firmware or transport, a NIC listed twice. The live
// env's own collector never sends such an inventory; anyone else on the
// open route gets a 400 saying which field.
func (inv Inventory) Check() error {
	bad := func(field, format string, args ...any) error {
		return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case inv.Firmware != "uefi" && inv.Firmware != "bios" && inv.Firmware != "":
		return bad("firmware", "%q: want uefi, bios or empty", truncate(inv.Firmware, 32))
	case inv.CPUs < 0 || inv.CPUs > 1<<16:
		return bad("cpus", "%d: want 0 to 65536", inv.CPUs)
	case inv.MemoryBytes < 0:
		return bad("memory_bytes", "must not be negative")
	case len(inv.NICs) > MaxInventoryNICs:
		return bad("nics", "%d NICs; at most %d are taken", len(inv.NICs), MaxInventoryNICs)
	case len(inv.Disks) > MaxInventoryDisks:
		return bad("disks", "%d disks; at most %d are taken", len(inv.Disks), MaxInventoryDisks)
	case len(inv.PCI) > MaxInventoryPCI:
		return bad("pci", "%d PCI devices; at most %d are taken", len(inv.PCI), MaxInventoryPCI)
	}
	if err := checkText("cpu_model", inv.CPUModel, 256); err != nil {
		return err
	}
	seen := map[MAC]bool{}
	for i, n := range inv.NICs {
		field := fmt.Sprintf("nics[%d]", i)
		switch {
		case n.MAC.IsZero():
			return bad(field+".mac", "missing: give the interface's MAC (aa:bb:cc:dd:ee:ff)")
		case seen[n.MAC]:
			return bad(field+".mac", "%s is listed twice", n.MAC)
		case n.SpeedMbps < 0 || n.SpeedMbps > 10_000_000:
			return bad(field+".speed_mbps", "%d: want 0 (unknown) to 10000000", n.SpeedMbps)
		}
		seen[n.MAC] = true
		if err := checkText(field+".name", n.Name, 64); err != nil {
			return err
		}
	}
	for i, d := range inv.Disks {
		field := fmt.Sprintf("disks[%d]", i)
		if d.SizeBytes < 0 {
			return bad(field+".size_bytes", "must not be negative")
		}
		if d.Transport != "" && !slices.Contains(DiskTransports, d.Transport) {
			return bad(field+".transport", "%q: want one of %s, or empty", truncate(d.Transport, 32), strings.Join(DiskTransports, ", "))
		}
		for _, f := range []struct{ name, v string }{{"name", d.Name}, {"model", d.Model}, {"serial", d.Serial}} {
			if err := checkText(field+"."+f.name, f.v, MaxInventoryText); err != nil {
				return err
			}
		}
	}
	for i, p := range inv.PCI {
		field := fmt.Sprintf("pci[%d]", i)
		if err := checkText(field+".address", p.Address, 32); err != nil {
			return err
		}
		for _, f := range []struct {
			name, v string
			digits  int
		}{{"vendor", p.Vendor, 4}, {"device", p.Device, 4}, {"class", p.Class, 6}} {
			if !hexID(f.v, f.digits) {
				return bad(field+"."+f.name, "%q: want 0x and %d lowercase hex digits, as sysfs writes it", truncate(f.v, 32), f.digits)
			}
		}
		if p.Kind != PCIKind(p.Class) {
			return bad(field+".kind", "%q: class %s is kind %q", truncate(p.Kind, 32), p.Class, PCIKind(p.Class))
		}
	}
	return nil
}

// checkText refuses s when longer than limit bytes or not one line of
// printable UTF-8.
func checkText(field, s string, limit int) error {
	if len(s) > limit {
		return &ValidationError{Field: field, Msg: fmt.Sprintf("is %d bytes; the limit is %d", len(s), limit)}
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return &ValidationError{Field: field, Msg: fmt.Sprintf("%q: must be printable text on one line", truncate(s, 64))}
	}
	return nil
}

// hexID reports whether s is "0x" and n lowercase hex digits.
func hexID(s string, n int) bool {
	h, ok := strings.CutPrefix(s, "0x")
	return ok && len(h) == n && strings.Trim(h, "0123456789abcdef") == ""
}

// gpuVendors are short names of GPU vendors by PCI vendor ID, for the
// gpu label; others are named by their IDs. bmcVideo are the vendors
// of the video a BMC adds to most servers (ASPEED, Matrox G200): named
// only when no other GPU is there.
var (
	gpuVendors = map[string]string{"0x10de": "nvidia", "0x1002": "amd", "0x8086": "intel", "0x1a03": "aspeed",
		"0x102b": "matrox", "0x1234": "bochs", "0x1af4": "virtio", "0x15ad": "vmware", "0x1b36": "qxl"}
	bmcVideo = map[string]bool{"0x1a03": true, "0x102b": true}
)

// DerivedLabels are the labels bty-web derives from the inventory
// (docs/reference.md, "Inventory"), nil for a nil inventory:
//
//   - firmware=uefi|bios;
//   - cpus=N (logical CPUs) and memory-gib=N (MemTotal, rounded to the
//     nearest GiB: the kernel keeps some of the installed memory);
//   - nvme=N, the NVMe disks, when there is one or more;
//   - gpu=NAME when there is a display controller: the vendor's short
//     name (nvidia, amd, intel, ...) or, for a vendor bty does not
//     name, pci-VENDOR-DEVICE in hex (pci-1eb1-0001); a BMC's video
//     (ASPEED, Matrox) only when there is no other GPU.
//
// A machine's own labels (Machine.Labels) win over these on a key
// clash (Machine.AllLabels).
func (inv *Inventory) DerivedLabels() Labels {
	if inv == nil {
		return nil
	}
	l := Labels{}
	if inv.Firmware != "" {
		l["firmware"] = inv.Firmware
	}
	if inv.CPUs > 0 {
		l["cpus"] = strconv.Itoa(inv.CPUs)
	}
	if inv.MemoryBytes > 0 {
		l["memory-gib"] = strconv.FormatInt((inv.MemoryBytes+1<<29)>>30, 10)
	}
	nvme := 0
	for _, d := range inv.Disks {
		if d.Transport == "nvme" {
			nvme++
		}
	}
	if nvme > 0 {
		l["nvme"] = strconv.Itoa(nvme)
	}
	var gpu *PCIDevice
	for i, p := range inv.PCI {
		if p.Kind != "gpu" {
			continue
		}
		if gpu == nil || bmcVideo[gpu.Vendor] && !bmcVideo[p.Vendor] {
			gpu = &inv.PCI[i]
		}
	}
	if gpu != nil {
		name, ok := gpuVendors[gpu.Vendor]
		if !ok {
			name = "pci-" + strings.TrimPrefix(gpu.Vendor, "0x") + "-" + strings.TrimPrefix(gpu.Device, "0x")
		}
		l["gpu"] = name
	}
	if len(l) == 0 {
		return nil
	}
	return l
}

// AllLabels are the labels a selector matches: the derived ones
// (Machine.DerivedLabels) with the machine's own (Machine.Labels) over
// them, the operator's winning on a key clash. Nil when none.
func (m Machine) AllLabels() Labels {
	if len(m.DerivedLabels) == 0 {
		return m.Labels
	}
	out := maps.Clone(m.DerivedLabels)
	maps.Copy(out, m.Labels)
	return out
}

// Inventoried is m with inventory inv recorded at now: the record's
// inventory, its time and its derived labels.
func (m Machine) Inventoried(inv Inventory, now time.Time) Machine {
	at := now.UTC()
	m.Inventory, m.InventoryAt = &inv, &at
	m.DerivedLabels = inv.DerivedLabels()
	m.UpdatedAt = at
	return m
}

// DecodeInventory reads an inventory report (the body of POST
// /pxe/{mac}/inventory) and checks it (Check): at most
// MaxInventoryBytes, one JSON object; fields it does not know are
// ignored, so a newer live env can report to an older server. Errors
// say what is wrong; a bad field is a *ValidationError.
func DecodeInventory(b []byte) (Inventory, error) {
	if len(b) > MaxInventoryBytes {
		return Inventory{}, &ValidationError{Field: "inventory", Msg: fmt.Sprintf("is %d bytes; the limit is %d", len(b), MaxInventoryBytes)}
	}
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return Inventory{}, errors.New("send the inventory as one JSON object")
	}
	var inv Inventory
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&inv); err != nil {
		return Inventory{}, fmt.Errorf("send the inventory as one JSON object: %w", err)
	}
	if dec.More() {
		return Inventory{}, errors.New("send the inventory as one JSON object: more than one JSON value")
	}
	if err := inv.Check(); err != nil {
		return Inventory{}, err
	}
	return inv, nil
}
